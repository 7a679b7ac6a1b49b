"""Packaging promises: three import packages, a light client, a pinned public surface."""

from __future__ import annotations

import json
import subprocess
import sys

import replaybuf
import replaybuf.errors


def _modules_after_import(module: str) -> set[str]:
    code = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return set(json.loads(out.stdout))


def test_importing_the_client_loads_neither_numba_nor_lmdb():
    loaded = _modules_after_import("replaybuf_client")
    assert "numba" not in loaded
    assert "lmdb" not in loaded
    assert "torch" not in loaded


def test_importing_the_engine_package_is_lazy():
    loaded = _modules_after_import("replaybuf")
    assert "numba" not in loaded and "lmdb" not in loaded


def test_three_import_packages_come_from_the_three_folders():
    import replaybuf_client
    import replaybuf_server

    assert replaybuf.__file__.endswith("replaybuf/__init__.py")
    assert replaybuf_server.__file__.endswith("server/__init__.py")
    assert replaybuf_client.__file__.endswith("clients/__init__.py")


def test_engine_public_names_are_pinned():
    assert set(replaybuf.__all__) == {
        "__version__",
        "AppendResult",
        "Log",
        "LogRecord",
        "FileLog",
        "FileLogConfig",
        "verify_log",
        "VerifyReport",
        "SumTree",
        "PrioritizedSelector",
        "UniformSelector",
        "FifoSelector",
        "LifoSelector",
        "LowestPrioritySelector",
        "make_selector",
        "HighestPrioritySelector",
        "SampleResult",
        "Selector",
        "selector_from_state",
        "SELECTOR_KINDS",
        "RateLimiter",
        "RateLimiterConfig",
        "FieldSpec",
        "Engine",
        "EngineConfig",
        "TableConfig",
        "SelectorConfig",
        "Lineage",
        "Sample",
        "SampleInfo",
        "TableInfo",
        "AppendAck",
        "UpdateResult",
        "EvictResult",
    }
    for name in replaybuf.__all__:
        assert getattr(replaybuf, name) is not None


def test_every_error_declares_a_grpc_status_name():
    valid = {
        "INVALID_ARGUMENT", "NOT_FOUND", "ALREADY_EXISTS", "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION", "DEADLINE_EXCEEDED", "DATA_LOSS", "PERMISSION_DENIED",
        "UNAUTHENTICATED", "UNAVAILABLE", "UNIMPLEMENTED", "INTERNAL",
    }
    for cls in replaybuf.errors.all_error_classes():
        assert cls.grpc_status in valid, cls
        assert replaybuf.errors.error_class_for(cls.__name__) is cls
    assert replaybuf.errors.error_class_for("NoSuchError", "NOT_FOUND") is replaybuf.errors.NotFoundError
    assert replaybuf.errors.error_class_for(None, None) is replaybuf.errors.ReplayError
