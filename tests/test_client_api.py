"""The client's public surface and its pure conversions (no server needed)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import replaybuf.errors
import replaybuf_client
from replaybuf.errors import InvalidArgumentError, SignatureMismatchError
from replaybuf.tensors import FieldSpec
from replaybuf.v1 import events_pb2, table_pb2
from replaybuf_client import Lineage, RetryPolicy, TlsConfig
from replaybuf_client._convert import (
    coerce_columns,
    eviction_reason,
    feedback_source,
    ids_array,
    table_config_proto,
)


def test_public_names_are_pinned():
    assert set(replaybuf_client.__all__) == {
        "ReplayClient", "Writer", "Sampler", "Subscription",
        "RetryPolicy", "TlsConfig", "DEFAULT_TIMEOUT", "FieldSpec",
        "AppendResult", "Sample", "SampleInfo", "Lineage", "TableInfo", "RateLimiterInfo",
        "UpdateResult", "EvictResult", "ItemLineage", "LogEvent", "FoundItems", "WriterStats",
        "PendingReview", "LabelResult", "DiffResult",
        # every error class a call can raise, so callers catch them from one import
        *(cls.__name__ for cls in replaybuf.errors.all_error_classes()),
    }
    for name in replaybuf_client.__all__:
        assert getattr(replaybuf_client, name) is not None


def test_the_client_errors_are_the_engines_classes():
    import replaybuf.errors

    assert replaybuf_client.TableNotFoundError is replaybuf.errors.TableNotFoundError


def test_creating_a_client_and_decoding_samples_loads_no_torch_numba_or_lmdb():
    code = (
        "import json, sys, numpy as np\n"
        "from replaybuf_client import ReplayClient\n"
        "from replaybuf_client._convert import decode_sample\n"
        "from replaybuf.v1 import service_pb2\n"
        "from replaybuf.tensors import to_batch\n"
        "c = ReplayClient('127.0.0.1:1')\n"
        "decode_sample(service_pb2.SampleResponse(data=to_batch({'x': np.zeros((2, 3))})))\n"
        "c.close()\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    loaded = {m.split(".")[0] for m in json.loads(out.stdout)}
    assert not loaded & {"torch", "numba", "lmdb"}


def test_public_docstrings_state_blocking_thread_and_fork_behaviour():
    for cls in (replaybuf_client.ReplayClient, replaybuf_client.Writer, replaybuf_client.Sampler,
                replaybuf_client.Subscription):
        doc = cls.__doc__ or ""
        assert "Example" in doc, cls
        assert "fork" in doc.lower() and "thread" in doc.lower() and "block" in doc.lower(), cls


# -- table configs ---------------------------------------------------------------------------


def test_a_friendly_table_config_becomes_the_proto():
    proto = table_config_proto(
        "replay",
        {"obs": (np.float32, (17,)), "reward": np.float32, "done": (bool, ())},
        1000,
        sampler="uniform",
        remover="lowest_priority",
        max_times_sampled=3,
        min_size_to_sample=64,
        samples_per_insert=4.0,
        error_buffer=100.0,
        description="test",
    )
    assert proto.name == "replay" and proto.capacity == 1000
    assert [(s.name, list(s.shape)) for s in proto.signature] == [("obs", [17]), ("reward", []), ("done", [])]
    assert proto.sampler.kind == table_pb2.SELECTOR_KIND_UNIFORM
    assert proto.remover.kind == table_pb2.SELECTOR_KIND_LOWEST_PRIORITY
    assert proto.rate_limiter.min_size_to_sample == 64 and proto.rate_limiter.samples_per_insert == 4.0
    default = table_config_proto(name="r", signature={"x": np.int64}, capacity=5)
    assert default.sampler.kind == table_pb2.SELECTOR_KIND_PRIORITIZED and default.sampler.alpha == 0.6


def test_a_table_config_object_with_to_proto_is_used_as_is():
    from replaybuf.table_config import SelectorConfig, TableConfig

    cfg = TableConfig(name="r", signature={"obs": (np.float32, (4,))}, capacity=10,
                      sampler=SelectorConfig("prioritized", alpha=0.9))
    assert table_config_proto(cfg) == cfg.to_proto()
    assert table_config_proto(cfg.to_proto()) == cfg.to_proto()
    assert table_config_proto({"name": "r", "signature": [FieldSpec("x", np.int8)], "capacity": 2}).name == "r"


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        (("r",), {"capacity": 3}, "needs signature="),
        (("r", {"x": "notadtype"}, 3), {}, "notadtype"),
        (("r", {"x": np.int8}, 3), {"sampler": "random"}, "kind 'random' is unknown"),
        (("r", {"x": np.int8}, 3), {"samples_per_insert": 2.0}, "needs error_buffer"),
        ((3.5,), {}, "float is not a TableConfig"),
        ((table_pb2.TableConfig(), {"x": np.int8}), {}, "not both"),
    ],
)
def test_bad_table_configs_are_rejected_with_the_fix(args, kwargs, match):
    with pytest.raises(InvalidArgumentError, match=match):
        table_config_proto(*args, **kwargs)


# -- small conversions -----------------------------------------------------------------------


def test_lineage_broadcasts_scalars_and_checks_lengths():
    proto = Lineage(episode_id=np.uint64(3), step=range(3), request_id=["a", "b", "c"],
                    model_version=7, source="actor-1").to_proto(3)
    assert list(proto.episode_id) == [3] and list(proto.step) == [0, 1, 2]
    assert list(proto.request_id) == ["a", "b", "c"] and list(proto.source) == ["actor-1"]
    with pytest.raises(InvalidArgumentError, match="lineage.step has 2 values for a batch of 3"):
        Lineage(step=[0, 1]).to_proto(3)
    with pytest.raises(InvalidArgumentError, match="unknown key"):
        Lineage.coerce({"episode": 1})
    assert Lineage(step=[0, 1, 2, 3], source="s").slice(1, 3).step == [1, 2]


def test_lineage_columns_decode_to_numpy_and_tuples_and_absent_ones_to_none():
    lin = Lineage.from_proto(table_pb2.Lineage(episode_id=[7, 7], source=["a", "b"]))
    assert lin.episode_id.dtype == np.uint64 and lin.episode_id.tolist() == [7, 7]
    assert lin.source == ("a", "b")
    assert lin.request_id is None and lin.step is None and lin.model_version is None


def test_enum_names_map_to_codes_and_unknown_names_list_the_choices():
    assert feedback_source("human") == events_pb2.FEEDBACK_SOURCE_HUMAN
    assert eviction_reason("invalid_data") == events_pb2.EVICTION_REASON_INVALID_DATA
    assert eviction_reason("EVICTION_REASON_AGE") == events_pb2.EVICTION_REASON_AGE
    with pytest.raises(InvalidArgumentError, match="manual"):
        eviction_reason("because")


def test_ids_must_be_non_negative_integers():
    assert ids_array([1, 2]).dtype == np.uint64
    assert ids_array(5).tolist() == [5]
    with pytest.raises(InvalidArgumentError, match="negative"):
        ids_array([-1])
    with pytest.raises(InvalidArgumentError, match="integers"):
        ids_array([1.5])


def test_columns_are_cast_only_within_the_same_kind():
    sig = {"x": FieldSpec("x", np.float32), "a": FieldSpec("a", np.int32)}
    out = coerce_columns({"x": np.zeros(2), "a": np.zeros(2, np.int64)}, sig, table="t")
    assert out["x"].dtype == np.float32 and out["a"].dtype == np.int32
    with pytest.raises(SignatureMismatchError, match=r"astype\(np.int32\)"):
        coerce_columns({"a": np.zeros(2, np.float32)}, sig, table="t")


def test_retry_policy_validates_and_backs_off_with_jitter_within_bounds():
    policy = RetryPolicy(initial_backoff=0.1, max_backoff=0.5, multiplier=2)
    for retry, bound in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.5), (10, 0.5)]:
        waits = [policy.backoff(retry) for _ in range(50)]
        assert all(bound / 2 <= w <= bound for w in waits)
        assert len(set(waits)) > 1
    with pytest.raises(InvalidArgumentError, match="max_attempts"):
        RetryPolicy(max_attempts=0)


def test_tls_needs_both_cert_and_key_for_mutual_tls():
    with pytest.raises(InvalidArgumentError, match="both certificate_chain and private_key"):
        TlsConfig(certificate_chain="c.pem")
