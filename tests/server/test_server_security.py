"""Security: TLS, mutual TLS, bearer-token roles, and refusing plaintext off loopback."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from server_helpers import (
    ADMIN, LEARNER, SAMPLER, WRITER, append_request, connect, error_name, table_config,
)

from replaybuf.errors import InvalidArgumentError
from replaybuf.v1 import service_pb2
from replaybuf_server.auth import RPC_ROLES
from replaybuf_server.config import ServerConfig

TOKENS = dict(
    admin_tokens=(ADMIN,), writer_tokens=(WRITER, LEARNER), sampler_tokens=(SAMPLER, LEARNER)
)


def _creds(tls, client_cert=True, other=False):
    chain = key = None
    if client_cert:
        chain = (tls.other_client_cert if other else tls.client_cert).read_bytes()
        key = (tls.other_client_key if other else tls.client_key).read_bytes()
    return grpc.ssl_channel_credentials(tls.ca.read_bytes(), key, chain)


def test_tls_server_serves_clients_that_trust_its_ca(make_server, tls_files):
    server = make_server(tls_cert=str(tls_files.server_cert), tls_key=str(tls_files.server_key))
    client = connect(f"localhost:{server.port}", credentials=_creds(tls_files, client_cert=False))
    client.CreateTable(service_pb2.CreateTableRequest(config=table_config().to_proto()))
    assert [t.config.name for t in client.ListTables(service_pb2.ListTablesRequest()).tables] == ["replay"]
    plaintext = connect(f"localhost:{server.port}")
    with pytest.raises(grpc.RpcError) as err:
        plaintext.ListTables(service_pb2.ListTablesRequest(), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_requires_a_client_certificate_from_the_client_ca(make_server, tls_files):
    server = make_server(tls_cert=str(tls_files.server_cert), tls_key=str(tls_files.server_key),
                         tls_client_ca=str(tls_files.ca))
    good = connect(f"localhost:{server.port}", credentials=_creds(tls_files))
    assert good.ListTables(service_pb2.ListTablesRequest()).tables == []
    for creds in (_creds(tls_files, client_cert=False), _creds(tls_files, other=True)):
        bad = connect(f"localhost:{server.port}", credentials=creds)
        with pytest.raises(grpc.RpcError) as err:
            bad.ListTables(service_pb2.ListTablesRequest(), timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_missing_or_unknown_token_is_unauthenticated(make_server):
    server = make_server(**TOKENS)
    for token in (None, "not-a-valid-token-at-all"):
        client = connect(server.address, token)
        with pytest.raises(grpc.RpcError) as err:
            client.ListTables(service_pb2.ListTablesRequest())
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert error_name(err.value) == "UnauthenticatedError"
    bad_scheme = connect(server.address)
    bad_scheme.metadata = (("authorization", f"Basic {ADMIN}"),)
    with pytest.raises(grpc.RpcError) as err:
        bad_scheme.ListTables(service_pb2.ListTablesRequest())
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_sampler_token_cannot_create_tables_evict_or_append(make_server):
    server = make_server(**TOKENS)
    admin = connect(server.address, ADMIN)
    admin.CreateTable(service_pb2.CreateTableRequest(config=table_config().to_proto()))
    (ack,) = admin.Append(iter([append_request(n=4)]))
    sampler = connect(server.address, SAMPLER)
    before = server.engine.log.last_lsn
    calls = {
        "CreateTable": lambda: sampler.CreateTable(
            service_pb2.CreateTableRequest(config=table_config("x").to_proto())),
        "Evict": lambda: sampler.Evict(
            service_pb2.EvictRequest(table="replay", item_ids=list(ack.item_ids))),
        "Append": lambda: list(sampler.Append(iter([append_request(n=1)]))),
        "UpdatePriorities": lambda: sampler.UpdatePriorities(service_pb2.UpdatePrioritiesRequest(
            table="replay", item_ids=[1], priorities=[2.0])),
    }
    for name, call in calls.items():
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, name
        assert error_name(err.value) == "PermissionDeniedError"
        assert "role" in err.value.details() and "sampler" in err.value.details()
    assert server.engine.log.last_lsn == before
    # What a sampler may do:
    assert len(list(sampler.Sample(service_pb2.SampleRequest(
        table="replay", batch_size=2, num_batches=1)))) == 1
    assert len(list(sampler.SampleStream(iter([service_pb2.SampleStreamRequest(
        request=service_pb2.SampleRequest(table="replay", batch_size=2, num_batches=1))])))) == 1
    assert sampler.DescribeTable(service_pb2.DescribeTableRequest(table="replay")).size == 4
    assert len(list(sampler.Subscribe(service_pb2.SubscribeRequest(from_lsn=1)))) >= 2


def test_writer_token_appends_but_cannot_sample_or_evict(make_server):
    server = make_server(**TOKENS)
    connect(server.address, ADMIN).CreateTable(
        service_pb2.CreateTableRequest(config=table_config().to_proto()))
    writer = connect(server.address, WRITER)
    (ack,) = writer.Append(iter([append_request(n=4)]))
    writer.UpdatePriorities(service_pb2.UpdatePrioritiesRequest(
        table="replay", item_ids=list(ack.item_ids), priorities=[1, 2, 3, 4]))
    assert writer.DescribeTable(service_pb2.DescribeTableRequest(table="replay")).size == 4
    for call in (
        lambda: list(writer.Sample(service_pb2.SampleRequest(table="replay", batch_size=1, num_batches=1))),
        lambda: list(writer.SampleStream(iter([service_pb2.SampleStreamRequest(
            request=service_pb2.SampleRequest(table="replay", batch_size=1, num_batches=1))]))),
        lambda: writer.Evict(service_pb2.EvictRequest(table="replay", item_ids=[1])),
    ):
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_a_token_listed_under_two_roles_gets_both(make_server):
    server = make_server(**TOKENS)
    connect(server.address, ADMIN).CreateTable(
        service_pb2.CreateTableRequest(config=table_config().to_proto()))
    learner = connect(server.address, LEARNER)
    list(learner.Append(iter([append_request(n=4)])))
    (batch,) = learner.Sample(service_pb2.SampleRequest(table="replay", batch_size=2, num_batches=1))
    learner.UpdatePriorities(service_pb2.UpdatePrioritiesRequest(
        table="replay", item_ids=list(batch.info.item_ids), priorities=[5.0, 5.0]))


def test_admin_may_call_every_rpc_and_the_matrix_covers_the_whole_service():
    service = service_pb2.DESCRIPTOR.services_by_name["ReplayService"]
    assert set(RPC_ROLES) == {m.name for m in service.methods}
    assert all("admin" in roles for roles in RPC_ROLES.values())


def test_health_and_reflection_need_no_token(make_server):
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    server = make_server(**TOKENS)
    channel = grpc.insecure_channel(server.address)
    health = health_pb2_grpc.HealthStub(channel)
    resp = health.Check(health_pb2.HealthCheckRequest(service="replaybuf.v1.ReplayService"), timeout=5)
    assert resp.status == health_pb2.HealthCheckResponse.SERVING
    from google.protobuf.descriptor_pool import DescriptorPool

    db = ProtoReflectionDescriptorDatabase(channel)
    assert {"replaybuf.v1.ReplayService", "grpc.health.v1.Health"} <= set(db.get_services())
    service = DescriptorPool(db).FindServiceByName("replaybuf.v1.ReplayService")  # what grpcurl does
    assert service.methods_by_name["Sample"].output_type.full_name == "replaybuf.v1.SampleResponse"


def test_plaintext_on_a_non_loopback_address_is_refused_without_insecure(tmp_path, tls_files):
    with pytest.raises(InvalidArgumentError, match="--insecure"):
        ServerConfig(data_dir=str(tmp_path), host="0.0.0.0")
    ServerConfig(data_dir=str(tmp_path), host="0.0.0.0", insecure=True)
    ServerConfig(data_dir=str(tmp_path), host="0.0.0.0", tls_cert=str(tls_files.server_cert),
                 tls_key=str(tls_files.server_key))
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        ServerConfig(data_dir=str(tmp_path), host=host)
