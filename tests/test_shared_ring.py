"""SampleStream through a shared-memory ring (`replaybuf.shared_ring`) against a real server.

A batch that comes through the ring must equal the same draw sent in the message, byte for
byte; a slow learner's batches must never be overwritten; a ring the server cannot or must
not open falls back to the message, and a malformed offer is refused naming the field.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from replaybuf.errors import InvalidArgumentError
from replaybuf.shared_ring import RING_DIR, RING_PREFIX, ClientRing, ServerRing, slot_bytes_for
from replaybuf.tensors import FieldSpec
from replaybuf.v1 import service_pb2
from replaybuf_client import ReplayClient
from replaybuf_client._convert import decode_stream_response
from replaybuf_client.client import _is_loopback

pytestmark = pytest.mark.skipif(not os.path.isdir(RING_DIR), reason="no /dev/shm on this host")

# 2 x 12 KiB per item: a batch of 64 is 1.5 MiB, above the automatic threshold.
IMAGE = {"obs": ("uint8", (64, 48, 4)), "next_obs": ("uint8", (64, 48, 4)),
         "action": ("int64", ()), "reward": ("float32", ())}
# Small rows: the table keeps them in one record array, so columns come back strided.
SMALL = {"obs": ("float32", (3,)), "action": ("int16", ()), "done": ("bool", ())}


def _columns(sig: dict, n: int, start: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(start)
    out = {}
    for name, (dtype, shape) in sig.items():
        a = rng.integers(0, 100, (n, *shape)).astype(dtype)
        if name == "action":
            a = np.arange(start, start + n).astype(dtype)
        out[name] = a
    return out


def _rings_of_this_process() -> list[str]:
    return sorted(f for f in os.listdir(RING_DIR) if f.startswith(f"{RING_PREFIX}{os.getpid()}-"))


@pytest.fixture
def image_client(replay_server):
    with ReplayClient(replay_server.address, timeout=20) as c:
        c.create_table("img", IMAGE, capacity=1000)
        for start in range(0, 512, 128):
            c.append("img", _columns(IMAGE, 128, start))
        yield c


def _draw(client: ReplayClient, table: str, n: int, **kw) -> tuple[list, int]:
    with client.sampler(table, 64, seed=7, num_batches=n, prefetch=2, **kw) as batches:
        got = list(batches)
        return got, batches.shared_batches


def _assert_same(a: list, b: list) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.info.item_ids, y.info.item_ids)
        np.testing.assert_array_equal(x.info.weights, y.info.weights)
        assert x.info.seed == y.info.seed
        assert x.data.keys() == y.data.keys()
        for name in x.data:
            assert x.data[name].dtype == y.data[name].dtype
            np.testing.assert_array_equal(x.data[name], y.data[name])


def test_batches_through_the_ring_equal_the_same_draws_in_messages(image_client):
    in_messages, shared = _draw(image_client, "img", 6, shared_memory=False)
    assert shared == 0
    through_ring, shared = _draw(image_client, "img", 6)  # automatic: loopback and 1.5 MiB
    assert shared == 6
    _assert_same(in_messages, through_ring)
    for batch in through_ring:  # the client's own memory, not the ring's
        for arr in batch.data.values():
            assert arr.flags.writeable and arr.flags.c_contiguous
    assert _rings_of_this_process() == []  # unlinked once the server answered


def test_strided_record_columns_come_out_equal(replay_server):
    with ReplayClient(replay_server.address, timeout=20) as c:
        c.create_table("small", SMALL, capacity=1000)
        c.append("small", _columns(SMALL, 300, 0))
        in_messages, shared = _draw(c, "small", 3, shared_memory=False)
        assert shared == 0
        forced, shared = _draw(c, "small", 3, shared_memory=True)
        assert shared == 3
        _assert_same(in_messages, forced)
        automatic, shared = _draw(c, "small", 3)  # 1.5 KB batches: not worth a ring
        assert shared == 0


def test_a_slow_learner_keeping_every_batch_sees_none_overwritten(image_client):
    kept = []
    with image_client.sampler("img", 64, seed=100, num_batches=12, prefetch=3) as batches:
        for batch in batches:
            kept.append(batch)  # held: their buffers must not be reused
            time.sleep(0.02)  # the server fills the window meanwhile
        assert batches.shared_batches == 12
    for batch in kept:  # each equals a replay of its draw from the log's LSN
        again = image_client.sample("img", 64, seed=batch.info.seed, at_lsn=batch.info.lsn)
        np.testing.assert_array_equal(batch.info.item_ids, again.info.item_ids)
        for name in batch.data:
            np.testing.assert_array_equal(batch.data[name], again.data[name])


def test_fields_subset_through_the_ring(image_client):
    with image_client.sampler("img", 64, seed=3, num_batches=2, fields=["obs", "reward"],
                              shared_memory=True) as batches:
        got = list(batches)
        assert batches.shared_batches == 2
    assert all(set(b.data) == {"obs", "reward"} for b in got)
    ref = image_client.sample("img", 64, seed=3, at_lsn=got[0].info.lsn)
    np.testing.assert_array_equal(got[0].data["obs"], ref.data["obs"])
    np.testing.assert_array_equal(got[0].data["reward"], ref.data["reward"])


# -- the server's checks, through the raw stream ------------------------------------------------


def _first_response(client: ReplayClient, ring: service_pb2.SharedRing, prefetch: int = 2):
    request = service_pb2.SampleRequest(table="img", batch_size=64, seed=1, num_batches=1,
                                        prefetch=prefetch, shared_ring=ring)
    call = client._sample_stream_raw(iter([service_pb2.SampleStreamRequest(request=request)]),
                                     timeout=20)
    return list(call)


def test_a_ring_the_server_cannot_open_falls_back_to_the_message(image_client, tmp_path):
    missing = service_pb2.SharedRing(path=f"{RING_DIR}/{RING_PREFIX}nosuchring0", slot_bytes=4096,
                                     slots=2)
    (raw,) = _first_response(image_client, missing)
    batch, shared = decode_stream_response(raw, None)
    assert not shared and batch.data["obs"].shape == (64, 64, 48, 4)

    target = tmp_path / "elsewhere"
    target.write_bytes(b"\0" * 8192)
    link = Path(RING_DIR) / f"{RING_PREFIX}{os.getpid()}-symlinktest"
    link.symlink_to(target)
    try:
        ring = service_pb2.SharedRing(path=str(link), slot_bytes=4096, slots=2)
        (raw,) = _first_response(image_client, ring)
        assert not decode_stream_response(raw, None)[1]
        assert target.read_bytes() == b"\0" * 8192  # never written through the link
    finally:
        link.unlink()


def test_a_batch_larger_than_the_slot_goes_in_the_message(image_client):
    ring = ClientRing.create(4096, 2)
    assert ring is not None
    try:
        (raw,) = _first_response(image_client, ring.proto())
        batch, shared = decode_stream_response(raw, ring)
        assert not shared and batch.data["obs"].shape == (64, 64, 48, 4)
    finally:
        ring.close()
    assert not os.path.exists(ring.path)


@pytest.mark.parametrize("change, field", [
    ({"path": "/etc/passwd"}, "shared_ring.path"),
    ({"path": f"{RING_DIR}/other-name-12345678"}, "shared_ring.path"),
    ({"slot_bytes": 1000}, "shared_ring.slot_bytes"),
    ({"slots": 1}, "shared_ring.slots"),
    ({"size": 4096 * 3}, "slots * slot_bytes"),
])
def test_a_malformed_offer_is_invalid_argument(image_client, change, field):
    ring = ClientRing.create(4096, 2)
    assert ring is not None
    try:
        offer = ring.proto()
        if "size" in change:
            os.truncate(ring.path, change["size"])
        for key in ("path", "slot_bytes", "slots"):
            if key in change:
                setattr(offer, key, change[key])
        with pytest.raises(grpc.RpcError) as err:
            _first_response(image_client, offer)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in err.value.details()
    finally:
        ring.close()
    # the server keeps serving
    assert image_client.describe_table("img").size == 512


# -- pieces ---------------------------------------------------------------------------------


def test_server_ring_describes_only_arrays_inside_the_slot(tmp_path):
    ring = ClientRing.create(8192, 2)
    assert ring is not None
    try:
        server = ServerRing.open(ring.proto(), prefetch=2)
        assert server is not None
        slot1 = server.slot(3)  # batch 3 -> slot 1
        col = slot1[64:64 + 40].view(np.float32).reshape(10)
        col[:] = np.arange(10)
        shared = server.describe(3, {"x": col})
        assert shared is not None and shared.slot == 1 and shared.columns[0].offset == 64
        out = ring.read(shared)
        np.testing.assert_array_equal(out["x"], np.arange(10, dtype=np.float32))
        assert server.describe(3, {"x": np.zeros(4)}) is None  # elsewhere: not shared
        assert server.describe(2, {"x": col}) is None  # in slot 1, not batch 2's slot 0
        bad = service_pb2.SharedBatch(slot=1)
        bad.columns.add(name="x", dtype=shared.columns[0].dtype, shape=[10], offset=8190,
                        strides=[4])
        with pytest.raises(InvalidArgumentError, match="past the slot"):
            ring.read(bad)
        server.close()
    finally:
        ring.close()


def test_slot_size_covers_the_gathered_layout():
    specs = {"obs": FieldSpec("obs", np.uint8, (84, 84, 4)), "r": FieldSpec("r", np.float32)}
    size = slot_bytes_for(specs, 256)
    assert size % 4096 == 0
    assert size >= 256 * 84 * 84 * 4 + 256 * 4 + 2 * 64


@pytest.mark.parametrize("address, local", [
    ("127.0.0.1:5000", True), ("localhost:1", True), ("[::1]:80", True), ("unix:/tmp/s", True),
    ("ipv4:127.0.0.2:9", True), ("10.0.0.1:5000", False), ("replay.example.com:443", False),
    ("dns:///replay:50051", False),
])
def test_loopback_addresses(address, local):
    assert _is_loopback(address) is local


def test_torch_batches_through_the_ring_wrap_the_copied_arrays(image_client):
    torch = pytest.importorskip("torch")
    in_messages, _ = _draw(image_client, "img", 6, shared_memory=False)
    with image_client.sampler("img", 64, seed=7, num_batches=6, prefetch=2,
                              as_torch=True) as batches:
        kept = list(batches)  # all held: their pooled buffers must not be reused meanwhile
        assert batches.shared_batches == 6
    for ref, batch in zip(in_messages, kept):
        for name, tensor in batch.data.items():
            assert isinstance(tensor, torch.Tensor)
            np.testing.assert_array_equal(tensor.numpy(), ref.data[name])
    kept[0].data["obs"].zero_()  # writable, and aliasing nothing else
    np.testing.assert_array_equal(kept[1].data["obs"].numpy(), in_messages[1].data["obs"])


def test_the_server_counts_batches_written_into_rings(make_replay_server):
    import socket
    import urllib.request

    with socket.socket() as s:  # a free loopback port for the metrics endpoint
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = make_replay_server(metrics_port=port)
    with ReplayClient(server.address, timeout=20) as c:
        c.create_table("img", IMAGE, capacity=1000)
        c.append("img", _columns(IMAGE, 128, 0))
        _draw(c, "img", 3)
        _draw(c, "img", 2, shared_memory=False)
    text = urllib.request.urlopen(f"http://{server.server.metrics_address}/metrics",
                                  timeout=5).read().decode()
    assert 'replaybuf_sample_shared_batches_total{table="img"} 3.0' in text
    assert 'replaybuf_sample_batches_total{table="img"} 5.0' in text


def test_the_sampler_returns_at_once_even_before_the_server_is_reachable():
    import socket

    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with ReplayClient(f"127.0.0.1:{port}", timeout=5) as c:
        t0 = time.monotonic()
        sampler = c.sampler("img", 64)  # the ring's size is worked out on its own thread
        assert time.monotonic() - t0 < 0.5
        sampler.close()
