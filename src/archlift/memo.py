"""``Once``: a value computed once per key, by whichever thread asks first, for every thread."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from .errors import ArchliftError

T = TypeVar("T")


class Once(Generic[T]):
    """``get(key, make)`` runs ``make()`` the first time ``key`` is asked for and gives its result to
    every later call; an ``ArchliftError`` it raised is kept and raised again the same way, so a
    failing fetch or patch is tried once per run, not once per component. Thread-safe: callers of
    other keys do not wait."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._done: dict[str, T | ArchliftError] = {}

    def get(self, key: str, make: Callable[[], T]) -> T:
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._done:
                try:
                    self._done[key] = make()
                except ArchliftError as e:
                    self._done[key] = e
            found = self._done[key]
        if isinstance(found, ArchliftError):
            raise found
        return found
