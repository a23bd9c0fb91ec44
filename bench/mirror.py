"""Mirror speed: archlift against skopeo, oras and buildx imagetools on two corpora, in one run.

    python bench/mirror.py [--images 10] [--layer-mb 22] [--shared-mb 30] [--small-images 200] [--jobs 4]

The corpora: two-platform OCI indexes (linux/amd64 + linux/arm64, each with a
BuildKit-style attestation manifest) in a local distribution registry; each
platform manifest has its own random layer plus one runtime layer per
platform shared by every image of the corpus.

- the large corpus: 10 images, ~500 MB of unique blobs (22 MB own layers, 30 MB
  shared ones): bandwidth and the target registry's ingest dominate;
- the small corpus: 200 images of a few kB each: the cost of each request (and of
  each process a peer starts per image) dominates.

Every tool copies the whole corpus into its own fresh registry on loopback:

- archlift:    ``archlift mirror --to`` (the CLI, start-up included);
- skopeo:      ``skopeo copy --all --preserve-digests``, 4 images at a time;
- oras:        ``oras cp -r``, 4 at a time;
- imagetools:  ``docker buildx imagetools create --tag``, 4 at a time;
- upload ceiling (large corpus): plain parallel monolithic uploads (POST + PUT)
               of every image's blobs as they are, into each image's repository
               (the shared layers again for every image: the bytes the peers
               send), already in memory, with ``--jobs`` threads, no HEAD, no
               mount, no check: the issue's ceiling (it calibrates it at ~220
               MB/s against oras's ~147 MB/s on this machine kind);
- unique ceiling: the same, for the unique blobs only, each once: what the
               target registry can take at best for the bytes a mirror must
               send (a stricter bar than the issue's);
- copy ceiling: the unique uploads with each body streamed from a GET on the
               source: a plain parallel copy, no HEAD, no mount, no
               verification (what any mirror tool must at least do);
- request ceiling (small corpus): each image copied with only the requests no
               mirror can skip, ``--jobs`` images at a time: GET of its
               manifests and blobs on the source; POST + PUT of each blob
               (a blob that several images share: sent once, mounted into
               the other repositories, as the bench knows which they are);
               PUT of its manifests, children first, the index with its tag.
               No HEAD, no check of what the target has, no verification:
               where the requests themselves cost more than the bytes, the
               most any mirror can do on these registries and cores.

The ceilings use urllib3 directly: they measure the registry, not a client.
Each tool then runs again into its now up-to-date target (the re-mirror
cost). archlift runs from compiled bytecode, as installed (see
``bytecode_cache``). Tools run interleaved, ``--rounds`` times, each into a
fresh registry; the best time counts (the host may be busy). Prints seconds,
MB/s (unique bytes / seconds), the bytes each tool uploaded (from the target's
access log), whether digests were preserved, and the ratios against the
fastest peer of the same run, with the goals: the large corpus at least 1.5x
as fast as ``oras cp -r`` (4 at a time), the small one at least 2x as fast as
the fastest peer cold and 5x re-mirrored. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' registries (support/)
from support.registry import LocalRegistry

from archlift.lock import ComponentRelease, ReleaseLock
from archlift.oci import OCI_INDEX, OCI_MANIFEST, RegistryClient
from archlift.oci.model import ACCEPT_MANIFESTS
from archlift.refs import Digest, ImageRef

if TYPE_CHECKING:
    import urllib3

LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG = "application/vnd.oci.image.config.v1+json"
ARCHES = ("amd64", "arm64")
CEILINGS = ("upload ceiling", "unique ceiling", "copy ceiling", "request ceiling")


def _desc(media_type: str, data: bytes) -> dict[str, object]:
    return {"mediaType": media_type, "digest": str(Digest.of(data)), "size": len(data)}


@dataclass(frozen=True)
class Corpus:
    name: str
    images: int
    layer: int  # bytes of each platform's own layer
    shared: int  # bytes of each platform's shared runtime layer
    prefix: str  # repositories: <prefix>/imageNNN
    ceilings: bool


def make_corpus(
    client: RegistryClient, reg: LocalRegistry, corpus: Corpus, jobs: int
) -> tuple[ReleaseLock, dict[Digest, int]]:
    """Push the corpus; return its lock and every unique blob's size."""
    shared = {arch: os.urandom(corpus.shared) for arch in ARCHES}
    sizes: dict[Digest, int] = {}

    def one(i: int) -> ComponentRelease:
        ref = reg.ref(f"{corpus.prefix}/image{i:03d}", "v1")
        entries: list[dict[str, object]] = []
        platforms: dict[str, Digest] = {}
        for arch in ARCHES:
            layer = os.urandom(corpus.layer)
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
        return ComponentRelease(f"image{i:03d}", "built", ref.name, digest, platforms, ("v1",))

    with ThreadPoolExecutor(jobs) as pool:
        comps = list(pool.map(one, range(corpus.images)))
    return ReleaseLock(components={c.name: c for c in comps}), sizes


