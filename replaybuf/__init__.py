"""replaybuf: an event-sourced experience replay engine.

Heavy modules (numba, lmdb) load lazily on first attribute access, so that the client library,
which imports `replaybuf.errors` and the generated protobuf modules, starts fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "AppendResult": "replaybuf.log",
    "Log": "replaybuf.log",
    "LogRecord": "replaybuf.log",
    "FileLog": "replaybuf.file_log",
    "FileLogConfig": "replaybuf.file_log",
    "verify_log": "replaybuf.file_log",
    "VerifyReport": "replaybuf.file_log",
    "SumTree": "replaybuf.sum_tree",
    "PrioritizedSelector": "replaybuf.selectors",
    "UniformSelector": "replaybuf.selectors",
    "FifoSelector": "replaybuf.selectors",
    "LifoSelector": "replaybuf.selectors",
    "LowestPrioritySelector": "replaybuf.selectors",
    "make_selector": "replaybuf.selectors",
    "HighestPrioritySelector": "replaybuf.selectors",
    "SampleResult": "replaybuf.selectors",
    "Selector": "replaybuf.selectors",
    "selector_from_state": "replaybuf.selectors",
    "SELECTOR_KINDS": "replaybuf.selectors",
    "RateLimiter": "replaybuf.rate_limiter",
    "RateLimiterConfig": "replaybuf.rate_limiter",
    "FieldSpec": "replaybuf.tensors",
    "Engine": "replaybuf.engine",
    "EngineConfig": "replaybuf.engine_config",
    "TableConfig": "replaybuf.table_config",
    "SelectorConfig": "replaybuf.table_config",
    "Lineage": "replaybuf.lineage",
    "Sample": "replaybuf.results",
    "SampleInfo": "replaybuf.results",
    "TableInfo": "replaybuf.results",
    "AppendAck": "replaybuf.results",
    "UpdateResult": "replaybuf.results",
    "EvictResult": "replaybuf.results",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'replaybuf' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
