"""Shared-memory rings for SampleStream batches, for learners on the server's host.

Over gRPC a sampled batch is copied six times or more between the table and the learner's
numpy arrays (the gather, the response bytes, gRPC's send slice, the kernel's socket copies
both ways, then gRPC's Python layer turning the received slices into ``bytes``). For an Atari batch (256 x 2 x
28 KiB = 14.7 MB) that is most of the CPU both processes spend per batch. A client on the same
host instead offers a ring (``SampleRequest.shared_ring``): a file under ``/dev/shm`` that it
created and sized with ``posix_fallocate`` (so a full tmpfs fails here, with ENOSPC, and never
later as a SIGBUS in either process). The server maps it and gathers each batch's rows straight
into slot ``k % slots`` (`Engine.sample(out=...)`), and the message carries only the
`SampleInfo` and where each column lies (``SampleResponse.shared``). The client copies the
columns out into buffers of its own before it acknowledges the batch: two copies in all.

Safety: at most ``prefetch`` batches are drawn and not yet acknowledged (SampleStream's
credit), and the client copies a batch out before it acknowledges it, so with ``slots >=
prefetch`` the server never writes into a slot whose batch the client has not copied out.
The server only opens a regular file directly under ``/dev/shm`` with the expected name
pattern, not a symlink, owned by its own user and exactly the announced size; anything else
falls back to sending the data in the message (a client on another host, or running as
another user) or, for a malformed request, fails the stream with INVALID_ARGUMENT. The same
user can signal the server anyway, so sharing pages with it adds no new exposure.

`ServerRing` is the server's side, `ClientRing` the client's. Light: numpy and protobuf only
(the client imports it).

Thread-safety: a ring belongs to one stream; its methods are called by that stream's thread.
"""

from __future__ import annotations

import errno
import logging
import mmap
import os
import re
import secrets
import stat
from collections.abc import Mapping
from typing import Any

import numpy as np

from replaybuf.errors import InvalidArgumentError
from replaybuf.output_pool import OutputPool
from replaybuf.tensors import dtype_from_proto, dtype_to_proto
from replaybuf.v1 import service_pb2

__all__ = ["RING_DIR", "RING_PREFIX", "ServerRing", "ClientRing", "slot_bytes_for",
           "SHARED_MIN_BYTES"]

log = logging.getLogger(__name__)

#: Where rings live: a tmpfs on Linux.
RING_DIR = "/dev/shm"
#: File name prefix of every ring; the rest is 8-64 characters of ``[A-Za-z0-9_-]``.
RING_PREFIX = "replaybuf-ring-"
_NAME = re.compile(r"replaybuf-ring-[A-Za-z0-9_-]{8,64}")
_PAGE = 4096
_ALIGN = 64  # columns start on a cache line, as in `replaybuf.gather`
#: Largest slot a server maps (a batch that large would not fit a message either).
MAX_SLOT_BYTES = 1 << 32
#: Batches smaller than this go in the message: copying them is cheap, and a ring costs a
#: file and a mapping per stream.
SHARED_MIN_BYTES = 1 << 20


