"""Build speed against `docker buildx bake`, on the same six two-platform targets, in one run.

    python bench/build.py [--components 6] [--rounds 2]

It starts a local registry, seeds the bases, makes six small upstreams (each
cross-compiles its runtime from the toolchain image, like the demo's hello)
and measures, printing seconds and ratios:

1. cold: archlift build of all components vs `docker buildx bake --push`, each
   with a fresh NONCE build arg, so every RUN step is rebuilt (bases cached);
   rounds interleaved, medians compared (the engine's own time varies by 10-20%);
   and archlift's cold build without its binaries check (``--no-binaries-check``)
   in the same rounds (the order alternating): what the check costs, as a ratio
   (of the medians, and the median of each round's pair), with its parts (the
   gate after the bake; the reading of each layout as soon as it is pushed,
   during the bake) and the check alone timed on the same images (from the
   registry, no cache of findings);
2. warm: archlift re-run with nothing changed vs a warm bake of the same targets;
3. one change: one upstream gets a new commit; archlift rebuilds only it.

Both sides do the same work: the same attestations (provenance and SBOM with
archlift's own generator), registry cache, and no timestamp rewriting
(``reproducible: false``); archlift's default, reproducible timestamps, is
measured on its own line. Timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from archlift.localenv import LocalRegistry, make_git_repo, seed_busybox, seed_sbom_scanner, seed_toolchain
from archlift.lock import ReleaseLock

DOCKERFILE = """\
ARG TOOLCHAIN
ARG BASE
FROM --platform=$BUILDPLATFORM ${TOOLCHAIN} AS build
ARG TARGETARCH
ARG NONCE=0
COPY app.sh /src/app.sh
RUN mkdir -p /out/opt/app/bin && echo "$NONCE" > /out/opt/app/nonce \\
 && cp /toolchain/${TARGETARCH}/busybox /out/opt/app/bin/busybox && cp /src/app.sh /out/opt/app/app.sh
FROM ${BASE}
COPY --from=build /out/ /
ENTRYPOINT ["/opt/app/app.sh"]
"""


def make_upstreams(work: Path, n: int) -> list[str]:
    names = []
    for i in range(n):
        name = f"app{i}"
        src = work / "upstreams" / name
        src.mkdir(parents=True)
        (src / "Dockerfile").write_text(DOCKERFILE)
        (src / "app.sh").write_text(f"#!/opt/app/bin/busybox sh\necho {name} on $(/opt/app/bin/busybox uname -m)\n")
        make_git_repo(src, work / "git" / f"{name}.git", tags=("v1.0.0",))
        names.append(name)
    return names


def write_config(work: Path, host: str, names: list[str], *, reproducible: bool = False) -> Path:
    lines = [
        f"registry: {host}/bench",
        f"reproducible: {str(reproducible).lower()}",
        "concurrency: " + str(len(names)),
        "attestations:",
        f"  sbom_generator: {host}/base/sbom-scanner:1",
        "components:",
    ]
    for name in names:
        lines += [
            f"  {name}:",
            f"    source: {{git: git/{name}.git, ref: v1.0.0}}",
            "    build:",
            "      args:",
            f"        TOOLCHAIN: {host}/base/toolchain:1",
            f"        BASE: {host}/base/busybox:1.35",
            "        NONCE: ${BENCH_NONCE}",
        ]
    path = work / ("images-reproducible.yaml" if reproducible else "images.yaml")
    path.write_text("\n".join(lines) + "\n")
    return path


def write_bake(work: Path, host: str, names: list[str]) -> Path:
    targets = {
        name: {
            "context": str(work / "upstreams" / name),  # the same files (a path ending in .git is a git URL)
            "dockerfile": "Dockerfile",
            "platforms": ["linux/amd64", "linux/arm64"],
            "args": {
                "TOOLCHAIN": f"{host}/base/toolchain:1",
                "BASE": f"{host}/base/busybox:1.35",
                "NONCE": "${BENCH_NONCE}",
            },
            "tags": [f"{host}/bake/{name}:v1.0.0"],
            "attest": ["type=provenance,mode=min", f"type=sbom,generator={host}/base/sbom-scanner:1"],
            "cache-from": [f"type=registry,ref={host}/bake/{name}-cache:buildcache"],
            "cache-to": [f"type=registry,ref={host}/bake/{name}-cache:buildcache,mode=max"],
            "output": ["type=image,push=true"],
        }
        for name in names
    }
    data = {"variable": {"BENCH_NONCE": {"default": "0"}}, "group": {"default": {"targets": names}}, "target": targets}
    path = work / "docker-bake.json"
    path.write_text(json.dumps(data, indent=2))
    return path


def archlift(
    config: Path, nonce: str, cache: Path, *extra: str, progress: bool = False
) -> tuple[float, dict[str, str]]:
    """``archlift build`` as a user runs it (a new process); (seconds, status per component). With
    ``progress``, as a CI log shows it (no --json): the statuses come from the summary table, and the
    progress lines are kept in ``LAST_PROGRESS`` for ``check_seconds``."""
    env = {
        "BENCH_NONCE": nonce,
        "ARCHLIFT_CACHE_DIR": str(cache),
        "CI": "1",
        # bytecode cached as for an installed archlift (pip writes .pyc files; this host may forbid writing them)
        "PYTHONPYCACHEPREFIX": str(cache / "pycache"),
    }
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "archlift", "build", str(config), *(() if progress else ("--json",)),
         "--lock", "lock.json", *extra],
        env={**{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}, **env},
        capture_output=True,
        text=True,
        cwd=config.parent,
    )  # fmt: skip
    took = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit(f"bench: archlift build failed:\n{proc.stderr[-3000:]}\n{proc.stdout[-3000:]}")
    if progress:
        LAST_PROGRESS[:] = proc.stderr.splitlines()
        rows = [line.split() for line in proc.stdout.splitlines()]
        return took, {r[0]: r[1] for r in rows if len(r) > 2 and r[2].endswith("s") and r[0] != "component"}
    result = json.loads(proc.stdout)
    return took, {c["name"]: c["status"] for c in result["components"]}


LAST_PROGRESS: list[str] = []
_STAMP = re.compile(
    r"^\[\s*([0-9.]+)s\] ([^:]+): (checking that the binaries|binaries: |reading the binaries|binaries read from)"
)


def check_seconds(lines: list[str]) -> tuple[float, float]:
    """The binaries check's wall time in a build, from its progress lines: the gate (after the bake:
    the first component's "checking that the binaries ..." to the last one's "binaries: ok"), and the
    reading of each component's layout as soon as it is pushed ("reading the binaries of its OCI
    layout" to "binaries read from its layout", summed over the components: it runs while the bake
    builds the others, so it is not all added to the build)."""
    stamps = [(m.group(2), m.group(3), float(m.group(1))) for m in map(_STAMP.match, lines) if m]
    starts = [t for _, what, t in stamps if what.startswith("checking")]
    ends = [t for _, what, t in stamps if what == "binaries: "]
    assert starts and ends, "no progress lines of the binaries check"
    began = {name: t for name, what, t in stamps if what == "reading the binaries"}
    early = sum(t - began[name] for name, what, t in stamps if what == "binaries read from" and name in began)
    return max(ends) - min(starts), early


def bake(bakefile: Path, nonce: str) -> float:
    """A bake run; retried (at most 3 tries, said aloud) when the registry answers a HEAD with a passing 500,
    which distribution 2.8 sometimes does under bake's concurrent pushes of shared blobs."""
    argv = ["docker", "buildx", "bake", "-f", str(bakefile), "--progress=quiet"]
    for attempt in range(3):
        start = time.monotonic()
        proc = subprocess.run(argv, env={**os.environ, "BENCH_NONCE": nonce}, capture_output=True, text=True)
        if proc.returncode == 0:
            return time.monotonic() - start
        print(f"bench: bake attempt {attempt + 1} failed: {proc.stderr.strip().splitlines()[-1]}", flush=True)
    sys.exit("bench: docker buildx bake failed three times")


