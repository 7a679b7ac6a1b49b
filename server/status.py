"""The one place where exceptions become gRPC statuses.

A `ReplayError` aborts the call with ``getattr(grpc.StatusCode, err.grpc_status)``, the
message ``str(err)`` and the trailing metadata ``("replaybuf-error", ClassName)``, which the
client maps back with `replaybuf.errors.error_class_for`. `NotImplementedError` (an RPC the
engine cannot serve yet) is UNIMPLEMENTED with its message. Any other exception is a bug: it is
logged with its traceback and answered with INTERNAL, and the server keeps serving.

Servicer methods are wrapped with :func:`unary` or :func:`streaming`, which also time the call
and report ``(method, status code name, seconds)`` to the servicer's ``_observe`` hook (the
metrics).
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, TypeVar

import grpc

from replaybuf.errors import ReplayError

__all__ = ["ERROR_TRAILER", "status_of", "abort", "unary", "streaming"]

_logger = logging.getLogger("replaybuf_server")

#: Trailing metadata key carrying the exact error class name.
ERROR_TRAILER = "replaybuf-error"

F = TypeVar("F", bound=Callable[..., Any])


def status_of(exc: BaseException, *, method: str = "") -> tuple[grpc.StatusCode, str, str | None]:
    """``(status code, message, error class name or None)`` for an exception.

    Unexpected exceptions are logged here, with their traceback and an incident id that the
    message repeats, so operators can find them.
    """

    if isinstance(exc, ReplayError):
        code = getattr(grpc.StatusCode, exc.grpc_status, grpc.StatusCode.INTERNAL)
        return code, str(exc) or type(exc).__name__, type(exc).__name__
    if isinstance(exc, NotImplementedError):
        # An RPC of the contract that this server (or its engine) does not serve yet.
        return grpc.StatusCode.UNIMPLEMENTED, str(exc) or f"{method} is not implemented", None
    incident = uuid.uuid4().hex[:12]
    _logger.error(
        "unexpected error in %s (incident %s)", method or "RPC", incident, exc_info=exc
    )
    return (
        grpc.StatusCode.INTERNAL,
        f"internal server error in {method or 'RPC'} ({type(exc).__name__}); the server logged "
        f"the traceback as incident {incident}",
        None,
    )


def abort(context: grpc.ServicerContext, exc: BaseException, *, method: str = "") -> NoReturn:
    """End the call with the status of ``exc`` (see module doc). Never returns."""

    code, message, name = status_of(exc, method=method)
    if name is not None:
        context.set_trailing_metadata(((ERROR_TRAILER, name),))
    context.abort(code, message)
    raise AssertionError("unreachable")  # pragma: no cover - context.abort raises


def _observe(
    servicer: object, method: str, code: grpc.StatusCode, started: float | None
) -> None:
    hook = getattr(servicer, "_observe", None)
    if hook is not None:
        hook(method, code.name, None if started is None else time.perf_counter() - started)


def unary(method: str) -> Callable[[F], F]:
    """Wrap a unary-response servicer method (request or request iterator -> response)."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(self: object, request: Any, context: grpc.ServicerContext) -> Any:
            started = time.perf_counter()
            try:
                response = fn(self, request, context)
            except Exception as exc:  # noqa: BLE001 - this is the translation point
                error: BaseException = exc
            else:
                _observe(self, method, grpc.StatusCode.OK, started)
                return response
            code, message, name = status_of(error, method=method)
            _observe(self, method, code, started)
            if name is not None:
                context.set_trailing_metadata(((ERROR_TRAILER, name),))
            context.abort(code, message)

        return wrapper  # type: ignore[return-value]

    return decorate


def streaming(method: str) -> Callable[[F], F]:
    """Wrap a response-streaming servicer method (a generator).

    Responses already yielded stay delivered; an exception ends the stream with its status.
    A client cancel closes the generator (GeneratorExit), which passes through untouched.
    Only the outcome is reported to ``_observe`` (seconds None): a stream's lifetime says
    nothing; the servicer times each message itself.
    """

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(self: object, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            try:
                yield from fn(self, request, context)
            except Exception as exc:  # noqa: BLE001 - this is the translation point
                error: BaseException = exc
            else:
                _observe(self, method, grpc.StatusCode.OK, None)
                return
            code, message, name = status_of(error, method=method)
            _observe(self, method, code, None)
            if name is not None:
                context.set_trailing_metadata(((ERROR_TRAILER, name),))
            context.abort(code, message)

        return wrapper  # type: ignore[return-value]

    return decorate