def _round_up(n: int, to: int) -> int:
    return -(-n // to) * to


def slot_bytes_for(specs: Mapping[str, Any], batch_size: int) -> int:
    """Bytes of a slot that holds ``batch_size`` rows of each field in ``specs`` (name ->
    anything with ``dtype`` and ``shape`` per item), laid out as the server's gather lays
    them out (each field 64-byte aligned), with room for record padding, in whole pages."""

    total = 0
    for spec in specs.values():
        row = int(np.prod(tuple(spec.shape), dtype=np.int64)) * np.dtype(spec.dtype).itemsize
        total += _round_up(batch_size * max(row, 1), _ALIGN) + _ALIGN
    return _round_up(total + batch_size * 8, _PAGE)


class _Ring:
    """A mapped ring file: ``slots`` slots of ``slot_bytes`` bytes."""

    def __init__(self, path: str, buf: mmap.mmap, slot_bytes: int, slots: int) -> None:
        self.path = path
        self._mmap = buf
        self._array = np.frombuffer(buf, np.uint8)
        self.slot_bytes = slot_bytes
        self.slots = slots

    def _unmap(self) -> None:
        """Unmap once nothing views the ring (arrays still viewing it keep it mapped)."""

        self._array = np.empty(0, np.uint8)
        try:
            self._mmap.close()
        except BufferError:
            pass  # a batch still views it; the mapping goes with the last view


class ServerRing(_Ring):
    """The server's mapping of a client's ring (see the module docstring)."""

    def __init__(self, path: str, buf: mmap.mmap, slot_bytes: int, slots: int) -> None:
        super().__init__(path, buf, slot_bytes, slots)
        self._base = self._array.ctypes.data

    @classmethod
    def open(cls, ring: service_pb2.SharedRing, prefetch: int) -> ServerRing | None:
        """Map the ring a SampleRequest offers; None when it cannot be used from here (no
        such file: the client is on another host; another owner, not a regular file),
        so the batches go in the messages.

        Raises:
            InvalidArgumentError: a malformed offer: a path outside ``/dev/shm`` or not named
                ``replaybuf-ring-...``, a slot size not a positive multiple of 4096 (or over 4
                GiB), fewer slots than ``prefetch``, or a file of another size.
        """

        path = ring.path
        directory, name = os.path.split(path)
        if directory != RING_DIR or not _NAME.fullmatch(name):
            raise InvalidArgumentError(
                f"shared_ring.path={path!r} is not a ring: it must be {RING_DIR}/{RING_PREFIX} "
                "followed by 8-64 characters of [A-Za-z0-9_-]"
            )
        if ring.slot_bytes <= 0 or ring.slot_bytes % _PAGE or ring.slot_bytes > MAX_SLOT_BYTES:
            raise InvalidArgumentError(
                f"shared_ring.slot_bytes={ring.slot_bytes} must be a positive multiple of "
                f"{_PAGE} up to {MAX_SLOT_BYTES}"
            )
        if ring.slots < prefetch:
            raise InvalidArgumentError(
                f"shared_ring.slots={ring.slots} is less than prefetch={prefetch}; a ring needs "
                "a slot for every batch in flight"
            )
        size = ring.slot_bytes * ring.slots
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            log.debug("shared ring %s not usable (%s); sending batches in messages", path, exc)
            return None  # another host (ENOENT), another user (EACCES), a symlink (ELOOP)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
                log.debug("shared ring %s is not a regular file of ours; not used", path)
                return None
            if st.st_size != size:
                raise InvalidArgumentError(
                    f"shared_ring {path!r} is {st.st_size} bytes, not slots * slot_bytes = "
                    f"{size}; size the file before sending the request"
                )
            buf = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        return cls(path, buf, ring.slot_bytes, ring.slots)

    def slot(self, k: int) -> np.ndarray:
        """Batch ``k``'s slot, a writable uint8 array (page aligned)."""

        start = (k % self.slots) * self.slot_bytes
        return self._array[start:start + self.slot_bytes]

    def describe(self, k: int, data: Mapping[str, np.ndarray]) -> service_pb2.SharedBatch | None:
        """Where ``data``'s columns lie in batch ``k``'s slot; None if any lies elsewhere
        (the batch did not fit the slot and was gathered into a buffer of the engine's)."""

        slot = k % self.slots
        lo = self._base + slot * self.slot_bytes
        hi = lo + self.slot_bytes
        shared = service_pb2.SharedBatch(slot=slot)
        for name, arr in data.items():
            start = arr.ctypes.data
            if arr.size and not (lo <= start
                                 and start + _extent(arr.shape, arr.strides, arr.itemsize) <= hi):
                return None
            col = shared.columns.add(name=name, dtype=dtype_to_proto(arr.dtype),
                                     offset=start - lo if arr.size else 0)
            col.shape.extend(arr.shape)
            col.strides.extend(arr.strides)
        return shared

    def close(self) -> None:
        """Unmap the ring once nothing views it."""

        self._unmap()


def _extent(shape: tuple[int, ...], strides: tuple[int, ...], itemsize: int) -> int:
    """Bytes from a non-empty array's first element to the end of its last (non-negative
    strides)."""

    return sum((d - 1) * s for d, s in zip(shape, strides)) + itemsize


class ClientRing(_Ring):
    """A client's ring: created under ``/dev/shm``, offered to the server, read by copying
    batches out (see the module docstring). Unlink it once the server answered: the
    mappings stay valid."""

    def __init__(self, path: str, buf: mmap.mmap, slot_bytes: int, slots: int) -> None:
        super().__init__(path, buf, slot_bytes, slots)
        self._pool = OutputPool(slots + 2)
        self._linked = True

    @classmethod
    def create(cls, slot_bytes: int, slots: int) -> ClientRing | None:
        """A new ring of ``slots`` slots of ``slot_bytes`` (a multiple of 4096), its memory
        reserved; None when this host has no ``/dev/shm`` or not enough room in it."""

        name = RING_PREFIX + f"{os.getpid()}-{secrets.token_hex(8)}"
        path = os.path.join(RING_DIR, name)
        size = slot_bytes * slots
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o600)
        except OSError as exc:
            log.debug("no shared ring (%s); batches come in messages", exc)
            return None
        try:
            try:
                os.posix_fallocate(fd, 0, size)  # tmpfs full: ENOSPC now, not SIGBUS later
            except OSError as exc:
                if exc.errno not in (errno.ENOSPC, errno.EFBIG, errno.EOPNOTSUPP, errno.EINVAL):
                    raise
                log.info("no room for a %d-byte shared ring in %s (%s); batches come in "
                         "messages", size, RING_DIR, exc)
                os.unlink(path)
                return None
            buf = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.unlink(path)
            raise
        finally:
            os.close(fd)
        return cls(path, buf, slot_bytes, slots)

    def proto(self) -> service_pb2.SharedRing:
        return service_pb2.SharedRing(path=self.path, slot_bytes=self.slot_bytes, slots=self.slots)

    def unlink(self) -> None:
        """Remove the file (idempotent); the mappings on both sides stay valid."""

        if self._linked:
            self._linked = False
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

    def read(self, shared: service_pb2.SharedBatch) -> dict[str, np.ndarray]:
        """Copy a batch out of its slot: ``{name: array}``, C-contiguous and writable, in one
        pooled buffer reused once nothing references the batch any more.

        Raises:
            InvalidArgumentError: the message points outside the slot (a server bug).
        """

        if shared.slot >= self.slots:
            raise InvalidArgumentError(
                f"SampleResponse.shared.slot={shared.slot} is outside the ring's {self.slots} slots"
            )
        slot = self._array[shared.slot * self.slot_bytes:(shared.slot + 1) * self.slot_bytes]
        views, total = [], 0
        for col in shared.columns:
            dtype = dtype_from_proto(col.dtype)
            shape, strides = tuple(col.shape), tuple(col.strides)
            if len(strides) != len(shape) or any(d < 0 for d in shape) or any(
                    s < 0 for s in strides):
                raise InvalidArgumentError(
                    f"SampleResponse.shared column {col.name!r}: shape {shape} and strides "
                    f"{strides} do not describe an array"
                )
            count = int(np.prod(shape, dtype=np.int64))
            end = col.offset + (_extent(shape, strides, dtype.itemsize) if count else 0)
            if end > slot.size:
                raise InvalidArgumentError(
                    f"SampleResponse.shared column {col.name!r} ends at byte {end}, past the "
                    f"slot's {slot.size}"
                )
            src = np.ndarray(shape, dtype, buffer=slot, offset=col.offset if count else 0,
                             strides=strides)
            views.append((col.name, src, total))
            total += _round_up(count * dtype.itemsize, _ALIGN)
        buf = self._pool.take(total)
        out: dict[str, np.ndarray] = {}
        for name, src, off in views:
            dst = buf[off:off + src.nbytes].view(src.dtype).reshape(src.shape)
            np.copyto(dst, src)
            out[name] = dst
        return out

    def close(self) -> None:
        """Unlink (if not yet) and unmap."""

        self.unlink()
        self._unmap()