def timed(fn: Callable[[], object]) -> float:
    start = time.monotonic()
    fn()
    return time.monotonic() - start


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu(children: bool) -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def measured(fn: Callable[[], object], src: LocalRegistry, dst: LocalRegistry, children: bool) -> tuple[float, ...]:
    """Seconds, and the CPU seconds of the copying tool, the source registry and the target registry."""
    assert src.pid and dst.pid
    before = (own_cpu(children), process_cpu(src.pid), process_cpu(dst.pid))
    seconds = timed(fn)
    after = (own_cpu(children), process_cpu(src.pid), process_cpu(dst.pid))
    return (seconds, *(a - b for a, b in zip(after, before, strict=True)))


ENV = dict(os.environ)


def run(argv: Sequence[str]) -> None:
    subprocess.run(list(argv), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)


def bytecode_cache(directory: Path) -> None:
    """Let the archlift runs use compiled bytecode, as a pip install does. (This host sets
    PYTHONDONTWRITEBYTECODE, which makes every run compile every module again.) The cache
    lives in ``directory``, not in the source tree; one warm-up run fills it."""
    ENV.pop("PYTHONDONTWRITEBYTECODE", None)
    ENV["PYTHONPYCACHEPREFIX"] = str(directory)
    run([sys.executable, "-c", "import archlift.cli, archlift.commands.mirror, archlift.steps.mirror, urllib3"])


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


def monolithic_upload(
    pool: urllib3.PoolManager,
    reg: LocalRegistry,
    repository: str,
    digest: str,
    body: bytes | Iterable[bytes],
    size: int,
) -> None:
    """One blob into ``repository`` of ``reg``: POST opens the session, PUT ?digest= brings the whole
    ``body`` (``size`` bytes), no check of any kind."""
    r = pool.request("POST", f"{reg.url}/v2/{repository}/blobs/uploads/", body=b"")
    loc = r.headers["Location"]
    loc = loc if loc.startswith("http") else reg.url + loc
    sep = "&" if "?" in loc else "?"
    headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
    r = pool.request("PUT", f"{loc}{sep}digest={digest}", body=body, headers=headers)
    assert r.status == 201, r.status


def ceiling(
    reg: LocalRegistry,
    uploads: list[tuple[str, Digest]],
    blobs: dict[Digest, bytes],
    jobs: int,
    src: LocalRegistry | None = None,
) -> Callable[[], None]:
    """Plain parallel monolithic uploads (POST, then PUT ?digest=) of ``uploads`` (repository,
    blob), in that order, with ``jobs`` threads, no checks of any kind: the bodies come from
    memory, or, with ``src``, are streamed straight from a GET there (a plain copy).
    Returns the work, to be timed."""
    import urllib3

    pool = urllib3.PoolManager(maxsize=2 * jobs, retries=False)
    repo_of = {d: "bench/image000" for d in blobs}
    if src is not None:
        for e in src.access_log():  # any repository the blob was pushed to
            if e.method == "PUT" and "digest=" in e.path:
                repo_of[Digest(e.path.split("digest=", 1)[1].split("&", 1)[0].replace("%3A", ":"))] = e.path.split(
                    "/v2/", 1
                )[1].split("/blobs/", 1)[0]

    def up(item: tuple[str, Digest]) -> None:
        repository, d = item
        size = len(blobs[d])
        if src is None:
            monolithic_upload(pool, reg, repository, str(d), blobs[d], size)
        else:
            get = pool.request("GET", f"{src.url}/v2/{repo_of[d]}/blobs/{d}", preload_content=False)
            monolithic_upload(pool, reg, repository, str(d), get.stream(1 << 20), size)
            get.release_conn()

    def all_up() -> None:
        with ThreadPoolExecutor(jobs) as ex:
            list(ex.map(up, uploads))

    return all_up


