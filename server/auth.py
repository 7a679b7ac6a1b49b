"""Bearer-token roles, enforced by a server interceptor.

Every call to ``replaybuf.v1.ReplayService`` carries ``authorization: Bearer <token>``; the
token's roles (a token may be listed under several) must include one that grants the RPC:

=================  =======  =======  ========
RPC                admin    writer   sampler
=================  =======  =======  ========
CreateTable        yes      -        -
Evict              yes      -        -
Append             yes      yes      -
UpdatePriorities   yes      yes      -
CorrectRewards     yes      yes      -
Sample             yes      -        yes
SampleStream       yes      -        yes
Subscribe          yes      -        yes
GetLineage         yes      -        yes
FindItems          yes      -        yes
Export             yes      -        yes
Diff               yes      -        yes
ListPendingReviews yes      -        yes
GetJob             yes      -        yes
FlagForReview      yes      yes      -
ApplyLabel         yes      yes      -
RecordJob          yes      -        -
ListTables         yes      yes      yes
DescribeTable      yes      yes      yes
=================  =======  =======  ========

Writers read table metadata (to learn a signature) but not data; a learner that samples and
updates priorities gets one token listed under both ``sampler`` and ``writer``. The health and
reflection services need no token. No token, or an unknown one: UNAUTHENTICATED; a known token
without a granting role: PERMISSION_DENIED naming the roles that would do. Tokens are compared
in constant time.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import grpc

from replaybuf.errors import PermissionDeniedError, UnauthenticatedError

from .status import abort

__all__ = ["SERVICE", "RPC_ROLES", "TokenAuthInterceptor", "roles_for"]

#: Full name of the served service.
SERVICE = "replaybuf.v1.ReplayService"

#: RPC name -> roles that may call it.
RPC_ROLES: Mapping[str, frozenset[str]] = {
    "CreateTable": frozenset({"admin"}),
    "Evict": frozenset({"admin"}),
    "Append": frozenset({"admin", "writer"}),
    "UpdatePriorities": frozenset({"admin", "writer"}),
    "CorrectRewards": frozenset({"admin", "writer"}),
    "Sample": frozenset({"admin", "sampler"}),
    "SampleStream": frozenset({"admin", "sampler"}),
    "Subscribe": frozenset({"admin", "sampler"}),
    "GetLineage": frozenset({"admin", "sampler"}),
    "FindItems": frozenset({"admin", "sampler"}),
    "Export": frozenset({"admin", "sampler"}),
    "Diff": frozenset({"admin", "sampler"}),
    "ListPendingReviews": frozenset({"admin", "sampler"}),
    "GetJob": frozenset({"admin", "sampler"}),
    "FlagForReview": frozenset({"admin", "writer"}),
    "ApplyLabel": frozenset({"admin", "writer"}),
    # A job run evicts (through Evict) and then records itself: both admin's.
    "RecordJob": frozenset({"admin"}),
    "ListTables": frozenset({"admin", "writer", "sampler"}),
    "DescribeTable": frozenset({"admin", "writer", "sampler"}),
}

#: Services anyone may call (load balancers, grpcurl).
OPEN_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)


def roles_for(tokens_by_role: Mapping[str, Iterable[str]]) -> dict[bytes, frozenset[str]]:
    """Invert ``{role: tokens}`` into ``{token bytes: roles}``."""

    out: dict[bytes, set[str]] = {}
    for role, tokens in tokens_by_role.items():
        for token in tokens:
            out.setdefault(token.encode("ascii"), set()).add(role)
    return {token: frozenset(roles) for token, roles in out.items()}


def _split_method(full: str) -> tuple[str, str]:
    service, _, name = full.lstrip("/").rpartition("/")
    return service, name


def _denying_handler(
    handler: grpc.RpcMethodHandler, error: Exception, method: str
) -> grpc.RpcMethodHandler:
    """A handler of the same shape as ``handler`` that fails at once with ``error``."""

    def fail(request: Any, context: grpc.ServicerContext) -> Any:
        abort(context, error, method=method)

    def fail_stream(request: Any, context: grpc.ServicerContext) -> Any:
        abort(context, error, method=method)
        yield  # pragma: no cover - makes this a generator

    kwargs = dict(
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(fail_stream, **kwargs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(fail, **kwargs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(fail_stream, **kwargs)
    return grpc.unary_unary_rpc_method_handler(fail, **kwargs)


class TokenAuthInterceptor(grpc.ServerInterceptor):
    """Checks ``authorization: Bearer <token>`` against the role matrix (module doc).

    Args:
        tokens_by_role: ``{"admin": [...], "writer": [...], "sampler": [...]}``.
        on_denied: called with ``(rpc name, status code name)`` for each refused call
            (metrics).

    Thread-safe (immutable after construction).
    """

    def __init__(
        self,
        tokens_by_role: Mapping[str, Iterable[str]],
        on_denied: Callable[[str, str], None] | None = None,
    ) -> None:
        self._roles = roles_for(tokens_by_role)
        self._on_denied = on_denied

    def _lookup(self, presented: bytes) -> frozenset[str] | None:
        found: frozenset[str] | None = None
        # Compare against every token so the time taken does not reveal which one matched.
        for token, roles in self._roles.items():
            if hmac.compare_digest(token, presented):
                found = roles
        return found

    def check(self, method: str, metadata: Iterable[tuple[str, Any]]) -> Exception | None:
        """The error to refuse ``method`` with, or None to let it through."""

        service, name = _split_method(method)
        if service in OPEN_SERVICES:
            return None
        needed = RPC_ROLES.get(name) if service == SERVICE else None
        if needed is None:
            return None  # unknown method: gRPC answers UNIMPLEMENTED itself
        header = None
        for key, value in metadata or ():
            if key == "authorization":
                header = value if isinstance(value, str) else bytes(value).decode("latin-1")
                break
        if header is None:
            return UnauthenticatedError(
                f"{name} needs a bearer token: send metadata 'authorization: Bearer <token>'"
            )
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return UnauthenticatedError(
                f"{name}: the authorization metadata must read 'Bearer <token>'"
            )
        roles = self._lookup(token.strip().encode("utf-8", "surrogateescape"))
        if roles is None:
            return UnauthenticatedError(f"{name}: the bearer token is not valid on this server")
        if roles & needed:
            return None
        return PermissionDeniedError(
            f"{name} needs the {' or '.join(sorted(needed))} role; this token has "
            f"{', '.join(sorted(roles))}"
        )

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        error = self.check(method, handler_call_details.invocation_metadata)
        if error is None:
            return handler
        name = _split_method(method)[1]
        if self._on_denied is not None:
            code = "UNAUTHENTICATED" if isinstance(error, UnauthenticatedError) else "PERMISSION_DENIED"
            self._on_denied(name, code)
        return _denying_handler(handler, error, name)
