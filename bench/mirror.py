"""Mirror speed: archlift against skopeo, oras and buildx imagetools on one corpus, in one run.

    python bench/mirror.py [--images 10] [--layer-mb 24] [--shared-mb 10] [--jobs 8]

The corpus: N two-platform OCI indexes (linux/amd64 + linux/arm64, each with a
BuildKit-style attestation manifest) in a local distribution registry; each
platform manifest has its own random layer plus one runtime layer per
platform shared by every image. Every tool copies the whole corpus into its
own fresh registry on loopback:

- archlift:    ``archlift mirror --to`` (the CLI, start-up included);
- skopeo:      ``skopeo copy --all --preserve-digests``, 4 images at a time;
- oras:        ``oras cp -r``, 4 at a time;
- imagetools:  ``docker buildx imagetools create --tag``, 4 at a time;
- ceiling:     plain parallel monolithic uploads (POST + PUT) of the same unique
               blobs, already in memory, with ``--jobs`` threads: what the target
               registry can take at best.

Then a re-mirror of archlift's up-to-date target and a second run of the
fastest peer into its (equally up-to-date) target. Prints seconds, MB/s
(unique bytes / seconds) and ratios. Nothing here is asserted: timings vary.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from archlift.localenv import LocalRegistry
from archlift.lock import ComponentRelease, ReleaseLock
from archlift.refs import Digest, ImageRef
from archlift.registry import OCI_INDEX, OCI_MANIFEST, RegistryClient

LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG = "application/vnd.oci.image.config.v1+json"
ARCHES = ("amd64", "arm64")


def _desc(media_type: str, data: bytes) -> dict[str, object]:
    return {"mediaType": media_type, "digest": str(Digest.of(data)), "size": len(data)}


def make_corpus(
    client: RegistryClient, reg: LocalRegistry, images: int, layer_mb: int, shared_mb: int, jobs: int
) -> tuple[ReleaseLock, dict[Digest, int]]:
    """Push the corpus; return its lock and every unique blob's size."""
    shared = {arch: os.urandom(shared_mb * 1_000_000) for arch in ARCHES}
    sizes: dict[Digest, int] = {}

    def one(i: int) -> ComponentRelease:
        ref = reg.ref(f"bench/image{i:02d}", "v1")
        entries: list[dict[str, object]] = []
        platforms: dict[str, Digest] = {}
        for arch in ARCHES:
            layer = os.urandom(layer_mb * 1_000_000)
            config = json.dumps({"architecture": arch, "os": "linux", "image": i}).encode()
            for data in (shared[arch], layer, config):
                sizes[client.put_blob(ref, data)] = len(data)
            manifest = json.dumps(
                {
                    "schemaVersion": 2,
                    "mediaType": OCI_MANIFEST,
                    "config": _desc(CONFIG, config),
                    "layers": [_desc(LAYER, shared[arch]), _desc(LAYER, layer)],
                }
            ).encode()
            platforms[f"linux/{arch}"] = client.put_manifest(
                ref.with_digest(Digest.of(manifest)), manifest, OCI_MANIFEST
            )
            entries.append({**_desc(OCI_MANIFEST, manifest), "platform": {"os": "linux", "architecture": arch}})
        statement = json.dumps({"_type": "https://in-toto.io/Statement/v0.1", "image": i}).encode()
        for data in (statement, b"{}"):
            sizes[client.put_blob(ref, data)] = len(data)
        att = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": _desc(CONFIG, b"{}"),
                "layers": [_desc("application/vnd.in-toto+json", statement)],
            }
        ).encode()
        client.put_manifest(ref.with_digest(Digest.of(att)), att, OCI_MANIFEST)
        entries.append(
            {
                **_desc(OCI_MANIFEST, att),
                "platform": {"os": "unknown", "architecture": "unknown"},
                "annotations": {
                    "vnd.docker.reference.type": "attestation-manifest",
                    "vnd.docker.reference.digest": str(platforms["linux/amd64"]),
                },
            }
        )
        index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode()
        digest = client.put_manifest(ref, index, OCI_INDEX)
        return ComponentRelease(f"image{i:02d}", "built", ref.name, digest, platforms, ("v1",))

    with ThreadPoolExecutor(jobs) as pool:
        comps = list(pool.map(one, range(images)))
    return ReleaseLock(components={c.name: c for c in comps}), sizes


def timed(fn: Callable[[], object]) -> float:
    start = time.monotonic()
    fn()
    return time.monotonic() - start