def request_ceiling(
    src: LocalRegistry, dst: LocalRegistry, lock: ReleaseLock, shared: set[str], jobs: int
) -> Callable[[], None]:
    """The small corpus's ceiling (see the module's text): every image of ``lock`` copied from
    ``src`` to ``dst`` with only the requests a copy cannot do without; ``shared``: the digests
    that several images hold (the first image sends them, the others mount them).
    Returns the work, to be timed."""
    import urllib3

    pool = urllib3.PoolManager(maxsize=2 * jobs, retries=False)
    repos = [ImageRef.parse(c.repository).repository for c in lock.components.values()]
    digests = [c.index_digest for c in lock.components.values()]

    def get(repo: str, kind: str, ref: str) -> bytes:
        r = pool.request("GET", f"{src.url}/v2/{repo}/{kind}/{ref}", headers={"Accept": ACCEPT_MANIFESTS})
        assert r.status == 200, (kind, r.status)
        return r.data

    def put(url: str, body: bytes, content_type: str) -> None:
        r = pool.request("PUT", url, body=body, headers={"Content-Type": content_type})
        assert r.status == 201, (url, r.status)

    def image(n: int) -> None:
        repo, target = repos[n], f"{dst.url}/v2/{repos[n]}"
        index = get(repo, "manifests", str(digests[n]))
        for child in json.loads(index)["manifests"]:
            manifest = get(repo, "manifests", child["digest"])
            doc = json.loads(manifest)
            for blob in (doc["config"], *doc["layers"]):
                d = blob["digest"]
                if d in shared and n > 0:
                    r = pool.request("POST", f"{target}/blobs/uploads/?mount={d}&from={repos[0]}", body=b"")
                    assert r.status == 201, ("mount", r.status)
                    continue
                data = get(repo, "blobs", d)
                monolithic_upload(pool, dst, repo, d, data, len(data))
            put(f"{target}/manifests/{child['digest']}", manifest, child["mediaType"])
        put(f"{target}/manifests/v1", index, OCI_INDEX)

    def all_images() -> None:
        image(0)  # it brings the shared blobs that the others mount
        with ThreadPoolExecutor(jobs) as ex:
            list(ex.map(image, range(1, len(repos))))

    return all_images


def corpus_blobs(
    client: RegistryClient, lock: ReleaseLock, *, bodies: bool = True
) -> tuple[dict[Digest, bytes], list[tuple[str, Digest]]]:
    """Every unique blob's bytes (none without ``bodies``), and every image's blobs as (repository,
    digest), image by image."""
    blobs: dict[Digest, bytes] = {}
    per_image: list[tuple[str, Digest]] = []
    for c in lock.components.values():
        repo = ImageRef.parse(c.repository)
        mine: set[Digest] = set()
        for dsc in client.get_manifest(repo.with_digest(c.index_digest)).descriptors():
            for b in client.get_manifest(repo.with_digest(dsc.digest)).descriptors():
                if bodies and b.digest not in blobs:
                    blobs[b.digest] = client.get_blob(repo, b)
                if b.digest not in mine:
                    mine.add(b.digest)
                    per_image.append((repo.repository, b.digest))
    return blobs, per_image


