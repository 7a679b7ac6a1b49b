"""The in-memory runtime of one table: slots, selectors, columns, counters and rate limiter.

A table keeps every present item in a *slot* (0 .. capacity-1). Per slot it holds the item id,
raw priority, times sampled, numeric lineage and one row of each field's column (a numpy array
of shape ``(capacity, *field.shape)``), so a sample is one fancy-indexing gather per field. The
sampler and remover selectors index the same slots.

Slots are handed out by `SlotAllocator`, always the lowest free slot. The allocator's state is
therefore a function of which slots are occupied, so a table loaded from the view (which stores
each item's slot) continues exactly like the one that wrote it, and sums, selector states and
seeded samples are identical after a restart or a rebuild.

The engine drives a table in two ways: `Table.mirror` replays what `replaybuf.view.View.write`
applied (the same code for live writes, catch-up and rebuild), and `Table.draw` serves a
sample. Items that reach ``max_times_sampled`` in a draw are *retired* at once: out of the
sampler and remover, no longer counted by the rate limiter, but still occupying their slot
until the engine logs their ``ItemsEvicted(MAX_TIMES_SAMPLED)`` and mirrors it.

Thread-safety: every public method takes the table's lock except the allocator's, which only
the engine's writer thread uses. Cost: `draw` is O(batch * log capacity) plus the gather;
mirroring an event is O(items in it), except that a removal of the current maximum priority
makes the next `default_priority` O(capacity) (numpy, amortized over removals).

Example::

    table = Table(0, TableConfig("t", {"x": np.float32}, capacity=4), created_lsn=1)
    assert table.size == 0 and table.default_priority() == 1.0
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from replaybuf.applier import Applied
from replaybuf.errors import DataLossError, FailedPreconditionError, ViewDamagedError
from replaybuf.gather import RowGather
from replaybuf.rate_limiter import RateLimiter, RateLimiterState
from replaybuf.seeding import Reseeder
from replaybuf.selectors import PrioritizedSelector, Selector, make_selector
from replaybuf.slot_map import SlotMap
from replaybuf.table_config import SelectorConfig, TableConfig
from replaybuf.table_snapshot import Gathered, TableState
from replaybuf.tensors import from_tensor

__all__ = ["Table", "SlotAllocator", "Draw", "LINEAGE_NUMERIC"]

#: Numeric lineage columns kept per slot in RAM (request id and source are read from the view).
LINEAGE_NUMERIC = (("episode_id", np.uint64), ("step", np.uint64),
                   ("model_version", np.int64), ("timestamp_ms", np.int64))
_CHUNK = 4096


class _HasLsn(Protocol):
    lsn: int


class SlotAllocator:
    """Lowest-free-slot allocator over ``capacity`` slots, with undo for failed writes.

    Between `begin` and `commit` every change is journaled; `rollback` undoes them (the view's
    transaction was aborted). Cost: `alloc` scans the occupancy bitmap from the lowest free
    slot, usually O(n). Not thread-safe (the engine's writer thread only).
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._occ = np.zeros(capacity, dtype=np.bool_)
        self._hint = 0  # every slot below it is occupied
        self._count = 0
        self._journal: list[tuple[bool, np.ndarray, int]] | None = None

    @property
    def count(self) -> int:
        return self._count

    def load(self, slots: np.ndarray) -> None:
        self._occ[:] = False
        self._occ[slots] = True
        self._count = int(slots.size)
        free = np.flatnonzero(~self._occ)
        self._hint = int(free[0]) if free.size else self.capacity

    def alloc(self, n: int) -> np.ndarray:
        if self._count + n > self.capacity:
            raise DataLossError(
                f"no free slot for {n} items ({self._count} of {self.capacity} used); the log "
                f"holds an append into a full table without its capacity eviction"
            )
        if n <= 0:
            return np.empty(0, np.int64)
        parts = []
        pos, need = self._hint, n
        while need:
            chunk = self._occ[pos : pos + max(_CHUNK, 2 * need)]
            free = np.flatnonzero(~chunk)[:need] + pos
            parts.append(free)
            need -= free.size
            pos += chunk.size
        slots = np.concatenate(parts) if len(parts) > 1 else parts[0]
        if self._journal is not None:
            self._journal.append((True, slots, self._hint))
        self._occ[slots] = True
        self._count += n
        self._hint = int(slots[-1]) + 1 if n else self._hint
        return slots.astype(np.int64)

    def free(self, slots: np.ndarray) -> None:
        if not slots.size:
            return
        if self._journal is not None:
            self._journal.append((False, slots, self._hint))
        self._occ[slots] = False
        self._count -= int(slots.size)
        self._hint = min(self._hint, int(slots.min()))

    def begin(self) -> None:
        self._journal = []

    def commit(self) -> None:
        self._journal = None

    def rollback(self) -> None:
        for allocated, slots, hint in reversed(self._journal or []):
            self._occ[slots] = not allocated
            self._count += -int(slots.size) if allocated else int(slots.size)
            self._hint = hint
        self._journal = None


@dataclass
class Draw:
    """One sampled batch as the table saw it (the engine adds strings and builds SampleInfo)."""

    ids: np.ndarray
    data: dict[str, np.ndarray]
    priorities: np.ndarray
    probabilities: np.ndarray
    weights: np.ndarray
    times_sampled: np.ndarray
    lineage: dict[str, np.ndarray]
    lsn: int
    table_size: int
    retired: np.ndarray
    request_ids: np.ndarray | None = None  # object arrays of str, cached per slot in RAM
    sources: np.ndarray | None = None
    strings_missing: np.ndarray | None = None  # True where the cache lacks them (view has)


#: Signatures whose packed row is at most this many bytes are stored as one record array.
_PACKED_ROW_MAX = 1024


def _selector(cfg: SelectorConfig, capacity: int) -> Selector:
    if cfg.kind == "prioritized":
        return PrioritizedSelector(capacity, cfg.alpha, with_replacement=cfg.with_replacement)
    if cfg.kind == "uniform":
        # Unit masses in a sum tree rather than UniformSelector: its swap-remove order depends
        # on the history of removals, so a table reloaded from the view would draw other items
        # for the same seed. A sum tree is a function of the occupied slots alone.
        return PrioritizedSelector(capacity, 1.0, with_replacement=cfg.with_replacement)
    return make_selector(cfg.kind, capacity)


@functools.lru_cache(maxsize=64)
def _byte_segments(src: np.dtype, dst: np.dtype) -> tuple[tuple[int, int, int], ...]:
    """How to copy records of `src` (the applier's packed payload rows) into records of
    `dst` (a table's aligned rows) byte for byte: ``(src offset, dst offset, width)`` runs
    of fields that lie back to back in both. Empty when a field of `dst` is missing from
    `src` or has another dtype there (then each field is assigned, with its cast)."""

    out: list[list[int]] = []
    for name in dst.names:
        field = src.fields.get(name)
        if field is None or field[0] != dst.fields[name][0]:
            return ()
        s, d, w = field[1], dst.fields[name][1], field[0].itemsize
        if out and out[-1][0] + out[-1][2] == s and out[-1][1] + out[-1][2] == d:
            out[-1][2] += w
        else:
            out.append([s, d, w])
    return tuple((s, d, w) for s, d, w in out)


def _unique_counts(slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(slots, return_counts=True)``; O(n) when slots are already sorted (the
    stratified sum-tree draw returns them so)."""

    n = slots.size
    step = np.diff(slots)
    if step.size and (step > 0).all():  # the usual case: no repeats
        return slots, np.ones(n, np.int64)
    if n < 2 or (step < 0).any():
        return np.unique(slots, return_counts=True)
    first = np.empty(n, np.bool_)
    first[0] = True
    np.not_equal(step, 0, out=first[1:])
    starts = np.flatnonzero(first)
    return slots[starts], np.diff(starts, append=n)


class Table:
    """One table's RAM state; see the module docstring."""

    def __init__(self, index: int, config: TableConfig, *, created_lsn: int,
                 clock: _HasLsn | None = None, allocator: SlotAllocator | None = None) -> None:
        """Create an empty table.

        Args:
            index: the table's index in the view.
            config: its configuration.
            created_lsn: LSN of its TableCreated event.
            clock: an object whose ``lsn`` is the engine-wide LSN mirrored so far; a draw
                reports ``max(clock.lsn, last LSN that changed this table)``.
            allocator: the slot allocator the view used for this table's first events.
        """

        self.index = index
        self.config = config
        self.name = config.name
        self.created_lsn = created_lsn
        cap = config.capacity
        self.allocator = allocator if allocator is not None else SlotAllocator(cap)
        self.limiter = RateLimiter(config.rate_limiter, name=config.name)
        self.lsn = created_lsn
        self._clock = clock
        self._lock = threading.Lock()
        self._sampler = _selector(config.sampler, cap)
        self._unit = config.sampler.kind != "prioritized"  # the sampler ignores priorities
        self._remover = _selector(config.remover, cap)
        self._ids = np.zeros(cap, np.uint64)  # 0 = empty slot
        self._slot_of = SlotMap()
        self._prio = np.full(cap, -np.inf)
        self._times = np.zeros(cap, np.uint64)
        self._lineage = {name: np.zeros(cap, dt) for name, dt in LINEAGE_NUMERIC}
        # Aligned fields (and a record size that is a multiple of the largest alignment), so
        # that a field of gathered records is a well-formed strided array (torch accepts it).
        row = np.dtype([(s.name, s.dtype, s.shape) for s in config.signature], align=True)
        self._field_names = tuple(config.field_names)
        if row.itemsize <= _PACKED_ROW_MAX:
            # Small rows (W2: 168 bytes) live in one record array: a sample copies one
            # opaque record per row, and each field is a strided view of that copy.
            self._rows: np.ndarray | None = np.zeros(cap, row)
            self._columns = {s.name: self._rows[s.name] for s in config.signature}
        else:
            # Large rows (images): one array per field, so a sample copies each byte once.
            self._rows = None
            self._columns = {s.name: np.zeros((cap, *s.shape), s.dtype)
                             for s in config.signature}
        self._gatherer = RowGather()  # compiled row copies into recycled sample buffers
        # Request id and source per slot, so a sample needs no view read. Set on append,
        # cleared on evict; after a load they are filled lazily from the view (strings_missing).
        self._req = np.full(cap, "", dtype=object)
        self._src = np.full(cap, "", dtype=object)
        self._str_known = np.zeros(cap, np.bool_)
        self._retired: set[int] = set()
        self._reseeder = Reseeder()
        self._max_p = -np.inf
        self._max_dirty = False

    # -- loading ------------------------------------------------------------------------------

    def load(self, metas: np.ndarray, rows: np.ndarray, *, inserts: int, samples: int,
             evictions: int, columns: dict[str, np.ndarray] | None = None) -> None:
        """Fill the table from the view's records (`replaybuf.view.View.load`), in id order;
        `columns` (field -> n values) replaces the fields of `rows` when given.

        Cost: O(n) numpy work plus the selectors' bulk inserts.
        """

        if columns is None:
            columns = {s.name: rows[s.name] for s in self.config.signature}
        if self.config.has_reward:  # the current (maybe corrected) reward lives in the meta
            columns[self.config.reward_field] = metas["reward"]
        state = TableState(ids=metas["item_id"], slots=metas["slot"].astype(np.int64),
                           priorities=metas["priority"],
                           lineage={name: metas[name] for name, _ in LINEAGE_NUMERIC},
                           columns=columns)
        try:
            self.load_state(state, metas["times_sampled"], inserts=inserts, samples=samples,
                            evictions=evictions)
        except ValueError as exc:
            raise ViewDamagedError(f"the view's items do not fit: {exc}") from exc

    def load_state(self, state: TableState, times_sampled: np.ndarray, *, inserts: int,
                   samples: int, evictions: int) -> None:
        """Fill the empty table from its items in id order (`load`, or a snapshot file of
        `replaybuf.table_snapshot`), their times sampled and the committed counters.

        Raises:
            ValueError: the state does not fit this table (sizes, fields, dtypes, slots).

        Cost: O(n) numpy work plus the selectors' bulk inserts.
        """

        n = state.ids.size
        slots = np.asarray(state.slots, np.int64)
        cap = self.config.capacity
        if any(a.shape[:1] != (n,) for a in (slots, state.priorities, times_sampled,
                                             *state.lineage.values(), *state.columns.values())):
            raise ValueError(f"table {self.name!r}: the state's arrays differ in length")
        if set(state.columns) != set(self._columns) or set(state.lineage) != set(
                self._lineage):
            raise ValueError(f"table {self.name!r}: the state has other fields")
        for name, col in state.columns.items():
            mine = self._columns[name]
            if col.shape[1:] != mine.shape[1:] or not np.can_cast(col.dtype, mine.dtype,
                                                                  "same_kind"):
                raise ValueError(f"table {self.name!r}: field {name!r} is {col.dtype}"
                                 f"{col.shape[1:]}, not {mine.dtype}{mine.shape[1:]}")
        if n and (slots.min() < 0 or slots.max() >= cap):
            raise ValueError(f"table {self.name!r}: slots out of range")
        occupied = np.zeros(cap, np.bool_)
        occupied[slots] = True
        if int(np.count_nonzero(occupied)) != n:
            raise ValueError(f"table {self.name!r}: two items in one slot")
        at: slice | np.ndarray = slots  # a slice where the items fill slots 0..n-1 in order
        if n and int(slots[0]) == 0 and int(slots[-1]) == n - 1 and (
                n < 3 or (slots[1:] > slots[:-1]).all()):
            at = slice(0, n)
        with self._lock:
            if len(self._slot_of):
                raise ValueError(f"table {self.name!r} is not empty")
            ids = np.asarray(state.ids, np.uint64)
            self._slot_of.load(ids, slots)
            self.allocator.load(slots)
            self._ids[at] = ids
            self._prio[at] = state.priorities
            self._times[at] = times_sampled
            for name, _ in LINEAGE_NUMERIC:
                self._lineage[name][at] = state.lineage[name]
            for name, col in state.columns.items():
                self._columns[name][at] = col
            k = self.config.max_times_sampled
            active = slots
            if k:
                done = np.asarray(times_sampled) >= k
                self._retired = set(ids[done].tolist())
                active = slots[~done]
            prios = self._prio[active]
            self._sampler.insert(active, self._sampler_values(prios))
            self._remover.insert(active, prios)
            self._max_p = float(self._prio.max())
            self.limiter.restore(RateLimiterState(inserts, samples,
                                                  evictions + len(self._retired)))

    def export_state(self) -> TableState:
        """The present items' ids, slots, priorities, lineage (copies) and fields (gathered
        as they are written) in id order, what `load_state` takes. For a snapshot at close:
        the fields must not change until it is written (the engine holds its writer lock).
        Cost: O(n) numpy gathers."""

        with self._lock:
            ids, slots = self._slot_of.items()
            return TableState(
                ids=ids, slots=slots, priorities=self._prio[slots],
                lineage={name: a[slots] for name, a in self._lineage.items()},
                columns={name: Gathered(c, slots) for name, c in self._columns.items()})

    def _sampler_values(self, prios: np.ndarray) -> np.ndarray:
        return np.ones(prios.size) if self._unit else prios

    # -- queries ------------------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Items present and sampleable (retired items excluded). O(1)."""

        return len(self._slot_of) - len(self._retired)

    @property
    def occupied(self) -> int:
        """Slots in use, retired items included. O(1)."""

        return len(self._slot_of)

    def _max_locked(self) -> float:
        if self._max_dirty:
            self._max_p = float(self._prio.max())
            self._max_dirty = False
        return self._max_p

    def max_priority(self) -> float:
        """Largest raw priority present (0.0 when empty). O(1), O(capacity) after the previous
        maximum was removed or lowered."""

        with self._lock:
            m = self._max_locked()
            return m if m > -np.inf else 0.0

    def default_priority(self) -> float:
        """Priority of an appended item that brings none: the table's max priority, as in PER;
        1.0 when the table is empty or every priority is 0."""

        with self._lock:
            m = self._max_locked()
            return m if m > 0 else 1.0

    def total_priority(self) -> float:
        """Sum of p^alpha over sampleable items with a prioritized sampler (O(1)), else the sum
        of their raw priorities (O(capacity))."""

        with self._lock:
            if not self._unit:
                return float(self._sampler.total())
            live = self._prio[self._ids != 0]
            if self._retired:
                ids = self._ids[self._ids != 0].tolist()
                live = live[np.fromiter((i not in self._retired for i in ids), np.bool_)]
            return float(live.sum())

    def slots_of(self, ids: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(present_mask, slots)`` of item ids (slot -1 where absent). O(n)."""

        with self._lock:
            slots = self._slot_of.lookup(ids)
        return slots >= 0, slots

    def retired_ids(self) -> np.ndarray:
        """Ids that reached max_times_sampled and still occupy a slot, ascending."""

        with self._lock:
            return np.array(sorted(self._retired), dtype=np.uint64)

    def present(self, ids: np.ndarray) -> np.ndarray:
        """Mask of ids that occupy a slot (retired included)."""

        mask, _ = self.slots_of(ids)
        return mask

    def rewards(self, slots: np.ndarray) -> np.ndarray:
        """Current rewards (float64) at slots."""

        with self._lock:
            return self._columns[self.config.reward_field][slots].astype(np.float64)

    def pick_victims(self, n: int) -> np.ndarray:
        """Ids the remover would evict to make room for n more items (no change made)."""

        with self._lock:
            slots = np.asarray(self._remover.select(n), dtype=np.int64)
            return self._ids[slots].copy()

    def item(self, item_id: int) -> dict[str, object] | None:
        """RAM view of one present item (fields, priority, times sampled), or None."""

        with self._lock:
            slot = self._slot_of.get(int(item_id))
            if slot is None:
                return None
            out: dict[str, object] = {n: c[slot].copy() for n, c in self._columns.items()}
            out.update(slot=slot, priority=float(self._prio[slot]),
                       times_sampled=int(self._times[slot]),
                       retired=int(item_id) in self._retired)
            out.update({n: a[slot].item() for n, a in self._lineage.items()})
            return out

    def snapshot_ids(self) -> np.ndarray:
        """Ids of every occupied slot, ascending."""

        with self._lock:
            return np.sort(self._ids[self._ids != 0])

    # -- mirroring applied events -------------------------------------------------------------

    def mirror(self, applied: Applied, *, live: bool) -> None:
        """Apply in RAM what the view applied for one event.

        Args:
            applied: from `View.write`.
            live: the event was produced by this process just now. Its rate-limiter inserts
                are committed by the caller's reservation and its ItemsSampled draws were
                already counted by `draw`, so neither is counted again.
        """

        kind = applied.kind
        with self._lock:
            if kind == "items_appended":
                self._mirror_append(applied, live)
            elif kind == "items_evicted":
                self._mirror_evict(applied)
            elif kind == "priorities_updated":
                self._mirror_priorities(applied)
            elif kind == "rewards_corrected":
                col = self._columns[self.config.reward_field]
                col[applied.slots] = applied.values.astype(col.dtype)
            elif kind == "items_sampled" and not live:
                self._mirror_sampled(applied)
            self.lsn = applied.lsn
        if kind == "items_appended" and not live and applied.ids.size:
            self.limiter.insert(int(applied.ids.size))

    def _mirror_append(self, a: Applied, live: bool) -> None:
        slots, ids, prios = a.slots, a.ids, a.values
        body = a.event.items_appended
        # The lowest free slots are usually consecutive: then a slice, which copies rows
        # several times faster than a fancy index.
        at: slice | np.ndarray = slots
        if slots.size and int(slots[-1]) - int(slots[0]) == slots.size - 1 and (
                slots.size < 3 or (slots[1:] > slots[:-1]).all()):
            at = slice(int(slots[0]), int(slots[-1]) + 1)
        segments = (_byte_segments(a.rows.dtype, self._rows.dtype)
                    if a.rows is not None and self._rows is not None
                    and a.rows.flags.c_contiguous else None)
        if segments:  # whole records' bytes: one strided copy instead of one per field
            dst = self._rows.view(np.uint8).reshape(self._rows.size, self._rows.itemsize)
            src = a.rows.view(np.uint8).reshape(a.rows.size, a.rows.itemsize)
            for s, d, w in segments:
                dst[at, d : d + w] = src[:, s : s + w]
        elif a.rows is not None:  # decoded by the applier
            for name, col in self._columns.items():
                col[at] = a.rows[name]
        else:
            for c in body.data.columns:
                self._columns[c.name][at] = from_tensor(c.tensor, name=c.name)
        self._ids[at] = ids
        self._slot_of.add(ids, slots)
        self._prio[at] = prios
        self._times[at] = 0
        for name, dt in LINEAGE_NUMERIC:
            if a.lineage is not None:  # decoded by the applier
                self._lineage[name][at] = a.lineage[name]
                continue
            col = getattr(body.lineage, name)
            self._lineage[name][at] = np.asarray(col, dtype=dt) if len(col) else 0
        strings = a.strings or (list(body.lineage.request_id), list(body.lineage.source))
        for arr, vals in zip((self._req, self._src), strings):
            # 0, 1 or n entries, broadcast as the applier stores them
            n = slots.size
            arr[at] = vals if len(vals) == n else (
                [vals[min(i, len(vals) - 1)] for i in range(n)] if vals else "")
        self._str_known[at] = True
        self._sampler.insert(slots, self._sampler_values(prios))
        self._remover.insert(slots, prios)
        if prios.size and prios.max() > self._max_p:
            self._max_p = float(prios.max())

    def _mirror_evict(self, a: Applied) -> None:
        if not a.ids.size:
            return
        ids, slots = a.ids, a.slots
        keep = np.ones(ids.size, np.bool_)
        if self._retired:
            keep = np.fromiter((i not in self._retired for i in ids.tolist()), np.bool_,
                               ids.size)
            for i in ids[~keep].tolist():
                self._retired.discard(i)
        active = slots[keep]
        if active.size:
            self._sampler.remove(active)
            self._remover.remove(active)
        if (self._prio[slots] >= self._max_p).any():
            self._max_dirty = True
        self._prio[slots] = -np.inf
        self._ids[slots] = 0
        self._req[slots] = ""
        self._src[slots] = ""
        self._str_known[slots] = False
        self._slot_of.remove(ids)
        if active.size:
            self.limiter.delete(int(active.size))

    def _mirror_priorities(self, a: Applied) -> None:
        slots, vals = a.slots, a.values
        if not slots.size:
            return
        if (self._prio[slots] >= self._max_p).any():
            self._max_dirty = True
        self._prio[slots] = vals
        if vals.max() > self._max_p:
            self._max_p = float(vals.max())
        if self._retired:
            keep = np.fromiter((int(i) not in self._retired for i in a.ids), np.bool_, a.ids.size)
            slots, vals = slots[keep], vals[keep]
        if slots.size:
            if not self._unit:
                self._sampler.update(slots, vals)
            self._remover.update(slots, vals)

    def _mirror_sampled(self, a: Applied) -> None:
        if a.count:
            self.limiter.sample(a.count)
        ids, counts = np.unique(a.ids, return_counts=True)
        slots = self._slot_of.lookup(ids)
        keep = slots >= 0
        slots, counts = slots[keep], counts[keep]
        if slots.size:
            order = np.argsort(slots)
            slots = slots[order]
            self._times[slots] += counts[order].astype(np.uint64)
            self._retire(slots)

    def _retire(self, slots: np.ndarray) -> np.ndarray:
        """Retire items at slots that reached max_times_sampled; returns their ids."""

        k = self.config.max_times_sampled
        if not k:
            return np.empty(0, np.uint64)
        hit = slots[self._times[slots] >= k]
        ids = self._ids[hit]
        fresh = np.fromiter((int(i) not in self._retired for i in ids), np.bool_, ids.size)
        hit, ids = hit[fresh], ids[fresh]
        if hit.size:
            self._sampler.remove(hit)
            self._remover.remove(hit)
            self._retired.update(ids.tolist())
            self.limiter.delete(int(hit.size))
        return ids

    # -- sampling -----------------------------------------------------------------------------

    def draw(self, batch_size: int, *, beta: float, seed: int,
             fields: Sequence[str] | None = None, out: np.ndarray | None = None) -> Draw:
        """Sample a batch with ``numpy.random.default_rng(seed)`` and count it.

        Deterministic: the same table state (the same LSN), seed, batch size and beta give
        the same ids and weights. The caller holds a rate-limiter reservation. ``out``: a
        uint8 buffer to gather the rows into when they fit (`RowGather.gather`).

        Raises:
            FailedPreconditionError: nothing to sample (empty, all retired, zero total
                priority, or a batch larger than the table without replacement).
        """

        with self._lock:
            rng = self._reseeder.reseed(seed)  # == numpy.random.default_rng(seed)
            if self.size == 0:
                raise FailedPreconditionError(
                    f"table {self.name!r} has no item to sample; append items first"
                )
            res = self._sampler.sample(batch_size, rng, beta=beta)
            slots = np.asarray(res.slots, dtype=np.int64)
            uniq, counts = _unique_counts(slots)
            self._times[uniq] += counts.astype(np.uint64)
            # Per-slot metadata first: the data copy (14 MB for a W3 batch) evicts it from
            # the caches, after which each of these scattered reads would miss.
            draw = Draw(
                ids=self._ids[slots],
                data={},
                priorities=self._prio[slots],
                probabilities=np.asarray(res.probabilities, dtype=np.float64),
                weights=np.asarray(res.weights, dtype=np.float64),
                times_sampled=self._times[slots],
                lineage={n: a[slots] for n, a in self._lineage.items()},
                lsn=max(self.lsn, self._clock.lsn if self._clock is not None else 0),
                table_size=self.size,
                retired=self._retire(uniq),
                request_ids=self._req[slots],
                sources=self._src[slots],
                strings_missing=~self._str_known[slots],
            )
            draw.data = self._gather(slots, self._field_names if fields is None else fields,
                                     out)
        return draw

    def _gather(self, slots: np.ndarray, names: Sequence[str],
                out: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The named fields' rows at slots, in buffers the table reuses once the caller
        drops them, or in ``out`` when they fit (`replaybuf.gather`). Holds the lock."""

        if self._rows is not None:
            (got,) = self._gatherer.gather((self._rows,), slots, out=out)
            return {n: got[n] for n in names}
        return dict(zip(names, self._gatherer.gather([self._columns[n] for n in names], slots,
                                                     out=out)))

    def cache_strings(self, ids: np.ndarray, request_ids: Sequence[str],
                      sources: Sequence[str]) -> None:
        """Remember request ids and sources read from the view for items still present."""

        with self._lock:
            slots = self._slot_of.lookup(ids)
            for slot, r, s in zip(slots.tolist(), request_ids, sources):
                if slot >= 0:
                    self._req[slot], self._src[slot] = r, s
                    self._str_known[slot] = True

    def close(self) -> None:
        """Wake every rate-limiter waiter with ClosedError."""

        self.limiter.cancel()

