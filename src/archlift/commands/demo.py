"""archlift demo: the whole release of examples/demo against registries of its own.

Starts two real registries on loopback (unless given ``--registry`` /
``--mirror-to``), keeps their storage and ports under ``.cache/demo/`` so a
second run reuses them (and builds nothing), seeds the base images, turns
``examples/demo/upstreams/*`` into git repositories, then runs validate, plan,
build, the refusal of hello without its patch (examples/demo/unpatched.yaml,
built into its own repository), render, publish, mirror and verify, and says
where everything is. Last, a one-component change (the toolbox upstream's next
release, built beside the demo in ``.cache/demo/next/``) goes into a differential
bundle against the demo's release, and the demo says how many bytes that saved.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from ..errors import ArchliftError, BuildError
from .common import display_path as display

DEMO_DIR = Path("examples/demo")
STATE_DIR = Path(".cache/demo")
UNPATCHED = "unpatched.yaml"  # beside images.yaml: hello without its patch, into its own repository
UPSTREAMS = {"hello": ("v1.0.0",), "toolbox": ("v0.3.0",)}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="run the whole demo release against local registries",
        description="Build, render, publish, mirror and verify examples/demo: two real registries on "
        "loopback (kept under .cache/demo/ between runs), base images seeded from Debian's busybox, upstream "
        "source trees turned into git repositories. Run from the repository root.",
    )
    p.add_argument("--registry", help="use this registry (HOST:PORT) instead of starting one")
    p.add_argument("--mirror-to", help="mirror into this registry (HOST:PORT[/PREFIX]) instead of starting one")
    p.add_argument("--config", type=Path, default=DEMO_DIR / "images.yaml", help="default: %(default)s")
    p.set_defaults(func=run)


def _say(text: str) -> None:
    print(f"\n==> {text}", flush=True)


@contextlib.contextmanager
def _registry(name: str) -> Iterator[str]:
    from ..localenv import LocalRegistry

    state_file = STATE_DIR / f"{name}.json"
    port = json.loads(state_file.read_text()).get("port", 0) if state_file.is_file() else 0
    workdir = (STATE_DIR / name).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    reg = LocalRegistry(workdir=workdir, port=port)
    reg.start()
    state_file.write_text(json.dumps({"port": reg.port}))
    try:
        yield reg.host
    finally:
        reg.stop(remove=False)


def _seed(host: str) -> None:
    from ..localenv import seed_busybox, seed_sbom_scanner, seed_toolchain

    for ref in (
        seed_busybox(host),
        seed_toolchain(host),
        seed_busybox(host, "thirdparty/busybox", "1.35"),
        seed_sbom_scanner(host),
    ):
        print(f"    {ref}")


def _upstreams(root: Path) -> None:
    from ..localenv import make_git_repo

    for name, tags in UPSTREAMS.items():
        repo = make_git_repo(root / "upstreams" / name, root / ".upstreams" / f"{name}.git", tags=tags)
        print(f"    {repo.path} ({', '.join(tags)} at {repo.commit[:12]})")


def _step(argv: list[str]) -> None:
    from ..cli import main

    print(f"$ archlift {' '.join(argv)}", flush=True)
    status = main(argv)
    if status != 0:
        raise ArchliftError(f"the demo stopped: 'archlift {' '.join(argv)}' exited with {status}")


class _Tee:
    """stderr as it is, and a copy of what was written."""

    def __init__(self, stream: TextIO) -> None:
        self.stream, self.text = stream, io.StringIO()

    def write(self, text: str) -> int:
        self.text.write(text)
        return self.stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def refuse_unpatched(config: Path, host: str) -> None:
    """Build ``config`` (the demo's hello without its patch): the build must refuse it, naming the amd64
    binary in its linux/arm64 image, move no tag and write no lock. The demo stops otherwise."""
    from ..cli import main
    from ..oci import RegistryClient
    from ..refs import ImageRef

    lock = STATE_DIR / "unpatched-release.json"
    argv = ["build", str(config), "--lock", str(lock)]
    print(f"$ archlift {' '.join(argv)}", flush=True)
    tee = _Tee(sys.stderr)
    with contextlib.redirect_stderr(tee):
        status = main(argv)
    said = tee.text.getvalue()
    with RegistryClient() as client:
        tagged = client.head_manifest(ImageRef.parse(f"{host}/demo-unpatched/hello:v1.0.0"))
    wanted = ("(linux/arm64) holds", "/opt/hello/bin/busybox: x86-64")
    if status != BuildError.exit_code or lock.exists() or tagged is not None or not all(w in said for w in wanted):
        raise ArchliftError(
            f"the demo stopped: building {config} (hello without its patch) should have been refused for its "
            f"amd64 binary in linux/arm64 (exit {BuildError.exit_code}, no tag, no lock); it exited {status}"
        )
    print(
        "==> refused, as it must be: the linux/arm64 image holds /opt/hello/bin/busybox built for x86-64; "
        "no tag of demo-unpatched/hello moved, no lock written; the release above is untouched",
        flush=True,
    )


def run(args: argparse.Namespace) -> int:
    config = args.config
    if not config.is_file():
        raise ArchliftError(f"{config}: not found", hint="run the demo from the root of the archlift repository")
    start = time.monotonic()
    with contextlib.ExitStack() as stack:
        host = args.registry or stack.enter_context(_registry("registry"))
        target = args.mirror_to or f"{stack.enter_context(_registry('airgap'))}/airgap"
        os.environ["DEMO_REGISTRY"] = host
        _say(f"registry {host}; seeding base images (Debian busybox-static, no public registry needed)")
        _seed(host)
        _say("turning the demo's upstream source trees into git repositories")
        _upstreams(config.parent.resolve())
        cfg = str(config)
        for title, argv in (
            ("validate and plan", ["validate", cfg]),
            ("", ["plan", cfg]),
            ("build for linux/amd64 and linux/arm64, push by digest, tag, lock", ["build", cfg]),
        ):
            if title:
                _say(title)
            _step(argv)
        _say("the same hello without its patch (seed 000 as upstream ships it), into demo-unpatched/: refused")
        refuse_unpatched(config.parent / UNPATCHED, host)
        for title, argv in (
            ("render the install manifests, every image pinned by digest", ["render", cfg]),
            ("publish the manifests as an OCI artifact", ["publish", "--to", f"{host}/demo/manifests:latest"]),
            (f"mirror the release into {target}", ["mirror", "--to", target]),
            (
                f"render the install for the air-gapped cluster: every image from {target}",
                ["render", cfg, "--registry", target, "--out", "dist/manifests-airgap"],
            ),
        ):
            if title:
                _say(title)
            _step(argv)
        _say(f"verify {target} against the release")
        _step(["verify", "--registry", target])
        _summary(host, target, time.monotonic() - start)
        _differential(config)
    return 0


NEXT_DIR = STATE_DIR / "next"
TOOLBOX_NEXT = "v0.3.1"


def _differential(config: Path) -> None:
    """The toolbox upstream's next release (one more line in its script, tagged v0.3.1), built from a
    copy of the demo in .cache/demo/next/ (the committed example is not touched, and nothing of the
    demo's release moves: hello and busybox are unchanged, so not rebuilt); then a differential bundle
    of that release against the demo's lock, dist/release.json."""
    import shutil

    from ..localenv import make_git_repo

    _say(f"a one-component change: toolbox {TOOLBOX_NEXT} upstream, and a differential bundle for it")
    demo, work = config.parent.resolve(), NEXT_DIR.resolve()
    for name in ("manifests", "patches", "upstreams"):
        shutil.rmtree(work / name, ignore_errors=True)
        shutil.copytree(demo / name, work / name)
    script = work / "upstreams" / "toolbox" / "toolbox.sh"
    script.write_text(script.read_text() + f'echo "toolbox {TOOLBOX_NEXT}: the same tools, one more line"\n')
    for name, tags in {**UPSTREAMS, "toolbox": (TOOLBOX_NEXT,)}.items():
        repo = make_git_repo(work / "upstreams" / name, work / ".upstreams" / f"{name}.git", tags=tags)
        print(f"    {repo.path} ({', '.join(tags)} at {repo.commit[:12]})")
    text = config.read_text()
    pin = "{git: .upstreams/toolbox.git, ref: v0.3.0}"
    if pin not in text:
        raise ArchliftError(f"{config}: the demo's toolbox is no longer pinned as {pin}; update the demo's last step")
    (work / "images.yaml").write_text(text.replace(pin, pin.replace("v0.3.0", TOOLBOX_NEXT)))
    cfg, lock, rendered = str(work / "images.yaml"), str(work / "release.json"), str(work / "manifests-out")
    bundle = work / "bundle-since-demo.tar"
    for argv in (
        ["build", cfg, "--lock", lock],
        ["render", cfg, "--lock", lock, "--out", rendered],
        ["export", "--lock", lock, "--since", "dist/release.json", "--manifests", rendered, "--no-artifacts",
         "-o", str(bundle)],
        ["verify-bundle", str(bundle)],
    ):  # fmt: skip
        _step(argv)
    from ..steps.airgap import open_bundle

    opened = open_bundle(bundle)
    if opened.base is None:
        raise ArchliftError(f"{bundle}: the demo's export --since wrote a full bundle, not a differential one")
    carried = sum(m.size for n, m in opened.members.items() if n.startswith("blobs/"))
    saved = opened.base.left_out_bytes
    print(
        f"\ndifferential bundle {display(bundle)}: {carried} bytes of manifests and blobs for toolbox "
        f"{TOOLBOX_NEXT}; it saved {saved} bytes ({saved / 1e6:.1f} MB, {100 * saved / (saved + carried):.1f}%) "
        "against a full bundle of the same release"
    )


def _summary(host: str, target: str, seconds: float) -> None:
    from ..buildx import imagetools_platforms
    from ..lock import ReleaseLock

    lock = ReleaseLock.read(Path("dist/release.json"))
    _say(f"done in {seconds:.1f} s")
    print("images (each an index for linux/amd64 and linux/arm64):")
    for rel in lock.components.values():
        print(f"  {rel.name:8} {rel.ref}")
        print(f"  {'':8} tags {', '.join(rel.tags)}; mirrored as {target}/{rel.ref.repository}@{rel.index_digest}")
    print("where to find things:")
    print("  dist/release.json        the release lock (what render, publish and mirror read)")
    print("  dist/manifests/          the install, every image pinned by digest")
    print("  dist/rootsync.yaml       a Config Sync RootSync for the published manifests artifact")
    print("  dist/flux.yaml           a Flux OCIRepository + Kustomization for it")
    print("  dist/manifests-airgap/   the same install pulling every image from the mirror, by the same digests")
    print(f"  .cache/demo/             the registries' storage; they listened on {host} and {target.split('/')[0]}")
    _say("each index, as docker buildx imagetools inspect shows it")
    for rel in lock.components.values():
        print(f"  {rel.name:8} {', '.join(imagetools_platforms(str(rel.ref)))}")
    print("\nrun the demo again: nothing is rebuilt; every step checks and moves on")
