"""Idempotent appends: the recent ``(producer_id, producer_seq)`` of each producer, bounded.

A producer (an actor, a writer client) numbers its batches 1, 2, 3, ... and resends a batch
with the same number when an ack is lost. The log looks each append up here: a known pair is a
retry and gets the original LSNs back; nothing is written. The table is derived state: a log
rebuilds it on open from the frames' headers (Kafka's producer state works the same way).
`check_producer` validates the pair an append carries.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict

from replaybuf.errors import InvalidArgumentError
from replaybuf.frame import NO_PRODUCER

__all__ = ["ProducerDedup", "check_producer"]


def check_producer(producer_id: object, producer_seq: object) -> tuple[bytes, int]:
    """Validate an append's producer; return ``(producer_id, producer_seq)`` to store.

    Neither given means no producer: ``(NO_PRODUCER, 0)``.

    Raises:
        InvalidArgumentError: only one given, an id that is not 16 bytes or is all zero, or a
            sequence that is not an int in ``[1, 2**64)``.
    """

    if producer_id is None and producer_seq is None:
        return NO_PRODUCER, 0
    if producer_id is None or producer_seq is None:
        raise InvalidArgumentError(
            f"producer_id={producer_id!r} and producer_seq={producer_seq!r}: give both "
            "(for idempotent retries) or neither"
        )
    if not isinstance(producer_id, (bytes, bytearray)) or len(producer_id) != 16:
        raise InvalidArgumentError(
            f"producer_id={producer_id!r} must be 16 bytes (e.g. uuid.uuid4().bytes)"
        )
    if producer_id == NO_PRODUCER:
        raise InvalidArgumentError(
            "producer_id is all zero bytes, which means 'no producer'; use e.g. "
            "uuid.uuid4().bytes"
        )
    if (
        not isinstance(producer_seq, int)
        or isinstance(producer_seq, bool)
        or not 1 <= producer_seq < 2**64
    ):
        raise InvalidArgumentError(
            f"producer_seq={producer_seq!r} must be an int in [1, 2**64); number a "
            "producer's batches 1, 2, 3, ..."
        )
    return bytes(producer_id), producer_seq


class ProducerDedup:
    """Recent ``(producer_id, producer_seq) -> (first_lsn, count)``, bounded. Not thread-safe.

    Per producer it keeps every sequence in ``(newest - window, newest]`` that was appended
    (out-of-order arrival inside the window is fine); producers are evicted least recently used.
    Cost: O(log window) per add, O(1) per lookup.
    """

    def __init__(self, window: int, max_producers: int) -> None:
        self._window = window
        self._max_producers = max_producers
        # producer -> [newest_seq, {seq: first_lsn << 32 | count}, heap of seqs]
        self._producers: OrderedDict[bytes, list] = OrderedDict()

    def lookup(self, pid: bytes, seq: int, count: int | None) -> tuple[int, int] | None:
        """Return the original ``(first, last)`` LSNs of a retry, or None for a new sequence.

        Args:
            count: the retry's record count, checked against the original's; None skips the
                check (for callers that look a retry up before building its records).

        Raises:
            InvalidArgumentError: ``seq`` is older than the window (cannot tell it from a
                retry), or reuses a sequence for a batch with another record count.
        """

        entry = self._producers.get(pid)
        if entry is None:
            return None
        self._producers.move_to_end(pid)
        newest, seqs, _ = entry
        packed = seqs.get(seq)
        if packed is not None:
            first, n = packed >> 32, packed & 0xFFFFFFFF
            if count is not None and n != count:
                raise InvalidArgumentError(
                    f"producer_seq={seq} of producer {pid.hex()} was already used for a batch of "
                    f"{n} records (LSN {first}..{first + n - 1}), and this one has {count}; a "
                    "retry must resend the same batch, a new batch needs a new producer_seq"
                )
            return first, first + n - 1
        if seq <= newest - self._window:
            raise InvalidArgumentError(
                f"producer_seq={seq} of producer {pid.hex()} is older than the dedup window "
                f"(the last {self._window} sequences, newest {newest}), so it cannot be told "
                "apart from a retry of a batch already appended; producers must use increasing "
                "sequences (raise FileLogConfig.dedup_window for deeper retry pipelines)"
            )
        return None

    def add(self, pid: bytes, seq: int, first: int, count: int) -> None:
        """Remember that batch ``seq`` of ``pid`` holds LSNs ``first .. first + count - 1``."""

        entry = self._producers.get(pid)
        if entry is None:
            entry = [0, {}, []]
            self._producers[pid] = entry
            if len(self._producers) > self._max_producers:
                self._producers.popitem(last=False)
        else:
            self._producers.move_to_end(pid)
        seqs, heap = entry[1], entry[2]
        seqs[seq] = first << 32 | count
        heapq.heappush(heap, seq)
        if seq > entry[0]:
            entry[0] = seq
            floor = seq - self._window
            while heap[0] <= floor:
                seqs.pop(heapq.heappop(heap), None)
