"""Startup, configuration, concurrency, metrics and graceful shutdown of a real server."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from dataclasses import replace

import grpc
import pytest
from server_helpers import append_request, connect, free_port, table_config, wait_until

from replaybuf.errors import InvalidArgumentError
from replaybuf.v1 import service_pb2
from replaybuf_server.cli import add_serve_parser, config_from_args
from replaybuf_server.config import ServerConfig
from replaybuf_server.servicer import open_engine
from replaybuf_server.server import ReplayServer

# -- configuration ------------------------------------------------------------------------------


def test_config_validates_with_messages_that_name_the_setting(tmp_path):
    d = str(tmp_path)
    cases = {
        "port": dict(port=70000),
        "workers": dict(workers=0),
        "max_message_bytes": dict(max_message_bytes=10),
        "tls_cert and tls_key": dict(tls_cert=__file__),
        "fsync": dict(fsync="sometimes"),
        "grace": dict(grace=-1),
        "admin_tokens[0]": dict(admin_tokens=("short",)),
        "tls_client_ca": dict(tls_client_ca=__file__),
    }
    for needle, kwargs in cases.items():
        with pytest.raises(InvalidArgumentError, match=needle.replace("[", r"\[").replace("]", r"\]")):
            ServerConfig(data_dir=d, **kwargs)


def test_config_loads_from_toml_and_flags_override_it(tmp_path):
    tokens = tmp_path / "writers.tokens"
    tokens.write_text("# writers\nwriter-token-aaaaaaaaaaaaaaaa\n\nwriter-token-bbbbbbbbbbbbbbbb\n")
    toml = tmp_path / "serve.toml"
    toml.write_text(
        f'data_dir = "{tmp_path / "data"}"\nport = 7000\nworkers = 4\nfsync = "always"\n'
        f'admin_tokens = ["admin-token-cccccccccccccccc"]\nwriter_token_file = "{tokens}"\n'
    )
    cfg = ServerConfig.from_toml(toml)
    assert (cfg.port, cfg.workers, cfg.fsync) == (7000, 4, "always")
    assert cfg.writer_tokens == ("writer-token-aaaaaaaaaaaaaaaa", "writer-token-bbbbbbbbbbbbbbbb")
    assert cfg.auth_enabled
    parser = argparse.ArgumentParser()
    add_serve_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["serve", "--config", str(toml), "--port", "0", "--fsync", "none"])
    assert args.func.__name__ == "run_serve"
    cfg = config_from_args(args)
    assert (cfg.port, cfg.workers, cfg.fsync, cfg.view_sync) == (0, 4, "none", False)
    cfg = config_from_args(parser.parse_args(["serve", "--config", str(toml), "--view-sync"]))
    assert cfg.view_sync is True
    with open_engine(replace(cfg, data_dir=str(tmp_path / "synced"))) as engine:
        assert engine.config.view_sync is True
    toml.write_text('data_dir = "x"\nprot = 1\n')
    with pytest.raises(InvalidArgumentError, match="unknown setting.*prot"):
        ServerConfig.from_toml(toml)


# -- concurrency --------------------------------------------------------------------------------


def test_concurrent_appenders_and_samplers_all_succeed(server):
    errors: list[BaseException] = []
    acked: list[int] = []
    lock = threading.Lock()
    list(connect(server.address).Append(iter([append_request(n=16)])))

    def appender(k: int) -> None:
        try:
            client = connect(server.address)
            pid = uuid.uuid4().bytes
            reqs = [append_request(n=8, producer_id=pid, producer_seq=s + 1) for s in range(20)]
            ids = [i for ack in client.Append(iter(reqs)) for i in ack.item_ids]
            with lock:
                acked.extend(ids)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    def sampler(k: int) -> None:
        try:
            client = connect(server.address)
            got = list(client.Sample(service_pb2.SampleRequest(
                table="replay", batch_size=8, num_batches=25, seed=k)))
            assert len(got) == 25 and all(len(r.info.item_ids) == 8 for r in got)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=appender, args=(k,)) for k in range(4)]
    threads += [threading.Thread(target=sampler, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert len(acked) == len(set(acked)) == 4 * 20 * 8
    info = server.engine.describe_table("replay")
    assert info.size == 16 + 4 * 20 * 8


# -- metrics ------------------------------------------------------------------------------------


def test_metrics_endpoint_serves_the_expected_metric_names(make_server):
    server = make_server(metrics_port=free_port())
    client = connect(server.address)
    client.CreateTable(service_pb2.CreateTableRequest(config=table_config().to_proto()))
    list(client.Append(iter([append_request(n=5)])))
    list(client.Sample(service_pb2.SampleRequest(table="replay", batch_size=2, num_batches=2)))
    with pytest.raises(grpc.RpcError):
        client.DescribeTable(service_pb2.DescribeTableRequest(table="nope"))
    url = f"http://{server.metrics_address}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    for line in (
        'replaybuf_appends_total{table="replay"} 1.0',
        'replaybuf_items_appended_total{table="replay"} 5.0',
        'replaybuf_sample_batches_total{table="replay"} 2.0',
        'replaybuf_items_sampled_total{table="replay"} 4.0',
        'replaybuf_table_size{table="replay"} 5.0',
        'replaybuf_rpcs_total{code="NOT_FOUND",method="DescribeTable"} 1.0',
        'replaybuf_rpcs_total{code="OK",method="CreateTable"} 1.0',
    ):
        assert line in text, line
    for name in ("replaybuf_rpc_latency_seconds_bucket{le=", "replaybuf_table_total_priority{",
                 "replaybuf_applied_lsn ", "replaybuf_durable_lsn ", "replaybuf_last_lsn ",
                 'replaybuf_rpc_latency_seconds_count{method="Append"}',
                 'replaybuf_rpc_latency_seconds_count{method="Sample"}'):
        assert name.split("{")[0] in text, name


# -- shutdown -----------------------------------------------------------------------------------


def test_stop_ends_open_streams_promptly_and_refuses_new_calls(make_server):
    from replaybuf.rate_limiter import RateLimiterConfig

    server = make_server(grace=10)
    client = connect(server.address)
    cfg = table_config(rate_limiter=RateLimiterConfig.min_size(100))
    client.CreateTable(service_pb2.CreateTableRequest(config=cfg.to_proto()))
    requests_open = threading.Event()

    def idle_requests():
        yield append_request(n=1)
        requests_open.wait(30)  # an actor holding its stream open

    outcomes: dict[str, list[object]] = {"append": [], "sample": [], "subscribe": []}
    opened = {name: threading.Event() for name in outcomes}
    calls = {
        "append": lambda: client.Append(idle_requests(), timeout=None),
        # blocked by the rate limiter (min size 100) until shutdown:
        "sample": lambda: client.Sample(service_pb2.SampleRequest(
            table="replay", batch_size=1, num_batches=0), timeout=None),
        "subscribe": lambda: client.Subscribe(
            service_pb2.SubscribeRequest(from_lsn=1, follow=True), timeout=None),
    }

    def run(name):
        try:
            stream = calls[name]()
            if name == "sample":
                opened[name].set()  # it yields nothing: the rate limiter blocks it
            for item in stream:
                outcomes[name].append(item)
                if name == "append" or len(outcomes[name]) == 2:
                    opened[name].set()
        except grpc.RpcError as exc:
            outcomes[name].append(exc)

    threads = [threading.Thread(target=run, args=(name,)) for name in calls]
    for t in threads:
        t.start()
    for name, event in opened.items():
        assert event.wait(10), name
    # The sample stream is blocked in the rate limiter once the table shows a waiting sampler.
    wait_until(lambda: server.engine.describe_table("replay").rate_limiter.waiting_samples > 0)
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 5  # not the 10 s grace
    for t in threads:
        t.join(5)
    requests_open.set()
    assert isinstance(outcomes["append"][0], service_pb2.AppendAck)
    assert [e.lsn for e in outcomes["subscribe"][:-1]] == [1, 2]
    for name, got in outcomes.items():
        assert isinstance(got[-1], grpc.RpcError), name
        assert got[-1].code() == grpc.StatusCode.UNAVAILABLE, (name, got[-1])
    assert "from_lsn=3" in outcomes["subscribe"][-1].details()
    with pytest.raises(grpc.RpcError) as err:
        client.ListTables(service_pb2.ListTablesRequest(), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    server.stop()  # idempotent


def test_a_port_in_use_is_a_clear_error(make_server, tmp_path):
    from replaybuf.errors import UnavailableError

    first = make_server()
    second = ReplayServer(ServerConfig(data_dir=str(tmp_path / "other"), port=first.port))
    with pytest.raises(UnavailableError, match=f"127.0.0.1:{first.port}"):
        second.start()


def _spawn(data_dir, *extra):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "replaybuf_server", "--data-dir", str(data_dir), "--port", "0",
         "--fsync", "group", "--grace", "5", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    line = proc.stdout.readline()
    if not line.startswith("replaybuf serving on "):
        proc.kill()
        raise AssertionError(f"no address line: {line!r} {proc.stderr.read()}")
    return proc, line.split(" on ", 1)[1].strip()


def test_sigterm_during_appends_keeps_every_acked_append(tmp_path):
    data = tmp_path / "data"
    proc, address = _spawn(data)
    try:
        client = connect(address)
        client.CreateTable(service_pb2.CreateTableRequest(config=table_config().to_proto()))
        acked: list[int] = []
        errors: list[grpc.RpcError] = []
        some_acked = threading.Event()

        def writer(k: int) -> None:
            pid = uuid.uuid4().bytes
            reqs = (append_request(n=4, producer_id=pid, producer_seq=s) for s in range(1, 10**6))
            try:
                for ack in connect(address).Append(reqs, timeout=None):
                    assert ack.durable
                    acked.extend(ack.item_ids)
                    some_acked.set()
            except grpc.RpcError as exc:
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        assert some_acked.wait(30)
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(30)
        assert proc.wait(30) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert len(errors) == 3
    assert all(e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED) for e in errors)
    assert acked
    # Restart on the same data directory: every acked item is there.
    with ReplayServer(ServerConfig(data_dir=str(data), port=0, fsync="group")) as restarted:
        client = connect(restarted.address)
        appended = {
            i
            for e in client.Subscribe(service_pb2.SubscribeRequest(from_lsn=1))
            if e.event.HasField("items_appended")
            for i in e.event.items_appended.item_ids
        }
        assert set(acked) <= appended
        info = client.DescribeTable(service_pb2.DescribeTableRequest(table="replay"))
        assert info.size == len(appended)


def test_serve_refuses_plaintext_on_a_public_address_with_exit_status_2(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "replaybuf_server", "--data-dir", str(tmp_path), "--host", "0.0.0.0"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert "--insecure" in proc.stderr and "0.0.0.0" in proc.stderr


def test_public_names_are_pinned():
    import replaybuf_server

    assert set(replaybuf_server.__all__) == {
        "ReplayServer", "ServerConfig", "ReplayServicer", "ServerMetrics", "TokenAuthInterceptor",
        "RPC_ROLES", "ERROR_TRAILER", "add_serve_parser", "run_serve",
    }
    for name in replaybuf_server.__all__:
        assert getattr(replaybuf_server, name) is not None
