"""Polling helpers for tests that wait on another process or thread."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``predicate`` until it holds; fail after ``timeout`` seconds."""

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.02)


def settled(read: Callable[[], Any], quiet: float = 0.5, timeout: float = 10.0) -> Any:
    """The value of ``read()`` once it has stayed the same for ``quiet`` seconds."""

    deadline = time.monotonic() + timeout
    value = read()
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = read()
        if now == value:
            return value
        value = now
    raise AssertionError(f"value still changing after {timeout} s")