def run(argv: Sequence[str]) -> None:
    subprocess.run(list(argv), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def parallel(commands: list[list[str]], at_once: int) -> None:
    with ThreadPoolExecutor(at_once) as pool:
        for f in [pool.submit(run, c) for c in commands]:
            f.result()


def peers(lock: ReleaseLock, src: LocalRegistry, dst: LocalRegistry) -> dict[str, list[list[str]]]:
    pairs = [
        (f"{c.repository}:v1", f"{dst.host}/{ImageRef.parse(c.repository).repository}:v1")
        for c in lock.components.values()
    ]
    return {
        "skopeo": [
            [
                "skopeo",
                "copy",
                "--all",
                "--preserve-digests",
                "--src-tls-verify=false",
                "--dest-tls-verify=false",
                "-q",
                f"docker://{s}",
                f"docker://{d}",
            ]
            for s, d in pairs
        ],
        "oras": [["oras", "cp", "-r", "--from-plain-http", "--to-plain-http", s, d] for s, d in pairs],
        "imagetools": [["docker", "buildx", "imagetools", "create", "--tag", d, s] for s, d in pairs],
    }


def ceiling(reg: LocalRegistry, blobs: dict[Digest, bytes], jobs: int) -> float:
    """Plain parallel monolithic uploads of in-memory blobs: POST, then PUT ?digest=."""
    import urllib3

    pool = urllib3.PoolManager(maxsize=jobs, retries=False)

    def up(item: tuple[Digest, bytes]) -> None:
        d, data = item
        r = pool.request("POST", f"{reg.url}/v2/ceiling/blobs/uploads/", body=b"")
        loc = r.headers["Location"]
        loc = loc if loc.startswith("http") else reg.url + loc
        sep = "&" if "?" in loc else "?"
        r = pool.request(
            "PUT", f"{loc}{sep}digest={d}", body=data, headers={"Content-Type": "application/octet-stream"}
        )
        assert r.status == 201, r.status

    def all_up() -> None:
        with ThreadPoolExecutor(jobs) as ex:
            list(ex.map(up, sorted(blobs.items(), key=lambda kv: -len(kv[1]))))

    return timed(all_up)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("--images", type=int, default=10)
    ap.add_argument("--layer-mb", type=int, default=24, help="unique layer per platform (MB)")
    ap.add_argument("--shared-mb", type=int, default=10, help="the shared runtime layer per platform (MB)")
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--at-once", type=int, default=4, help="peer copies run at once")
    ap.add_argument("--skip", action="append", default=[], choices=["skopeo", "oras", "imagetools", "ceiling"])
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="archlift-bench-"))
    regs: list[LocalRegistry] = []

    def registry() -> LocalRegistry:
        reg = LocalRegistry(log_level="error").start()
        regs.append(reg)
        return reg

    try:
        client = RegistryClient(max_connections=2 * args.jobs)
        src = registry()
        start = time.monotonic()
        lock, sizes = make_corpus(client, src, args.images, args.layer_mb, args.shared_mb, args.jobs)
        unique = sum(sizes.values())
        mb = unique / 1e6
        print(
            f"corpus: {args.images} two-platform images, {len(sizes)} unique blobs, {mb:.0f} MB unique "
            f"(pushed in {time.monotonic() - start:.1f} s)"
        )
        lock_path = work / "release.json"
        lock.write(lock_path)
        results: dict[str, float] = {}

        dst = registry()
        report = work / "report.json"
        argv = [
            sys.executable,
            "-m",
            "archlift",
            "mirror",
            "--to",
            dst.host,
            "--lock",
            str(lock_path),
            "--jobs",
            str(args.jobs),
            "--report",
            str(report),
        ]
        results["archlift"] = timed(lambda: run(argv))
        sent = json.loads(report.read_text())["bytes_sent"]
        results["archlift re-mirror"] = timed(lambda: run(argv))
        peer_targets: dict[str, LocalRegistry] = {}
        for name in ("skopeo", "oras", "imagetools"):
            if name in args.skip:
                continue
            peer_targets[name] = registry()
            cmds = peers(lock, src, peer_targets[name])[name]
            try:
                results[name] = timed(functools.partial(parallel, cmds, args.at_once))
            except subprocess.CalledProcessError as e:
                print(f"{name} failed: {e.stderr.decode(errors='replace')[-400:]}")
                continue
            heads = [
                client.head_manifest(ImageRef(peer_targets[name].host, ImageRef.parse(c.repository).repository, "v1"))
                for c in lock.components.values()
            ]
            same = all(
                h is not None and h.digest == c.index_digest
                for h, c in zip(heads, lock.components.values(), strict=True)
            )
            print(f"  {name}: digests preserved: {same}")
        if "ceiling" not in args.skip:
            repo_of: dict[Digest, ImageRef] = {}
            for c in lock.components.values():
                idx = client.get_manifest(ImageRef.parse(c.repository).with_digest(c.index_digest))
                for dsc in idx.descriptors():
                    m = client.get_manifest(ImageRef.parse(c.repository).with_digest(dsc.digest))
                    for b in m.descriptors():
                        repo_of[b.digest] = ImageRef.parse(c.repository)
            blobs = {d: client.get_blob(repo_of[d], d) for d in sizes}
            results["ceiling"] = ceiling(registry(), blobs, args.jobs)
            del blobs
        peers_done = {k: v for k, v in results.items() if k in ("skopeo", "oras", "imagetools")}
        if peers_done:
            fastest = min(peers_done, key=lambda k: peers_done[k])
            cmds = peers(lock, src, peer_targets[fastest])[fastest]
            results[f"{fastest} again"] = timed(lambda: parallel(cmds, args.at_once))
        print(f"\n{'tool':<22}{'seconds':>9}{'MB/s':>9}")
        for name, secs in results.items():
            rate = f"{mb / secs:9.1f}" if "again" not in name and "re-mirror" not in name else f"{'-':>9}"
            print(f"{name:<22}{secs:9.2f}{rate}")
        a = results["archlift"]
        print(
            f"\narchlift sent {sent / 1e6:.1f} MB for {mb:.1f} MB of unique blobs "
            f"({'equal' if sent == unique else 'NOT equal'})"
        )
        if peers_done:
            print(f"archlift vs fastest peer ({fastest}): {peers_done[fastest] / a:.2f}x faster (goal >= 1.4)")
            ours, theirs = results["archlift re-mirror"], results[f"{fastest} again"]
            print(
                f"re-mirror: archlift {ours:.2f} s vs {fastest} again {theirs:.2f} s ({theirs / ours:.2f}x; goal >= 1)"
            )
        if "ceiling" in results:
            print(f"archlift vs upload ceiling: {results['ceiling'] / a:.2f} of the ceiling's speed (goal >= 0.8)")
        return 0
    finally:
        for reg in regs:
            reg.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
