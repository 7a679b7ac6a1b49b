"""The ``timeout`` sentinel that means "use the client's default deadline"."""

from __future__ import annotations

from typing import Any, Final

__all__ = ["DEFAULT_TIMEOUT"]


class _DefaultTimeout:
    def __repr__(self) -> str:
        return "DEFAULT_TIMEOUT"


#: Sentinel for a call's ``timeout``: use the client's ``timeout`` (None waits forever).
DEFAULT_TIMEOUT: Final[Any] = _DefaultTimeout()
