"""The replaybuf error hierarchy, shared by the engine, the server and the client.

One base class, :class:`ReplayError`, and one subclass per condition a caller can act on.
Each class declares the gRPC status code it maps to (as the code's name, so this module
imports neither grpc nor anything heavy: the client imports it too). The server aborts with
``error.grpc_status``; the client maps the status and the ``replaybuf-error`` trailer back to
the same class through :func:`error_class_for`.

Messages name the field or setting at fault and say what to do, e.g.::

    raise InvalidArgumentError("priorities[3] is NaN; priorities must be finite and >= 0")
"""

from __future__ import annotations

__all__ = [
    "ReplayError",
    "InvalidArgumentError",
    "InvalidPriorityError",
    "SignatureMismatchError",
    "EmptyBatchError",
    "NotFoundError",
    "TableNotFoundError",
    "ItemNotFoundError",
    "AlreadyExistsError",
    "ResourceExhaustedError",
    "MessageTooLargeError",
    "FailedPreconditionError",
    "ClosedError",
    "RateLimitTimeoutError",
    "DataLossError",
    "LogCorruptionError",
    "ViewDamagedError",
    "DurabilityError",
    "PermissionDeniedError",
    "UnauthenticatedError",
    "UnavailableError",
    "UnimplementedError",
    "error_class_for",
    "all_error_classes",
]


class ReplayError(Exception):
    """Base class of every error replaybuf raises on purpose.

    Attributes:
        grpc_status: name of the ``grpc.StatusCode`` the server answers with.
    """

    grpc_status: str = "INTERNAL"


class InvalidArgumentError(ReplayError, ValueError):
    """The request is malformed: a bad value, shape, dtype or option. Fix the request."""

    grpc_status = "INVALID_ARGUMENT"


class InvalidPriorityError(InvalidArgumentError):
    """A priority is NaN, infinite or negative. Priorities must be finite and >= 0."""


class SignatureMismatchError(InvalidArgumentError):
    """A batch's fields, dtypes or shapes do not match the table's signature."""


class EmptyBatchError(InvalidArgumentError):
    """A batch holds no items; send at least one."""


class NotFoundError(ReplayError, LookupError):
    """The named thing does not exist."""

    grpc_status = "NOT_FOUND"


class TableNotFoundError(NotFoundError):
    """No table has this name; create it first or check `list_tables()`."""


class ItemNotFoundError(NotFoundError):
    """No item has this id (it may never have existed, or it was evicted)."""


class AlreadyExistsError(ReplayError):
    """Something with this name already exists (e.g. a table with a different config)."""

    grpc_status = "ALREADY_EXISTS"


class ResourceExhaustedError(ReplayError):
    """A configured limit was hit; the message names the setting to raise."""

    grpc_status = "RESOURCE_EXHAUSTED"


class MessageTooLargeError(ResourceExhaustedError):
    """A request is larger than the configured maximum message size; send smaller batches."""


class FailedPreconditionError(ReplayError):
    """The system is not in a state that allows this call (e.g. the table is empty)."""

    grpc_status = "FAILED_PRECONDITION"


class ClosedError(FailedPreconditionError):
    """The object was closed; open a new one."""


class RateLimitTimeoutError(ReplayError, TimeoutError):
    """A blocking call waited ``timeout`` seconds for the rate limiter and gave up."""

    grpc_status = "DEADLINE_EXCEEDED"


class DataLossError(ReplayError):
    """Stored data is damaged or missing. The message names the file, offset and LSN."""

    grpc_status = "DATA_LOSS"


class LogCorruptionError(DataLossError):
    """The event log is corrupt in the middle (not a torn tail); recovery stops here."""


class ViewDamagedError(DataLossError):
    """The LMDB view cannot be used as is (damaged, or inconsistent with the log).

    The engine answers it by deleting the view and rebuilding it from the log.
    """


class DurabilityError(ReplayError):
    """An fsync or write failed; the process must stop and recover from the log."""

    grpc_status = "INTERNAL"


class PermissionDeniedError(ReplayError, PermissionError):
    """The caller's credentials do not allow this call."""

    grpc_status = "PERMISSION_DENIED"


class UnauthenticatedError(ReplayError):
    """The call carried no valid credentials."""

    grpc_status = "UNAUTHENTICATED"


class UnavailableError(ReplayError, ConnectionError):
    """The server cannot be reached or is shutting down; retry later."""

    grpc_status = "UNAVAILABLE"


class UnimplementedError(ReplayError, NotImplementedError):
    """This server does not implement the call yet; upgrade the server."""

    grpc_status = "UNIMPLEMENTED"


def all_error_classes() -> list[type[ReplayError]]:
    """Every error class defined in this module, base first (used to build the wire mapping).

    Subclasses defined elsewhere are left out, so the mapping does not depend on which modules
    happen to be imported.
    """

    out: list[type[ReplayError]] = []
    stack: list[type[ReplayError]] = [ReplayError]
    while stack:
        cls = stack.pop(0)
        out.append(cls)
        stack.extend(
            sorted(
                (c for c in cls.__subclasses__() if c.__module__ == __name__),
                key=lambda c: c.__name__,
            )
        )
    return out


_BY_NAME: dict[str, type[ReplayError]] = {}


def error_class_for(name: str | None, grpc_status: str | None = None) -> type[ReplayError]:
    """Return the error class named ``name``; else the most general class for ``grpc_status``.

    Args:
        name: a class name as sent in the ``replaybuf-error`` trailer, or None.
        grpc_status: the gRPC status code's name, used when ``name`` is unknown.
    """

    if not _BY_NAME:
        for cls in all_error_classes():
            _BY_NAME[cls.__name__] = cls
    if name and name in _BY_NAME:
        return _BY_NAME[name]
    if grpc_status:
        for cls in all_error_classes():
            if cls.grpc_status == grpc_status:
                return cls
    return ReplayError