def uploaded_bytes(reg: LocalRegistry, sizes: dict[Digest, int]) -> int:
    """Bytes of the blob uploads the registry completed (from its access log)."""
    total = 0
    for e in reg.access_log():
        if e.method == "PUT" and e.status == 201 and "/blobs/uploads/" in e.path and "digest=" in e.path:
            digest = e.path.split("digest=", 1)[1].split("&", 1)[0].replace("%3A", ":")
            total += sizes.get(Digest(digest), 0)
    return total


def digests_preserved(client: RegistryClient, lock: ReleaseLock, reg: LocalRegistry) -> bool:
    for c in lock.components.values():
        head = client.head_manifest(ImageRef(reg.host, ImageRef.parse(c.repository).repository, "v1"))
        if head is None or head.digest != c.index_digest:
            return False
    return True


def startup(work: Path) -> tuple[float, float]:
    """Seconds (best of 5) of an empty interpreter, and of importing what ``archlift mirror`` imports."""

    def best(code: str) -> float:
        return min(timed(functools.partial(run, [sys.executable, "-c", code])) for _ in range(5))

    return best("pass"), best("import archlift.cli, archlift.commands.mirror, archlift.steps.mirror, urllib3")


def run_corpus(
    corpus: Corpus, args: argparse.Namespace, src: LocalRegistry, client: RegistryClient, work: Path
) -> None:
    start = time.monotonic()
    lock, sizes = make_corpus(client, src, corpus, args.jobs)
    unique = sum(sizes.values())
    print(
        f"\n== {corpus.name} corpus: {corpus.images} two-platform images, {len(sizes)} unique blobs, "
        f"{unique / 1e6:.1f} MB unique (own layers {corpus.layer / 1e6:g} MB, shared {corpus.shared / 1e6:g} MB "
        f"per platform); pushed in {time.monotonic() - start:.1f} s",
        flush=True,
    )
    lock_path = work / f"{corpus.prefix}-release.json"
    lock.write(lock_path)
    ceilings = [t for t in CEILINGS if t not in args.skip and (t == "request ceiling") != corpus.ceilings]
    blobs, per_image = corpus_blobs(client, lock, bodies=corpus.ceilings) if ceilings else ({}, [])
    unique_uploads = [("ceiling", d) for d in sorted(blobs, key=lambda d: -len(blobs[d]))]
    uploads = {"upload ceiling": per_image, "unique ceiling": unique_uploads, "copy ceiling": unique_uploads}
    images_of: dict[Digest, set[str]] = {}
    for repository, d in per_image:
        images_of.setdefault(d, set()).add(repository)
    shared = {str(d) for d, repositories in images_of.items() if len(repositories) > 1}
    tools = ["archlift"] + [t for t in ("skopeo", "oras", "imagetools") if t not in args.skip] + ceilings
    runs: dict[str, list[tuple[float, ...]]] = {}  # tool -> (seconds, CPU s: tool, source, target) per run
    sent: dict[str, int] = {}
    preserved: dict[str, bool] = {}
    for _round in range(args.rounds):
        for tool in list(tools):
            dst = LocalRegistry(log_level="error").start()
            try:
                if tool == "archlift":
                    report = work / "report.json"
                    argv = [
                        sys.executable, "-m", "archlift", "mirror", "--to", dst.host, "--lock", str(lock_path),
                        "--jobs", str(args.jobs), "--no-artifacts", "--report", str(report),
                    ]  # fmt: skip
                    runs.setdefault(tool, []).append(measured(functools.partial(run, argv), src, dst, True))
                    again = measured(functools.partial(run, argv), src, dst, True)
                    runs.setdefault("archlift again", []).append(again)
                elif tool == "request ceiling":
                    work_fn = request_ceiling(src, dst, lock, shared, args.jobs)
                    runs.setdefault(tool, []).append(measured(work_fn, src, dst, False))
                elif tool in CEILINGS:
                    copy_from = src if tool == "copy ceiling" else None
                    work_fn = ceiling(dst, uploads[tool], blobs, args.jobs, copy_from)
                    runs.setdefault(tool, []).append(measured(work_fn, src, dst, False))
                else:
                    cmds = peers(lock, src, dst)[tool]
                    try:
                        copy = measured(functools.partial(parallel, cmds, args.at_once), src, dst, True)
                    except subprocess.CalledProcessError as e:
                        print(f"{tool} failed: {e.stderr.decode(errors='replace')[-400:]}")
                        tools.remove(tool)
                        continue
                    runs.setdefault(tool, []).append(copy)
                    again = measured(functools.partial(parallel, cmds, args.at_once), src, dst, True)
                    runs.setdefault(f"{tool} again", []).append(again)
                sent[tool] = uploaded_bytes(dst, sizes)
                if "ceiling" not in tool:
                    preserved[tool] = digests_preserved(client, lock, dst)
            finally:
                dst.stop()
            print(f"  {tool}: {', '.join(f'{r[0]:.2f}' for r in runs.get(tool, []))} s", flush=True)
    report_runs(corpus, runs, sent, preserved, unique, work)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("--images", type=int, default=10, help="images in the large corpus")
    ap.add_argument("--layer-mb", type=int, default=22, help="large corpus: unique layer per platform (MB)")
    ap.add_argument("--shared-mb", type=int, default=30, help="large corpus: the shared layer per platform (MB)")
    ap.add_argument("--small-images", type=int, default=200, help="images in the small corpus (0: skip it)")
    ap.add_argument("--small-layer-kb", type=int, default=4, help="small corpus: unique layer per platform (kB)")
    ap.add_argument("--small-shared-kb", type=int, default=16, help="small corpus: shared layer per platform (kB)")
    ap.add_argument("--jobs", type=int, default=4, help="archlift --jobs, and the ceiling's threads")
    ap.add_argument("--at-once", type=int, default=4, help="peer copies run at once")
    ap.add_argument("--rounds", type=int, default=3, help="runs per tool (interleaved); the best counts")
    ap.add_argument("--skip", action="append", default=[], choices=["skopeo", "oras", "imagetools", *CEILINGS])
    ap.add_argument("--only", choices=["large", "small"], help="run one corpus only")
    args = ap.parse_args()
    corpora = [
        Corpus("large", args.images, args.layer_mb * 1_000_000, args.shared_mb * 1_000_000, "bench", True),
        Corpus("small", args.small_images, args.small_layer_kb * 1000, args.small_shared_kb * 1000, "small", False),
    ]
    corpora = [c for c in corpora if c.images > 0 and args.only in (None, c.name)]
    work = Path(tempfile.mkdtemp(prefix="archlift-bench-"))
    src = LocalRegistry(log_level="error").start()
    try:
        client = RegistryClient(max_connections=2 * args.jobs)
        bytecode_cache(work / "pycache")
        for corpus in corpora:
            run_corpus(corpus, args, src, client, work)
        return 0
    finally:
        src.stop()
        shutil.rmtree(work, ignore_errors=True)


