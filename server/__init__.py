"""replaybuf_server: the gRPC service around the replaybuf engine (served in a later issue)."""

from __future__ import annotations

__all__: list[str] = []
