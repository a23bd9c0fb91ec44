"""Progress while long work runs, and a plain summary at the end.

On a terminal: a live table (rich), one row per component and platform.
Elsewhere (CI, pipes): one plain line per component event, no step noise;
``::group::`` folds under GitHub Actions.
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
    if os.environ.get("FORCE_COLOR"):
        return True
    return sys.stderr.isatty() and not os.environ.get("CI") and not os.environ.get("NO_COLOR")


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
    """A rich live table: component, platform, last step, elapsed."""

    wants_steps = True  # the build streams BuildKit's step lines only to a reporter that shows them

    def __init__(self, rows: Sequence[tuple[str, Sequence[str]]]) -> None:
        from rich.console import Console
        from rich.live import Live

        self._state: dict[tuple[str, str], str] = {}
        self._start: dict[str, float] = {}
        for name, platforms in rows:
            self._state[(name, "")] = "waiting"
            for p in platforms:
                self._state[(name, p)] = ""
        self._lock = threading.Lock()
        self._live = Live(self._table(), console=Console(stderr=True), refresh_per_second=8, transient=False)

    def _table(self) -> Any:
        from rich.table import Table

        table = Table(show_header=True, header_style="bold", box=None)
        table.add_column("component")
        table.add_column("platform")
        table.add_column("step", overflow="ellipsis", no_wrap=True, max_width=70)
        table.add_column("time", justify="right")
        now = time.monotonic()
        for (name, platform), text in self._state.items():
            started = self._start.get(name)
            elapsed = f"{now - started:5.1f}s" if started and not platform else ""
            table.add_row(name if not platform else "", platform or "", text, elapsed)
        return table

    def __call__(self, component: str, platform: str, message: str) -> None:
        with self._lock:
            self._start.setdefault(component, time.monotonic())
            self._state[(component, platform)] = message
            self._live.update(self._table())

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
    """A foldable section in GitHub Actions logs; a plain heading elsewhere."""
    if os.environ.get("GITHUB_ACTIONS"):
        print(f"::group::{title}", flush=True)
        try:
            yield
        finally:
            print("::endgroup::", flush=True)
    else:
        yield


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
