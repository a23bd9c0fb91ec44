"""nox sessions: thin wrappers over ``python -m archlift ...`` (pass options after --).

nox -s demo                      the whole demo release against local registries
nox -s tests                     every tier: unit, integration, e2e
nox -s unit                      no Docker, no network: seconds
nox -s integration               against real registries (distribution, a hostile test server)
nox -s e2e                       the real engine: buildx builds, the demo's upstreams, the host set-up
nox -s lint                      ruff, mypy, shellcheck, and the workflow linters
nox -s build-images -- [CONFIG]  build, push by digest, tag, write dist/release.json
nox -s render-manifests          dist/manifests/ from the lock
nox -s publish-manifests -- --to REGISTRY/REPO[:TAG]
nox -s mirror -- --to REGISTRY[/PREFIX]
nox -s export -- --output bundle.tar ; nox -s import -- bundle.tar --to REGISTRY
nox -s release                   build, render, publish, sign, report
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True
# No python= on the sessions: they use the interpreter nox runs with (the system python of
# Debian 12 or Ubuntu 24.04 when nox is the distribution's package, as setup-host.sh installs it).
TIERS = ("unit", "integration", "e2e")


def _install(session: nox.Session, *extras: str) -> None:
    spec = f".[{','.join(extras)}]" if extras else "."
    session.install(spec)


def _archlift(session: nox.Session, *args: str) -> None:
    session.run("python", "-m", "archlift", *args, *session.posargs)


def _pytest(session: nox.Session, *paths: str) -> None:
    _install(session, "test")
    workers = os.environ.get("ARCHLIFT_TEST_WORKERS", "2")
    session.run("pytest", "-q", "-n", workers, *(session.posargs or paths))


@nox.session
def tests(session: nox.Session) -> None:
    """Every tier: unit (no Docker), integration (real registries), e2e (real buildx)."""
    _pytest(session, "tests")  # tests/unit, tests/integration, tests/e2e


def _tier_session(tier: str, doc: str) -> Callable[[nox.Session], None]:
    def session(session: nox.Session) -> None:
        _pytest(session, f"tests/{tier}")

    session.__doc__ = doc
    return session


for _tier, _doc in zip(
    TIERS,
    (
        "unit tests: no Docker, no network (seconds)",
        "integration tests: real registries on loopback, and a hostile test server",
        "end-to-end tests: the real engine (buildx builds), git upstreams, the host set-up",
    ),
    strict=True,
):
    nox.session(name=_tier)(_tier_session(_tier, _doc))


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (lint and format), mypy --strict, shellcheck, and the workflow linters (actionlint, zizmor)."""
    _install(session, "lint")
    session.run("ruff", "check", "src", "tests", "bench", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "bench", "noxfile.py")
    session.run("mypy")
    # the benches too (with the tests' registries they import): a call that no longer fits fails here
    session.run("mypy", "--strict", *sorted(map(str, Path("bench").glob("*.py"))), env={"MYPYPATH": "bench:tests"})
    session.run("shellcheck", "scripts/setup-host.sh", ".ci/run")
    if os.path.isdir(".github/workflows"):
        session.run("zizmor", "--offline", ".github/workflows")
        session.run("actionlint", external=True)


@nox.session
def demo(session: nox.Session) -> None:
    """The demo: its own registries, seeded bases, build, render, publish, mirror, verify."""
    _install(session)
    _archlift(session, "demo")


# Thin sessions over one command each: `nox -s build-images -- images.yaml hello`, and so on.
STEPS = {
    "build-images": "build",  # fetch, patch, build, push by digest, tag, write dist/release.json
    "render-manifests": "render",  # dist/manifests/ from the lock
    "publish-manifests": "publish",  # -- --to REGISTRY/REPO[:TAG]
    "mirror": "mirror",  # -- --to REGISTRY[/PREFIX]
    "export": "export",  # -- --output bundle.tar
    "import": "import",  # -- bundle.tar --to REGISTRY
}


def _step_session(command: str) -> Callable[[nox.Session], None]:
    def session(session: nox.Session) -> None:
        _install(session)
        _archlift(session, command)

    session.__doc__ = f"python -m archlift {command} (options after --)"
    return session


for _name, _command in STEPS.items():
    nox.session(name=_name)(_step_session(_command))


@nox.session
def release(session: nox.Session) -> None:
    """The whole release: build-images, render-manifests, publish-manifests, sign, report.

    Needs ARCHLIFT_MANIFESTS_REPO (REGISTRY/REPO for the manifests artifact), RELEASE_TAG
    (default: latest), and the signing key in ARCHLIFT_COSIGN_KEY (a path or env://VAR) with
    its password in COSIGN_PASSWORD. Options after -- go to the build.
    """
    repo = os.environ.get("ARCHLIFT_MANIFESTS_REPO")
    if not repo:
        session.error("set ARCHLIFT_MANIFESTS_REPO=REGISTRY/REPO: where the manifests artifact is published")
    tag = os.environ.get("RELEASE_TAG", "latest")
    _install(session)
    session.run("python", "-m", "archlift", "build", *session.posargs)
    session.run("python", "-m", "archlift", "render")
    session.run("python", "-m", "archlift", "publish", "--to", f"{repo}:{tag}")
    session.run("python", "-m", "archlift", "sign")
    session.run("python", "-m", "archlift", "report")
