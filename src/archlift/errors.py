"""The one error tree. Each class carries its exit status; only the CLI's
``main`` turns an error into output (one paragraph, no traceback)."""

from __future__ import annotations

from collections.abc import Iterable


class ArchliftError(Exception):
    """Base of every error meant for the user. ``str(e)`` is the message."""

    exit_code = 1
    title = "error"

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def render(self) -> str:
        text = f"archlift: {self.title}: {self.message}"
        if self.hint:
            text += f"\n  {self.hint}"
        return text


class UsageError(ArchliftError):
    exit_code = 2
    title = "usage"


class ConfigError(ArchliftError):
    """Bad input: images.yaml, a lock file, a manifest template."""

    exit_code = 2
    title = "invalid input"


class SourceError(ArchliftError):
    """A source that could not be fetched or resolved (git failed, a pinned tag moved)."""

    exit_code = 3
    title = "source"


class SourceInputError(SourceError):
    """A ref or URL given as input (in images.yaml, or ``upgrade --to``) that the upstream does not
    have or that cannot be reached: bad input, nothing was built, pushed, moved or changed."""

    exit_code = 2


class PatchError(ArchliftError):
    """A patch of the queue that does not apply (or cannot be read): bad input, like any file
    that arrives in a pull request; nothing of its component was built, pushed or moved."""

    exit_code = 2
    title = "patch"


class BuildError(ArchliftError):
    exit_code = 5
    title = "build"


class RegistryError(ArchliftError):
    exit_code = 6
    title = "registry"


class PublishError(ArchliftError):
    exit_code = 7
    title = "publish"


class MirrorError(ArchliftError):
    exit_code = 8
    title = "mirror"


class VerifyError(ArchliftError):
    """A target does not match the release (verify, audit)."""

    exit_code = 9
    title = "verify"


class ToolMissing(ArchliftError):
    exit_code = 10
    title = "missing tool"


def exit_status(errors: Iterable[ArchliftError]) -> int:
    """One exit status for several failures (components of one release): 0 without any; 2 when
    one of them is bad input (nothing of it was pushed or moved); else the first one's own."""
    codes = [e.exit_code for e in errors]
    if not codes:
        return 0
    return 2 if 2 in codes else codes[0]
