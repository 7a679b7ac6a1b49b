from __future__ import annotations

import numpy as np
import pytest

from replaybuf.errors import InvalidArgumentError
from replaybuf.rate_limiter import RateLimiterConfig
from replaybuf.table_config import SelectorConfig, TableConfig, parse_signature
from replaybuf.tensors import FieldSpec
from replaybuf.v1 import table_pb2

SIG = {"obs": (np.float32, (3,)), "action": np.int64, "reward": np.float32, "done": np.bool_}


def test_signature_mapping_and_sequence_forms_are_equivalent():
    seq = (
        FieldSpec("obs", np.float32, (3,)),
        ("action", np.int64),
        ("reward", np.float32, ()),
        FieldSpec("done", np.bool_),
    )
    assert parse_signature(SIG) == parse_signature(seq)
    assert TableConfig("t", SIG, 10).signature == parse_signature(seq)


def test_defaults_are_per_sampler_fifo_remover_and_min_size_one():
    cfg = TableConfig("t", SIG, 10)
    assert cfg.sampler == SelectorConfig("prioritized", alpha=0.6)
    assert cfg.remover.kind == "fifo"
    assert cfg.rate_limiter.min_size_to_sample == 1
    assert cfg.max_times_sampled == 0 and cfg.has_reward


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "1bad"}, r"table name '1bad' is invalid"),
        ({"name": ""}, r"table name '' is invalid"),
        ({"capacity": 0}, r"capacity of table 't' is 0; it must be an integer in \[1,"),
        ({"capacity": 2.5}, r"capacity of table 't' is 2.5"),
        ({"signature": {}}, r"signature is empty"),
        ({"signature": [("x", np.float32), ("x", np.int32)]}, r"field 'x' twice"),
        ({"signature": {"x": np.complex64}}, r"complex64 is not supported"),
        ({"signature": "obs"}, r"signature is a str"),
        ({"sampler": SelectorConfig("lowest_priority")}, r"sampler kind 'lowest_priority'.*"
         r"use one of \('prioritized', 'uniform', 'fifo', 'lifo'\)"),
        ({"remover": SelectorConfig("uniform")}, r"remover kind 'uniform'.*"
         r"\('fifo', 'lowest_priority'\)"),
        ({"max_times_sampled": -1}, r"max_times_sampled of table 't' is -1; .*>= 0"),
        ({"rate_limiter": 5}, r"rate_limiter of table 't' is 5; pass a RateLimiterConfig"),
        ({"reward_field": "r"}, r"reward_field 'r' of table 't' is not in the signature"),
        ({"reward_field": "obs"}, r"reward_field 'obs'.*shape \(3,\); a reward must be a scalar"),
    ],
)
def test_invalid_configs_name_the_bad_value_and_the_fix(kwargs, match):
    base = {"name": "t", "signature": SIG, "capacity": 10}
    base.update(kwargs)
    with pytest.raises(InvalidArgumentError, match=match):
        TableConfig(**base)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "random"}, r"selector kind 'random' is unknown; use one of"),
        ({"alpha": -0.1}, r"alpha is -0.1; it must be a finite number >= 0"),
        ({"alpha": float("nan")}, r"alpha is nan"),
        ({"with_replacement": "yes"}, r"with_replacement is 'yes'; pass True or False"),
    ],
)
def test_invalid_selector_configs_are_rejected(kwargs, match):
    with pytest.raises(InvalidArgumentError, match=match):
        SelectorConfig(**kwargs)


def test_table_without_reward_field_is_allowed_and_refuses_nothing_at_config_time():
    cfg = TableConfig("t", {"obs": np.float32}, 4)
    assert not cfg.has_reward


@pytest.mark.parametrize(
    "cfg",
    [
        TableConfig("t", SIG, 10),
        TableConfig(
            "a.b-c_9", SIG, 2**20,
            sampler=SelectorConfig("uniform", with_replacement=False),
            remover=SelectorConfig("lowest_priority"),
            max_times_sampled=3,
            rate_limiter=RateLimiterConfig.sample_to_insert_ratio(4.0, 100, 50.0),
            description="with everything",
        ),
        TableConfig("p", {"x": (np.uint8, (2, 2)), "r": np.int32}, 5, reward_field="r",
                    sampler=SelectorConfig("prioritized", alpha=0.0)),
        TableConfig("f", {"x": np.float16}, 5, sampler=SelectorConfig("lifo")),
    ],
)
def test_proto_round_trip_is_lossless(cfg):
    msg = cfg.to_proto()
    back = TableConfig.from_proto(table_pb2.TableConfig.FromString(msg.SerializeToString()))
    assert back == cfg


def test_from_proto_fills_defaults_for_unset_fields():
    msg = table_pb2.TableConfig(name="t", capacity=3,
                                signature=[FieldSpec("x", np.float32).to_proto()])
    cfg = TableConfig.from_proto(msg)
    assert cfg == TableConfig("t", {"x": np.float32}, 3)


def test_from_proto_rejects_an_invalid_config():
    with pytest.raises(InvalidArgumentError, match="capacity of table 't' is 0"):
        TableConfig.from_proto(
            table_pb2.TableConfig(name="t", signature=[FieldSpec("x", np.float32).to_proto()])
        )
