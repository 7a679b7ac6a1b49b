"""torch helpers: tensors from samples, and `ReplayDataset` for `torch.utils.data.DataLoader`.

This module imports torch; ``import replaybuf_client`` does not import it (the client uses it
lazily for ``as_torch=True``).
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from replaybuf.errors import InvalidArgumentError

from ._types import Sample
from .client import ReplayClient

__all__ = ["ReplayDataset", "to_torch", "to_torch_sample", "WORKER_SEED_STRIDE"]

#: DataLoader worker ``w`` samples with seeds ``seed + w * WORKER_SEED_STRIDE + k`` (batch k),
#: so workers never draw with the same seed before 2**32 batches.
WORKER_SEED_STRIDE = 1 << 32

_TORCH_DTYPES: dict[np.dtype, torch.dtype] = {
    np.dtype(np.bool_): torch.bool,
    np.dtype(np.int8): torch.int8,
    np.dtype(np.uint8): torch.uint8,
    np.dtype(np.int16): torch.int16,
    np.dtype(np.uint16): torch.uint16,
    np.dtype(np.int32): torch.int32,
    np.dtype(np.uint32): torch.uint32,
    np.dtype(np.int64): torch.int64,
    np.dtype(np.uint64): torch.uint64,
    np.dtype(np.float16): torch.float16,
    np.dtype(np.float32): torch.float32,
    np.dtype(np.float64): torch.float64,
}

_warned_no_pin = False
_warn_lock = threading.Lock()

# Clients inherited from a parent process through fork. They are kept referenced and never
# closed or garbage-collected here: their gRPC resources belong to the parent.
_INHERITED: list[ReplayClient] = []


def _can_pin() -> bool:
    global _warned_no_pin
    accelerator = getattr(torch, "accelerator", None)
    available = accelerator.is_available() if accelerator is not None else torch.cuda.is_available()
    if not available:
        with _warn_lock:
            if not _warned_no_pin:
                _warned_no_pin = True
                warnings.warn(
                    "pin_memory=True but no accelerator is available; tensors stay in pageable memory",
                    RuntimeWarning,
                    stacklevel=3,
                )
    return bool(available)


def to_torch(data: Mapping[str, Any], *, pin_memory: bool = False,
             owned: bool = False) -> dict[str, torch.Tensor]:
    """``{field: numpy array}`` as writable torch tensors: one copy per array.

    The copy is needed because sampled arrays are read-only views over the response's bytes
    (``torch.from_numpy`` on them would alias memory torch believes it may write). With
    ``owned`` (a batch copied out of a shared ring: writable arrays nobody else holds) the
    tensors wrap the arrays instead, without a copy. With ``pin_memory`` the copy goes
    straight into page-locked memory (if an accelerator exists; otherwise this warns once
    and skips pinning). Tensors already in ``data`` are kept (pinned if asked). Thread-safe;
    blocks for the copies.
    """

    pin = pin_memory and _can_pin()
    out: dict[str, torch.Tensor] = {}
    for name, value in data.items():
        if isinstance(value, torch.Tensor):
            out[name] = value.pin_memory() if pin and not value.is_pinned() else value
            continue
        arr = np.asarray(value)
        dtype = _TORCH_DTYPES.get(arr.dtype.newbyteorder("=") if arr.dtype.byteorder == ">" else arr.dtype)
        if dtype is None:
            raise InvalidArgumentError(f"field {name!r} has dtype {arr.dtype}, which torch cannot hold")
        if pin:
            tensor = torch.empty(arr.shape, dtype=dtype, pin_memory=True)
            tensor.numpy()[...] = arr
        elif owned and arr.flags.writeable and arr.flags.c_contiguous and arr.dtype.isnative:
            tensor = torch.from_numpy(arr)
        else:
            tensor = torch.from_numpy(np.array(arr, copy=True, order="C"))
        out[name] = tensor
    return out


def to_torch_sample(sample: Sample, *, pin_memory: bool = False, owned: bool = False) -> Sample:
    """The same `Sample` with ``data`` as torch tensors (``info`` stays numpy); ``owned``: see
    `to_torch`."""

    return replace(sample, data=to_torch(sample.data, pin_memory=pin_memory, owned=owned))


class ReplayDataset(IterableDataset):  # type: ignore[type-arg]
    """An endless (or ``num_batches``-long) stream of sampled batches for a `DataLoader`.

    Each item is one `Sample` (a whole batch), so use ``DataLoader(dataset, batch_size=None)``;
    ``pin_memory=True`` on the DataLoader pins the tensors (via `Sample.pin_memory`).

    Fork-safety: the dataset opens its `ReplayClient` lazily, on the first iteration **in each
    process**, and records the process id. A DataLoader worker (fork, spawn or forkserver)
    therefore opens its own channel; a client inherited from the parent through fork is never
    used, closed or garbage-collected in the child. Pickling drops the client.
    Caveat: gRPC's own fork handling can abort a forked child while the *parent* has gRPC calls
    in flight (seen rarely with a live sampler stream in the parent). When the training process
    itself samples over gRPC while workers start, use
    ``DataLoader(..., multiprocessing_context="spawn")``.

    Seeds: with ``seed`` given, worker ``w`` of ``W`` (from `torch.utils.data.get_worker_info`)
    samples with seeds ``seed + w * 2**32 + k``; the main process counts as worker 0. Without
    ``seed`` the server picks a different seed per stream. ``num_batches`` (0 = endless) is the
    total over all workers, split as evenly as possible.

    Blocking: iteration blocks like `Sampler` (waiting for the rate limiter, at most ``timeout``
    seconds per batch when given). Thread-safety: iterate each dataset object from one thread.

    Example:
        >>> from torch.utils.data import DataLoader
        >>> from replaybuf_client.torch import ReplayDataset
        >>> ds = ReplayDataset("127.0.0.1:50051", "replay", batch_size=256, seed=0)  # doctest: +SKIP
        >>> for batch in DataLoader(ds, batch_size=None, num_workers=2):  # doctest: +SKIP
        ...     loss = (torch.as_tensor(batch.info.weights) * td_error(batch.data) ** 2).mean()

    Args:
        address: ``"host:port"`` of the server.
        table: table to sample.
        batch_size: items per batch.
        beta: importance-weight exponent.
        seed: base seed (None: the server picks).
        fields: fields to return (default all).
        prefetch: batches kept in flight per worker.
        num_batches: total batches over all workers (0 = endless).
        timeout: per-batch wait for the rate limiter in seconds (None = forever).
        as_torch: torch tensors (True) or read-only numpy views (False).
        shared_memory: receive batches through a shared-memory ring (see
            `ReplayClient.sampler`; None: when the server is on this host's loopback and a
            batch is at least 1 MiB).
        client_options: keyword arguments for each process's `ReplayClient` (token, tls,
            timeout, max_message_bytes, retry, options).
    """

    def __init__(
        self,
        address: str,
        table: str,
        batch_size: int,
        *,
        beta: float = 0.4,
        seed: int | None = None,
        fields: Iterable[str] | None = None,
        prefetch: int = 2,
        num_batches: int = 0,
        timeout: float | None = None,
        as_torch: bool = True,
        shared_memory: bool | None = None,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.address = address
        self.table = table
        self.batch_size = batch_size
        self.beta = beta
        self.seed = seed
        self.fields = tuple(fields) if fields is not None else None
        self.prefetch = prefetch
        self.num_batches = num_batches
        self.timeout = timeout
        self.as_torch = as_torch
        self.shared_memory = shared_memory
        self.client_options = dict(client_options or {})
        self._client: ReplayClient | None = None
        self._pid: int | None = None

    @property
    def client_pid(self) -> int | None:
        """Process id that opened the current client (None before the first iteration)."""

        return self._pid

    def client(self) -> ReplayClient:
        """This process's client, opened on first use (never one inherited through fork)."""

        pid = os.getpid()
        if self._client is None or self._pid != pid or self._client.closed:
            if self._client is not None and self._pid != pid:
                _INHERITED.append(self._client)
            self._client = ReplayClient(self.address, **self.client_options)
            self._pid = pid
        return self._client

    def __iter__(self) -> Iterator[Sample]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        seed = None if self.seed is None else (self.seed + worker * WORKER_SEED_STRIDE) % (1 << 64)
        num_batches = self.num_batches
        if num_batches:
            num_batches = num_batches // workers + (worker < num_batches % workers)
            if num_batches == 0:
                return
        client = self.client()
        with client.sampler(
            self.table,
            self.batch_size,
            beta=self.beta,
            seed=seed,
            fields=self.fields,
            prefetch=self.prefetch,
            num_batches=num_batches,
            timeout=self.timeout,
            as_torch=self.as_torch,
            shared_memory=self.shared_memory,
        ) as batches:
            yield from batches

    def close(self) -> None:
        """Close this process's client, if this process opened it. Idempotent."""

        if self._client is not None and self._pid == os.getpid():
            self._client.close()
        self._client = None
        self._pid = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_client"] = None
        state["_pid"] = None
        return state
