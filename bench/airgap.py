"""Air-gap bundles: a full and a differential bundle of a release in which one component changed.

    python bench/airgap.py [--images 8] [--layer-mb 20] [--shared-mb 30] [--rounds 3] [--max-size 64M]

The corpus is bench/mirror.py's (N two-platform indexes, one unique layer per
platform and a shared runtime layer per platform, attestation manifests) in a
local distribution registry: release 1. Release 2 rebuilds one image (a new
unique layer per platform and a new config; the shared layers kept) and keeps
the others. Then, with the archlift CLI (start-up included), ``--rounds``
times each, interleaved, the best counting:

- full:         ``archlift export`` of release 2;
- since lock:   ``archlift export --since release-1.json`` (the old trees walked in the registry);
- since bundle: ``archlift export --since release-1.tar`` (the old trees read from its bundle);
- split:        the full export with ``--max-size``.

Prints each bundle's size on disk, the bytes the differential bundle says it
saves, the ratio of the sizes and of the times. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mirror import Corpus, bytecode_cache, make_corpus
from support.registry import LocalRegistry

from archlift.lock import ReleaseLock
from archlift.oci import OCI_INDEX, OCI_MANIFEST, RegistryClient
from archlift.refs import Digest, ImageRef

ENV = dict(os.environ)


def rebuild(client: RegistryClient, lock: ReleaseLock, name: str, layer_mb: int) -> ReleaseLock:
    """Release 2: ``name`` with a new unique layer and config per platform, as a rebuild gives."""
    import dataclasses

    comp = lock.components[name]
    repo = ImageRef.parse(comp.repository)
    index = client.get_manifest(repo.with_digest(comp.index_digest)).json()
    platforms = {}
    for entry in index["manifests"]:
        manifest = client.get_manifest(repo.with_digest(Digest.parse(entry["digest"]))).json()
        if entry.get("platform", {}).get("architecture") == "unknown":
            continue  # the attestation is kept as it is
        config = json.dumps({"architecture": entry["platform"]["architecture"], "os": "linux", "rebuilt": 2}).encode()
        layer = os.urandom(layer_mb * 1_000_000)
        for data, desc in ((config, manifest["config"]), (layer, manifest["layers"][-1])):
            desc.update(digest=str(client.put_blob(repo, data)), size=len(data))
        raw = json.dumps(manifest).encode()
        digest = client.put_manifest(repo.with_digest(Digest.of(raw)), raw, OCI_MANIFEST)
        entry.update(digest=str(digest), size=len(raw))
        platforms[f"linux/{entry['platform']['architecture']}"] = digest
    raw = json.dumps(index).encode()
    new = client.put_manifest(repo.with_tag("v2"), raw, OCI_INDEX)
    changed = dataclasses.replace(comp, index_digest=new, platforms=platforms, tags=("v2",))
    return dataclasses.replace(lock, components={**lock.components, name: changed})


def export(work: Path, *args: str) -> tuple[float, dict[str, object]]:
    argv = [sys.executable, "-m", "archlift", "export", "--no-artifacts", "--json", *args]
    start = time.monotonic()
    out = subprocess.run(argv, cwd=work, check=True, capture_output=True, text=True, env=ENV)
    return time.monotonic() - start, json.loads(out.stdout)


def on_disk(summary: dict[str, object], work: Path) -> int:
    outputs = summary["outputs"]
    assert isinstance(outputs, list)
    return sum((work / str(p)).stat().st_size for p in outputs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--layer-mb", type=int, default=20, help="unique layer per platform (MB)")
    ap.add_argument("--shared-mb", type=int, default=30, help="the shared runtime layer per platform (MB)")
    ap.add_argument("--jobs", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-size", default="64M", help="part size of the split export")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="archlift-bench-airgap-"))
    src = LocalRegistry(log_level="error").start()
    try:
        client = RegistryClient(max_connections=2 * args.jobs)
        corpus = Corpus("airgap", args.images, args.layer_mb * 1_000_000, args.shared_mb * 1_000_000, "bench", False)
        v1, sizes = make_corpus(client, src, corpus, args.jobs)
        v2 = rebuild(client, v1, "image000", args.layer_mb)
        v1.write(work / "release-1.json")
        v2.write(work / "release-2.json")
        print(
            f"corpus: {args.images} two-platform images, {sum(sizes.values()) / 1e6:.0f} MB unique; release 2 rebuilds "
            f"image000 ({2 * args.layer_mb} MB of new layers), the other {args.images - 1} unchanged"
        )
        bytecode_cache(work / "pycache")
        ENV.update({k: v for k, v in os.environ.items() if k == "PYTHONPYCACHEPREFIX"})
        export(work, "--lock", "release-1.json", "-o", "release-1.tar")  # the base bundle (and a warm-up)
        runs: dict[str, list[float]] = {}
        sizes_on_disk: dict[str, int] = {}
        summaries: dict[str, dict[str, object]] = {}
        kinds = {
            "full": ["-o", "full.tar"],
            "since lock": ["-o", "diff-lock.tar", "--since", "release-1.json"],
            "since bundle": ["-o", "diff-bundle.tar", "--since", "release-1.tar"],
            "split": ["-o", "split.tar", "--max-size", args.max_size],
        }
        for _ in range(args.rounds):
            for kind, extra in kinds.items():
                seconds, summary = export(work, "--lock", "release-2.json", "--jobs", str(args.jobs), *extra)
                runs.setdefault(kind, []).append(seconds)
                sizes_on_disk[kind], summaries[kind] = on_disk(summary, work), summary
        print(f"\n{'export':<14}{'best s':>8}{'MB on disk':>12}  (all runs, s)")
        for kind, times in runs.items():
            parts = f"  {summaries[kind]['parts']} parts" if summaries[kind]["parts"] else ""
            print(
                f"{kind:<14}{min(times):8.2f}{sizes_on_disk[kind] / 1e6:12.1f}  "
                f"({', '.join(f'{t:.2f}' for t in times)}){parts}"
            )
        full, diff = sizes_on_disk["full"], sizes_on_disk["since lock"]
        saved = summaries["since lock"]["saved_bytes"]
        print(
            f"\nthe differential bundle is {diff / full:.3f} of the full one ({diff} of {full} bytes on disk); "
            f"it says it saves {saved} bytes of manifests and blobs"
        )
        for kind in ("since lock", "since bundle"):
            print(f"export {kind}: {min(runs['full']) / min(runs[kind]):.2f}x as fast as the full export")
        print(f"split export: {min(runs['split']) / min(runs['full']):.2f} of the full export's time")
        return 0
    finally:
        src.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
