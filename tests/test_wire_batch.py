"""`replaybuf.wire_batch` (zero-copy ColumnarBatch decoding) and the byte-identical event splice
(`events.encode_event_with_batch`) that lets the server log a received batch with one copy."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replaybuf.engine import Engine, EngineConfig
from replaybuf.errors import InvalidArgumentError
from replaybuf.file_log import FileLog, FileLogConfig
from replaybuf.frame import RecordParts
from replaybuf.events import (
    EVENT_VERSION, decode_event, encode_event, encode_event_with_batch,
)
from replaybuf.tensors import from_batch, to_batch
from replaybuf.v1 import events_pb2, service_pb2, table_pb2
from replaybuf.wire_batch import EncodedBatch, batch_parts, split_message
from replaybuf_client._wire import encode_append
from _engine_helpers import SIG, batch

DTYPES = [np.float32, np.float64, np.int64, np.uint8, np.bool_, np.int32]


@st.composite
def columns(draw):
    n = draw(st.integers(1, 5))
    out = {}
    for k in range(draw(st.integers(1, 4))):
        dt = np.dtype(draw(st.sampled_from(DTYPES)))
        shape = tuple(draw(st.lists(st.integers(0, 3), max_size=2)))
        size = n * int(np.prod(shape, dtype=np.int64))
        raw = draw(st.binary(min_size=size * dt.itemsize, max_size=size * dt.itemsize))
        arr = np.frombuffer(raw, np.uint8).view(dt) if size else np.empty(0, dt)
        out[f"f{k}"] = arr.reshape((n, *shape))
    return out


@st.composite
def appended_events(draw):
    cols = draw(columns())
    n = len(next(iter(cols.values())))
    ev = events_pb2.Event(version=EVENT_VERSION, timestamp_ms=draw(st.integers(0, 2**40)))
    body = ev.items_appended
    body.table = draw(st.text(max_size=5))
    body.item_ids.extend(range(7, 7 + n))
    if draw(st.booleans()):
        body.priorities.extend(draw(st.lists(st.floats(0, 10), min_size=n, max_size=n)))
    if draw(st.booleans()):
        body.lineage.request_id.extend(draw(st.lists(st.text(max_size=4), min_size=n,
                                                     max_size=n)))
        body.lineage.episode_id.extend([3] * n)
    return ev, cols


@settings(max_examples=150, deadline=None)
@given(appended_events(), st.binary(max_size=3), st.binary(max_size=3))
def test_the_spliced_event_is_byte_identical_to_protobufs(case, before, after):
    ev, cols = case
    full = events_pb2.Event()
    full.CopyFrom(ev)
    to_batch(cols, out=full.items_appended.data)
    data = full.items_appended.data.SerializeToString(deterministic=True)
    # the batch sits inside other bytes, as in a received request
    raw = before + data + after
    wire = EncodedBatch.decode(raw, (len(before), len(data)))
    assert bytes(encode_event_with_batch(ev, wire)) == encode_event(full)
    for name, arr in from_batch(full.items_appended.data).items():
        np.testing.assert_array_equal(wire.columns[name], arr)
        assert wire.columns[name].dtype == arr.dtype and not wire.columns[name].flags.writeable


def test_an_event_that_already_has_data_or_is_no_append_is_refused():
    cols = {"x": np.arange(3, dtype=np.int64)}
    data = to_batch(cols).SerializeToString()
    wire = EncodedBatch.decode(data, (0, len(data)))
    ev = events_pb2.Event(version=EVENT_VERSION)
    to_batch(cols, out=ev.items_appended.data)
    with pytest.raises(InvalidArgumentError, match="already has data"):
        encode_event_with_batch(ev, wire)
    with pytest.raises(InvalidArgumentError, match="needs an ItemsAppended"):
        encode_event_with_batch(events_pb2.Event(version=EVENT_VERSION), wire)


def test_a_column_whose_bytes_do_not_fit_its_shape_is_named():
    b = to_batch({"obs": np.zeros((2, 3), np.float32)})
    b.columns[0].tensor.data = b.columns[0].tensor.data[:-4]
    raw = b.SerializeToString()
    with pytest.raises(InvalidArgumentError, match="field 'obs': data has 20 bytes"):
        EncodedBatch.decode(raw, (0, len(raw)))


def test_split_message_keeps_every_other_field():
    req = service_pb2.AppendRequest(table="t", priorities=[1.0, 2.0], producer_seq=3)
    to_batch({"x": np.arange(2, dtype=np.int64)}, out=req.data)
    raw = req.SerializeToString()
    span, rest = split_message(raw, 2, "AppendRequest")
    small = service_pb2.AppendRequest.FromString(rest)
    assert (small.table, list(small.priorities), small.producer_seq) == ("t", [1.0, 2.0], 3)
    assert not small.HasField("data")
    assert raw[span[0]:span[0] + span[1]] == req.data.SerializeToString()


def test_an_engine_logs_the_same_bytes_for_a_wire_batch_as_for_arrays(tmp_path):
    from replaybuf.table_config import TableConfig

    logged = []
    for k, form in enumerate(("arrays", "wire")):
        with Engine(tmp_path / form, EngineConfig.for_tests(seed=0)) as e:
            e.create_table(TableConfig("t", SIG, capacity=10))
            cols = batch([1, 2, 3])
            if form == "wire":
                raw = to_batch(cols).SerializeToString()
                data = EncodedBatch.decode(raw, (0, len(raw)))
            else:
                data = cols
            ack = e.append("t", data, priorities=[1.0, 2.0, 3.0],
                           lineage={"episode_id": 4, "timestamp_ms": 5})
            (rec,) = list(e.log.read(ack.last_lsn, ack.last_lsn))
            ev = decode_event(rec.payload)
            ev.timestamp_ms = 0  # the append time differs
            logged.append(encode_event(ev))
            s = e.sample("t", 8, seed=1)  # the RAM copy holds the data too
            assert set(s.data["tag"].tolist()) <= {1, 2, 3}
            np.testing.assert_array_equal(s.data["obs"][:, 0], s.data["tag"])
    assert logged[0] == logged[1]


@settings(max_examples=150, deadline=None)
@given(columns(), st.booleans())
def test_batch_parts_join_to_protobufs_serialization(cols, strided):
    if strided:  # non-contiguous and big-endian inputs are converted, as to_batch does
        cols = {k: (v[::-1] if v.dtype.itemsize == 1 else v.astype(v.dtype.newbyteorder(">")))
                for k, v in cols.items()}
    parts, size = batch_parts(cols)
    raw = b"".join(parts)
    assert raw == to_batch(cols).SerializeToString()
    assert size == len(raw)


@settings(max_examples=150, deadline=None)
@given(columns(), st.data())
def test_encoded_append_request_is_byte_identical_to_protobufs(cols, data):
    n = len(next(iter(cols.values())))
    table = data.draw(st.text(max_size=6))
    prio = data.draw(st.none() | st.lists(st.floats(0, 10), min_size=n, max_size=n))
    lineage = None
    if data.draw(st.booleans()):
        lineage = table_pb2.Lineage()
        lineage.episode_id.extend(data.draw(st.lists(st.integers(0, 2**40), min_size=n,
                                                     max_size=n)))
        lineage.request_id.extend(data.draw(st.lists(st.text(max_size=3), min_size=n,
                                                     max_size=n)))
    pid = data.draw(st.binary(max_size=16))
    seq = data.draw(st.integers(0, 2**64 - 1))
    raw = encode_append(table, cols, priorities=prio, lineage=lineage, producer_id=pid,
                        producer_seq=seq)
    want = service_pb2.AppendRequest(table=table, data=to_batch(cols), producer_id=pid,
                                     producer_seq=seq)
    if prio:
        want.priorities.extend(prio)
    if lineage is not None:
        want.lineage.CopyFrom(lineage)
    assert raw == want.SerializeToString(deterministic=True)
    back = service_pb2.AppendRequest.FromString(raw)
    for name, arr in from_batch(back.data).items():
        np.testing.assert_array_equal(arr, cols[name])


@pytest.mark.parametrize("size", [10, 300_000])  # a joined frame, and one written by writev
def test_a_record_given_as_parts_is_logged_as_its_joined_bytes(tmp_path, size):
    rng = np.random.default_rng(size)
    pieces = [rng.bytes(size), rng.bytes(7), rng.bytes(size // 3 + 1)]
    parts = RecordParts([pieces[0], memoryview(pieces[1]), memoryview(pieces[2])[1:]])
    joined = pieces[0] + pieces[1] + pieces[2][1:]
    assert len(parts) == len(joined) and bytes(parts) == joined
    with FileLog(tmp_path / "log", FileLogConfig(fsync="none")) as log:
        ack = log.append([b"before", parts, joined])
        assert [r.payload for r in log.read(ack.first_lsn, ack.last_lsn)] == [
            b"before", joined, joined]
    with FileLog(tmp_path / "log", FileLogConfig(fsync="none")) as log:  # recovery checks CRCs
        assert [r.payload for r in log.read(1, 3)] == [b"before", joined, joined]
