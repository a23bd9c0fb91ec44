"""The one error tree. Each class carries its exit status; only the CLI's
``main`` turns an error into output (one paragraph, no traceback)."""

from __future__ import annotations


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
    exit_code = 3
    title = "source"


class SourceInputError(SourceError):
    """A ref or URL given as input (``upgrade --to``) that the upstream does not have or that cannot
    be reached: bad input, nothing was changed."""

    exit_code = 2


class PatchError(ArchliftError):
    exit_code = 4
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