def forget_bake_images(host: str, names: list[str]) -> None:
    """Bake's image exporter on the docker driver also keeps each tagged image in the engine's store:
    remove the bench's tags there (the registry they point to is gone), leaving the machine as it was."""
    tags = [f"{host}/bake/{name}:v1.0.0" for name in names]
    subprocess.run(["docker", "image", "rm", *tags], capture_output=True, check=False)


def check_alone(lock_path: Path) -> tuple[float, int, int]:
    """The build's binaries check over every platform image of a lock, timed in this process with no
    cache of findings (every layer read): (seconds, platform images, layers read)."""
    from concurrent.futures import ThreadPoolExecutor

    from archlift.checks.binaries import Checker, check_release
    from archlift.config.model import BinariesPolicy
    from archlift.oci import RegistryClient

    releases = list(ReleaseLock.read(lock_path).components.values())
    start = time.monotonic()
    with RegistryClient() as client, Checker(client) as checker, ThreadPoolExecutor(max_workers=4) as pool:
        verdicts = list(pool.map(lambda rel: check_release(checker, BinariesPolicy(), rel), releases))
    took = time.monotonic() - start
    assert all(not v.error for v in verdicts), [v.error for v in verdicts if v.error]
    return took, sum(len(v.platforms) for v in verdicts), checker.layers_read


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--components", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3, help="repeats of each measurement, interleaved (median)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="archlift-bench-") as tmp, LocalRegistry() as reg:
        work = Path(tmp)
        for seed in (seed_busybox, seed_toolchain, seed_sbom_scanner):
            seed(reg.host)
        names = make_upstreams(work, args.components)
        config = write_config(work, reg.host, names)
        reproducible = write_config(work, reg.host, names, reproducible=True)
        bakefile = write_bake(work, reg.host, names)
        cache = work / "cache"
        print(f"bench: {len(names)} two-platform components, registry {reg.host}", flush=True)

        bake_colds: list[float] = []
        ours_colds: list[float] = []
        unchecked_colds: list[float] = []
        gates: list[float] = []
        earlies: list[float] = []
        for i in range(args.rounds):  # interleaved, each with a new NONCE: every RUN step is rebuilt
            bake_colds.append(bake(bakefile, uuid.uuid4().hex))
            for checked in (True, False) if i % 2 == 0 else (False, True):
                nonce = uuid.uuid4().hex
                extra = () if checked else ("--no-binaries-check",)
                took, cold_status = archlift(config, nonce, cache, *extra, progress=checked)
                assert set(cold_status.values()) == {"built"} and len(cold_status) == len(names), cold_status
                (ours_colds if checked else unchecked_colds).append(took)
                if checked:
                    gate, early = check_seconds(LAST_PROGRESS)
                    gates.append(gate)
                    earlies.append(early)
        bake_cold, ours_cold = statistics.median(bake_colds), statistics.median(ours_colds)
        unchecked_cold = statistics.median(unchecked_colds)
        alone, checked_images, layers_read = check_alone(work / "lock.json")
        repro_cold = statistics.median(archlift(reproducible, uuid.uuid4().hex, cache)[0] for _ in range(args.rounds))
        bake_warm = statistics.median(bake(bakefile, nonce) for _ in range(args.rounds))
        warm = [archlift(config, nonce, cache) for _ in range(args.rounds)]
        ours_warm = statistics.median(t for t, _ in warm)
        warm_built = sum(s == "built" for _, st in warm for s in st.values())

        changed = names[len(names) // 2]
        make_git_repo(
            work / "upstreams" / changed,
            work / "git" / f"{changed}.git",
            tags=(),
            extra_commits=[{"CHANGES": "a new upstream commit\n"}],
        )
        subprocess.run(["git", "tag", "-f", "v1.0.0", "HEAD"], cwd=work / "git" / f"{changed}.git", check=True)
        (work / "lock.json").unlink()  # accept the moved tag (the lock would refuse it)
        ours_one, one_status = archlift(config, nonce, cache, "--refresh")
        forget_bake_images(reg.host, names)
    rebuilt = sorted(n for n, s in one_status.items() if s == "built")
    print()
    print(f"{'measurement':48} {'archlift':>9} {'bake':>9} {'ratio':>7}")
    cold = "cold build of all components (s, median)"
    print(f"{cold:48} {ours_cold:9.2f} {bake_cold:9.2f} {bake_cold / ours_cold:6.2f}x")
    print(f"{'re-run, nothing changed (s, median)':48} {ours_warm:9.2f} {bake_warm:9.2f} {bake_warm / ours_warm:6.2f}x")
    print(f"{'one upstream changed (s)':48} {ours_one:9.2f} {'':>9}")
    print(f"{'cold, reproducible timestamps (s, median)':48} {repro_cold:9.2f} {'':>9}")
    print(f"{'cold, without the binaries check (s, median)':48} {unchecked_cold:9.2f} {'':>9}")
    print(f"{'the binaries gate inside the cold build (s, median)':48} {statistics.median(gates):9.2f} {'':>9}")
    print(f"{'reading the layouts as pushed (s, summed, median)':48} {statistics.median(earlies):9.2f} {'':>9}")
    print(f"{'the binaries check alone, no cache (s)':48} {alone:9.2f} {'':>9}")
    print()
    print(f"cold: archlift is {bake_cold / ours_cold:.2f}x the speed of a cold bake (goal: >= 1.0x)")
    print(f"warm: archlift is {bake_warm / ours_warm:.2f}x faster than a warm bake (goal: >= 5x); built {warm_built}")
    print(f"one change ({changed}): rebuilt {rebuilt} (goal: only [{changed!r}])")
    share = statistics.median(g / (t - g) for g, t in zip(gates, ours_colds, strict=True))
    print(
        f"binaries check: end to end, cold builds with it take {ours_cold / unchecked_cold:.3f}x those without "
        f"(medians; goal: <= 1.15x); {min(ours_colds) / min(unchecked_colds):.3f}x the fastest of each; "
        f"{statistics.median(a / b for a, b in zip(ours_colds, unchecked_colds, strict=True)):.3f}x the median "
        "of each round's pair (run back to back)"
    )
    print(
        f"  its gate after the bake takes {statistics.median(gates):.2f}s ({1 + share:.3f}x the build without "
        f"it); reading each layout as it was pushed took {statistics.median(earlies):.2f}s summed over the "
        f"components, during the bake; alone (from the registry, no cache) it takes {alone:.2f}s for "
        f"{checked_images} platform images ({layers_read} layers read)"
    )
    samples = ", ".join(f"{a:.1f}/{b:.1f}" for a, b in zip(ours_colds, unchecked_colds, strict=True))
    print(f"  (cold builds with/without the check, round by round: {samples} s; the engine's own spread)")
    print(
        "(the comparison builds with reproducible: false, as bake does; reproducible: true, archlift's default, "
        f"adds SOURCE_DATE_EPOCH and rewrites layer timestamps, which bake's image exporter cannot: "
        f"{repro_cold / ours_cold:.2f}x the time)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
