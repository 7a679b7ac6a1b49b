"""replaybuf_client: the Python client library for learners and actors.

Imports neither numba nor lmdb, so learners start fast; torch is imported lazily.
"""

from __future__ import annotations

__all__: list[str] = []