def report_runs(
    corpus: Corpus,
    runs: dict[str, list[tuple[float, ...]]],
    sent: dict[str, int],
    preserved: dict[str, bool],
    unique: int,
    work: Path,
) -> None:
    mb = unique / 1e6
    times = {k: [r[0] for r in v] for k, v in runs.items()}
    bestrun = {k: min(v) for k, v in runs.items()}  # by seconds
    best = {k: r[0] for k, r in bestrun.items()}
    print(f"\n{corpus.name} corpus ({corpus.images} images, {mb:.1f} MB unique)")
    print(f"{'tool':<16}{'best s':>7}{'MB/s':>7}{'MB sent':>8}  digests  CPU s: tool/source/target  (all runs, s)")
    for name in sorted(best, key=lambda k: (k.replace(" again", ""), k)):
        copy = not name.endswith(" again")
        rate = f"{mb / best[name]:7.1f}" if copy else f"{'-':>7}"
        sent_mb = f"{sent[name] / 1e6:8.1f}" if copy and name in sent else f"{'-':>8}"
        kept = {True: "same", False: "CHANGED"}.get(preserved.get(name, True) if copy else True, "")
        kept = kept if copy and "ceiling" not in name else ""
        cpu = "/".join(f"{c:.2f}" for c in bestrun[name][1:])
        all_runs = ", ".join(f"{t:.2f}" for t in times[name])
        print(f"{name:<16}{best[name]:7.2f}{rate}{sent_mb}  {kept:<7}  {cpu:<24}  ({all_runs})")
    a = best["archlift"]
    print(
        f"archlift uploaded {sent['archlift'] / 1e6:.1f} MB for {mb:.1f} MB of unique blobs "
        f"({'equal' if sent['archlift'] == unique else 'NOT equal'})"
    )
    peer_best = {k: best[k] for k in ("skopeo", "oras", "imagetools") if k in best}
    if peer_best:
        fastest = min(peer_best, key=lambda k: peer_best[k])
        cold_goal, again_goal = (1.5, None) if corpus.ceilings else (2.0, 5.0)
        line = f"cold: archlift is {peer_best[fastest] / a:.2f}x as fast as the fastest peer ({fastest})"
        if corpus.ceilings and "oras" in best:
            line += f"; {best['oras'] / a:.2f}x as fast as oras cp -r, 4 at a time (goal >= {cold_goal})"
        else:
            line += f" (goal >= {cold_goal})"
        print(line)
        again = min(peer_best, key=lambda k: best[f"{k} again"])  # the fastest peer at this, whichever
        ours, theirs = best["archlift again"], best[f"{again} again"]
        goal = f"goal >= {again_goal}" if again_goal else "no goal"
        print(
            f"re-mirror of an up-to-date target: archlift {ours:.2f} s, fastest peer ({again}) {theirs:.2f} s "
            f"({theirs / ours:.2f}x; {goal})"
        )
    if not corpus.ceilings:
        empty, imports = startup(work)
        print(
            f"archlift's re-mirror of the {corpus.name} corpus takes {best['archlift again']:.2f} s, of which "
            f"~{imports:.2f} s is start-up (an empty interpreter {empty:.2f} s; importing what mirror needs "
            f"{imports - empty:.2f} s more)"
        )
    if "upload ceiling" in best:
        print(
            f"archlift reaches {best['upload ceiling'] / a:.2f} of the plain upload ceiling "
            f"(every image's blobs as they are: {mb / best['upload ceiling']:.0f} MB/s)"
        )
    if "unique ceiling" in best:
        print(
            f"archlift reaches {best['unique ceiling'] / a:.2f} of the unique-blob upload ceiling "
            f"(each unique blob once, no checks: {mb / best['unique ceiling']:.0f} MB/s; stricter; no goal)"
        )
    if "copy ceiling" in best:
        print(f"archlift reaches {best['copy ceiling'] / a:.2f} of the plain copy ceiling (GET -> PUT, no checks)")
    if "request ceiling" in best and peer_best:
        ceiling_s = best["request ceiling"]
        print(
            f"archlift reaches {ceiling_s / a:.2f} of the request ceiling (only the requests no mirror can skip, "
            f"no checks: {ceiling_s:.2f} s), which is itself {peer_best[fastest] / ceiling_s:.2f}x as fast as the "
            f"fastest peer: the most any mirror can be here against these registries on {os.cpu_count()} cores"
        )
    if "unique ceiling" in bestrun:
        tool_cpu, _, target_cpu = bestrun["archlift"][1:]
        plain = bestrun["unique ceiling"][3]
        print(
            f"CPU: the target registry spends {plain:.2f} s just to take the unique blobs "
            f"({target_cpu:.2f} s for archlift's copy, {target_cpu - plain:+.2f} s for its HEADs, "
            f"mounts and manifests); the source registry {bestrun['archlift'][2]:.2f} s to serve them; "
            f"archlift {tool_cpu:.2f} s (start-up, sha256 of every byte, sockets) on {os.cpu_count()} cores"
        )


if __name__ == "__main__":
    sys.exit(main())
