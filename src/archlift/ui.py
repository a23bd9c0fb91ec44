"""Progress while long work runs, and a plain summary at the end.

On a terminal: a live table (rich), one row per component and platform, gone when the work
ends. Elsewhere (CI, pipes): one plain line per component event, no step noise. Under GitHub
Actions each step of a run is a ``::group::`` fold and each failure an ``::error::``
annotation; the summary goes to ``$GITHUB_STEP_SUMMARY``. ``NO_COLOR`` and ``FORCE_COLOR``
are honoured.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

# What steps report progress through: (component, platform or "", message).
Reporter = Callable[[str, str, str], None]


def quiet(component: str, platform: str, message: str) -> None:
    """A reporter that says nothing."""


def interactive() -> bool:
    """A live display: on a terminal, not under CI; ``FORCE_COLOR`` forces it (as for other tools)."""
    if os.environ.get("FORCE_COLOR"):
        return True
    return sys.stderr.isatty() and not os.environ.get("CI")


def console() -> Any:
    """rich's console on stderr: no colours with ``NO_COLOR``, a terminal's output with ``FORCE_COLOR``
    (https://no-color.org, https://force-color.org)."""
    from rich.console import Console

    return Console(
        stderr=True,
        no_color=bool(os.environ.get("NO_COLOR")),
        force_terminal=True if os.environ.get("FORCE_COLOR") else None,
    )


def github_actions() -> bool:
    return os.environ.get("GITHUB_ACTIONS") == "true"


class PlainReporter:
    """Component-level events as plain lines on stderr (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._start = time.monotonic()

    def __call__(self, component: str, platform: str, message: str) -> None:
        if platform:
            return  # per-step buildx lines are too many for a log
        with self._lock:
            print(f"[{time.monotonic() - self._start:6.1f}s] {component}: {message}", file=sys.stderr, flush=True)


class LiveReporter:
    """A rich live table while the work runs: per component its state and time, per platform its
    last step. Rows stay under their component whatever order the events come in; the table goes
    when the work ends (transient), and the plain summary says how it ended."""

    wants_steps = True  # the build streams BuildKit's step lines only to a reporter that shows them

    def __init__(self, rows: Sequence[tuple[str, Sequence[str]]]) -> None:
        from rich.live import Live

        self._state: dict[str, dict[str, str]] = {}  # component -> platform ("" = the component) -> text
        self._start: dict[str, float] = {}
        for name, platforms in rows:
            self._state[name] = {"": "waiting", **{p: "" for p in platforms}}
        self._lock = threading.Lock()
        self._live = Live(self._table(), console=console(), refresh_per_second=8, transient=True)

    def _table(self) -> Any:
        from rich.table import Table

        table = Table(show_header=True, header_style="bold", box=None)
        table.add_column("component")
        table.add_column("platform")
        table.add_column("step", overflow="ellipsis", no_wrap=True, max_width=70)
        table.add_column("time", justify="right")
        now = time.monotonic()
        for name, rows in self._state.items():
            started = self._start.get(name)
            table.add_row(name, "", rows.get("", ""), f"{now - started:5.1f}s" if started else "")
            for platform, text in rows.items():
                if platform:
                    table.add_row("", platform, text, "")
        return table

    def __call__(self, component: str, platform: str, message: str) -> None:
        with self._lock:
            self._start.setdefault(component, time.monotonic())
            self._state.setdefault(component, {"": ""})[platform] = message
            self._live.update(self._table())

    def rows(self) -> list[tuple[str, str, str]]:
        """(component, platform, text) in display order."""
        with self._lock:
            return [(n, p, text) for n, rows in self._state.items() for p, text in rows.items()]

    def __enter__(self) -> LiveReporter:
        self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.__exit__(None, None, None)


@contextmanager
def reporter(rows: Sequence[tuple[str, Sequence[str]]], silent: bool = False) -> Iterator[Reporter]:
    if silent:
        yield quiet
    elif interactive():
        with LiveReporter(rows) as live:
            yield live
    else:
        yield PlainReporter()


@contextmanager
def group(title: str) -> Iterator[None]:
    """A foldable section of a GitHub Actions log (``::group::``); nothing elsewhere."""
    if not github_actions():
        yield
        return
    print(f"::group::{title}", file=sys.stderr, flush=True)
    try:
        yield
    finally:
        print("::endgroup::", file=sys.stderr, flush=True)


def _escape(text: str, *, prop: bool = False) -> str:
    """GitHub's workflow-command escaping (data: %, CR, LF; properties also ':' and ',')."""
    out = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return out.replace(":", "%3A").replace(",", "%2C") if prop else out


def annotate_error(title: str, message: str) -> None:
    """An ``::error::`` annotation under GitHub Actions (shown on the run's summary page); nothing elsewhere."""
    if github_actions():
        print(f"::error title={_escape(title, prop=True)}::{_escape(message)}", file=sys.stderr, flush=True)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain aligned text table (no colours), for summaries in logs and terminals alike."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)


def step_summary(markdown: str) -> None:
    """Append to $GITHUB_STEP_SUMMARY when set."""
    path = os.environ.get("GITHUB_STEP_SUMMARY")
    if path:
        with open(path, "a") as f:
            f.write(markdown + "\n")
