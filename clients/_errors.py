"""The client's one translation point from `grpc.RpcError` to replaybuf's exception classes.

The server aborts every failed call with the status declared by the engine's error class and
the class name in the ``replaybuf-error`` trailer (see ``proto/replaybuf/v1/service.proto``).
:func:`from_rpc_error` reverses that: the trailer names the class when the server sent one;
otherwise the status code picks the most general class for it (UNAVAILABLE ->
`UnavailableError`, DEADLINE_EXCEEDED -> `RateLimitTimeoutError`, ...). The server's message
is kept verbatim; only errors that gRPC raised by itself (no trailer) get a hint appended that
names the client setting to change.

Every public client call goes through :func:`translate_errors` (or :func:`from_rpc_error` in
stream readers), so a caller catches the same classes in-process and over the network.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import grpc

from replaybuf.errors import ClosedError, MessageTooLargeError, ReplayError, error_class_for

__all__ = ["ERROR_TRAILER", "from_rpc_error", "translate_errors", "status_name"]

#: Trailing-metadata key carrying the engine's exception class name.
ERROR_TRAILER = "replaybuf-error"


def status_name(exc: grpc.RpcError) -> str | None:
    """The status code's name (``"UNAVAILABLE"``) of a failed call, or None if it has none."""

    code = _call(exc, "code")
    return code.name if isinstance(code, grpc.StatusCode) else None


def _call(exc: grpc.RpcError, attr: str) -> object:
    # Errors raised by calls are also grpc.Call objects; a bare RpcError has none of these.
    method = getattr(exc, attr, None)
    if method is None:
        return None
    try:
        return method()
    except Exception:  # noqa: BLE001 - a broken error object must not hide the original
        return None


def _trailer(exc: grpc.RpcError) -> str | None:
    for key, value in _call(exc, "trailing_metadata") or ():
        if key == ERROR_TRAILER:
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return None


def from_rpc_error(
    exc: grpc.RpcError,
    *,
    target: str = "",
    timeout: float | None = None,
    max_message_bytes: int | None = None,
    closed: bool = False,
) -> ReplayError:
    """Return the replaybuf exception that ``exc`` stands for (not raised; the caller raises it).

    Args:
        exc: the error a gRPC call raised.
        target: the server address, named in hints for connection errors.
        timeout: the call's deadline in seconds, named in the hint for a client-side deadline.
        max_message_bytes: the client's message limit, named in the hint for an oversized
            message that gRPC itself rejected.
        closed: the caller's client or stream was closed meanwhile; a CANCELLED status then
            becomes `ClosedError`.
    """

    status = status_name(exc)
    details = _call(exc, "details")
    message = details if isinstance(details, str) and details else f"gRPC call failed ({status})"
    name = _trailer(exc)
    if name is not None:
        return error_class_for(name, status)(message)
    # No trailer: gRPC (or a proxy) produced the status, not the replaybuf server.
    if status == "RESOURCE_EXHAUSTED" and "larger than max" in message:
        return MessageTooLargeError(
            f"{message}; send smaller batches (writer max_batch=) or raise "
            f"ReplayClient(max_message_bytes=...) (now {max_message_bytes}) and the server's limit"
        )
    if status == "UNAVAILABLE" and target:
        message = f"{message} (server {target}); check the address and that the server is up"
    elif status == "DEADLINE_EXCEEDED" and timeout is not None:
        message = (
            f"{message}: no answer within timeout={timeout:g} s; pass a larger timeout= to the "
            "call or to ReplayClient"
        )
    elif status == "CANCELLED" and closed:
        return ClosedError(f"{message}; the call was cancelled because its client or stream was closed")
    return error_class_for(None, status)(message)


@contextmanager
def translate_errors(
    *,
    target: str = "",
    timeout: float | None = None,
    max_message_bytes: int | None = None,
    closed: Callable[[], bool] = lambda: False,
) -> Iterator[None]:
    """Context manager that re-raises any `grpc.RpcError` as :func:`from_rpc_error` maps it.

    ``closed`` is asked after the failure, so a close() racing the call is seen.
    """

    try:
        yield
    except grpc.RpcError as exc:
        raise from_rpc_error(
            exc,
            target=target,
            timeout=timeout,
            max_message_bytes=max_message_bytes,
            closed=closed(),
        ) from exc
