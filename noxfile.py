"""nox sessions: thin wrappers over ``python -m archlift ...`` (pass options after --).

nox -s demo                      the whole demo release against local registries
nox -s tests                     unit and integration tests (real engine and registries)
nox -s lint                      ruff, mypy, and the workflow linters
nox -s build-images -- [CONFIG]  build, push by digest, tag, write dist/release.json
nox -s render-manifests          dist/manifests/ from the lock
nox -s publish-manifests -- --to REGISTRY/REPO[:TAG]
nox -s mirror -- --to REGISTRY[/PREFIX]
nox -s export -- --output bundle.tar ; nox -s import -- bundle.tar --to REGISTRY
nox -s release                   build, render, publish, sign, report
"""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True
PYTHON = "3.11"


def _install(session: nox.Session, *extras: str) -> None:
    spec = f".[{','.join(extras)}]" if extras else "."
    session.install(spec)


def _archlift(session: nox.Session, *args: str) -> None:
    session.run("python", "-m", "archlift", *args, *session.posargs)


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """All tests: unit tests and integration tests against the real engine and registries."""
    _install(session, "test", "lint")  # the workflow tests run actionlint and zizmor
    session.run("pytest", "-q", "-n", os.environ.get("ARCHLIFT_TEST_WORKERS", "2"), *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff (lint and format), mypy --strict, and the workflow linters (actionlint, zizmor)."""
    _install(session, "lint")
    session.run("ruff", "check", "src", "tests", "bench", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "bench", "noxfile.py")
    session.run("mypy")
    if os.path.isdir(".github/workflows"):
        session.run("zizmor", "--offline", ".github/workflows")
        session.run("actionlint", external=True)


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """The demo: its own registries, seeded bases, build, render, publish, mirror, verify."""
    _install(session)
    _archlift(session, "demo")


@nox.session(name="build-images", python=PYTHON)
def build_images(session: nox.Session) -> None:
    """Fetch, patch, build with buildx for every platform, push by digest, tag, lock."""
    _install(session)
    _archlift(session, "build")


@nox.session(name="render-manifests", python=PYTHON)
def render_manifests(session: nox.Session) -> None:
    _install(session)
    _archlift(session, "render")


@nox.session(name="publish-manifests", python=PYTHON)
def publish_manifests(session: nox.Session) -> None:
    _install(session)
    _archlift(session, "publish")


@nox.session(python=PYTHON)
def mirror(session: nox.Session) -> None:
    _install(session)
    _archlift(session, "mirror")


@nox.session(name="export", python=PYTHON)
def export_bundle(session: nox.Session) -> None:
    _install(session)
    _archlift(session, "export")


@nox.session(name="import", python=PYTHON)
def import_bundle(session: nox.Session) -> None:
    _install(session)
    _archlift(session, "import")


@nox.session(python=PYTHON)
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
