"""A cache-aware B-ary sum tree with a min tree: the sampling core of prioritized replay.

Layout (``F`` = fanout, a power of two, default 16 = two cache lines of float64):

* level 0 holds the leaf values contiguously, padded with zeros to a multiple of ``F``;
* each internal level ``l >= 1`` holds one total and one minimum per node (the minimum over
  leaves > 0 below it, ``inf`` if none);
* the small upper levels also hold each node's running prefix sums over its ``F`` children
  (``prefix[k*F + c] = sum(child[k*F : k*F + c + 1])``, left to right, so non-decreasing):
  a descent step there is one vector compare of the target with 16 prefixes and a
  pop-count. The leaf level and levels with >= 128 nodes keep no prefixes: the descent
  builds them in registers from the 16 children it reads anyway (a log-step scan), so an
  update there rewrites two numbers per node instead of eighteen, and the leaves need no
  second 8-byte array.

All B walks of a batch advance one level at a time, so that their cache misses overlap,
and ``log_F(capacity)`` levels replace ``log_2``: 5 for a million leaves. Updates recompute
each touched node once per level from its children (deduplicated, in sorted order when the
slots are sorted), so the tree is a pure function of its leaves: no drift from delta
propagation, the total never goes negative, and a restored tree is bit-identical.

Everything lives in one 128-byte-aligned byte arena (int64 metadata, the float64 tree, mark
bytes for deduplication), so a kernel call passes one array instead of five: numba's
dispatcher costs ~0.13 us per array argument on every call. Kernels validate their whole
input before writing anything, so a rejected call leaves the tree unchanged.

Not thread-safe; the table serializes access. Kernels release the GIL.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from replaybuf._simd import (
    FANOUTS,
    JIT_OPTIONS,
    as_bits,
    below,
    block_min,
    block_sum,
    count_le,
    ld,
    leaf_pick,
    next_double,
    prefetch,
    scan_pick,
    st,
    vpow,
)
from replaybuf._validation import (
    E_EMPTY,
    E_NOT_OCCUPIED,
    E_OVERFLOW,
    E_SLOT,
    E_TARGET,
    E_TOTAL,
    E_VALUE,
    ERROR_SCALE,
    FORMAT_VERSION,
    as_slots,
    as_values,
    check_capacity,
    check_state_header,
    raise_for,
)
from replaybuf.errors import InvalidArgumentError, InvalidPriorityError

__all__ = ["SumTree", "FORMAT_VERSION", "DEFAULT_FANOUT", "HOLD_GIL_MAX_BATCH",
           "HOLD_GIL_MAX_WRITE"]

#: 16 float64 children = two 64-byte cache lines per node (fastest measured for 1e5..1e7).
DEFAULT_FANOUT = 16

_DBL_MAX = 1.7976931348623157e308
#: Levels whose arrays exceed this many bytes are prefetched (they miss in L2).
_PREFETCH_BYTES = 1 << 19

# meta layout (int64); per-level tables are indexed by level 0..L
_M_LEVELS = 0  # L: number of internal levels; the root is the single node of level L
_M_SHIFT = 1  # log2(fanout)
_M_CAPACITY = 2
_M_SIZE = 3  # occupied slots (maintained by the selectors' writes)
_M_POSITIVE = 4  # leaves with a value > 0
_M_FOFF = 5  # byte offset of the float64 tree in the arena
_M_FLEN = 6  # its length, in float64
_M_GOFF = 7  # byte offset of the mark bytes (one per level-1 node, for deduplication)
_M_GLEN = 8
_M_VOFF = 16  # + l: offset in the tree of level l's node values (level 0: the leaves)
_M_MOFF = _M_VOFF + 64  # + l: offset of level l's node minima (l >= 1)
_M_POFF = _M_MOFF + 64  # + l: offset of level l's per-node child prefix sums (l >= 2)
_M_NODES = _M_POFF + 64  # + l: number of nodes at level l (l = 0: capacity)
_M_PF = _M_NODES + 64  # + l: 1 if level l's blocks are worth prefetching
_M_SCAN = _M_PF + 64  # + l: 1 if level l keeps no prefix sums (searched by scanning children)
_M_SOFF = _M_SCAN + 64  # + l: offset of the blocks searched at level l (prefixes or children)
_META_LEN = _M_SOFF + 64
#: Levels with at least this many nodes are searched by a register scan of the children
#: instead of stored prefix sums: a batch touches most of their nodes, and rewriting a
#: node's 16 prefixes costs more than rebuilding them during the (twice dearer) search.
_SCAN_MIN_NODES = 128

# modes of _write_kernel
MODE_SET = 0  # raw values, no occupancy
MODE_CLEAR = 1  # raw: value 0
MODE_INSERT = 2  # value ** alpha, occupied
MODE_UPDATE = 3  # value ** alpha, slot must be occupied
MODE_REMOVE = 4  # value +0.0, slot must be occupied
# Occupancy lives in the leaf itself: a free slot holds +0.0, an occupied one its
# priority ** alpha, or -0.0 for priority 0 (sums and comparisons treat -0.0 as 0). So an
# update checks occupancy on the cache line it writes anyway: no flag array to miss in.


# ----------------------------------------------------------------------------------------------
# numba kernels (private; the typed wrappers below and in selectors.py are the API)


@njit(**JIT_OPTIONS)
def _views(arena):  # pragma: no cover - compiled
    """(meta int64, tree float64, marks uint8) views of the arena."""
    meta = arena[: _META_LEN * 8].view(np.int64)
    fo = meta[_M_FOFF]
    tree = arena[fo : fo + 8 * meta[_M_FLEN]].view(np.float64)
    go = meta[_M_GOFF]
    return meta, tree, arena[go : go + meta[_M_GLEN]]


@njit(inline="always", **JIT_OPTIONS)
def _recompute_level(buf, meta, marks, lvl, nodes, m, ordered, fan):  # pragma: no cover
    """Recompute nodes[:m] of level lvl from their children, and replace nodes[:m2] by
    their distinct parents (branch-free: by comparing neighbours when ordered, else with
    one mark byte per node, left zero). Returns m2.

    Totals of scanned levels are pairwise sums (vector adds); levels with stored prefixes
    keep the serial running sum, whose prefixes must be non-decreasing for the count.
    Inlined into callers that pass ``fan`` as a constant, so the width dispatch folds away.
    """
    shift = meta[_M_SHIFT]
    cv = meta[_M_VOFF + lvl - 1]
    po = meta[_M_POFF + lvl]
    vo = meta[_M_VOFF + lvl]
    mo = meta[_M_MOFF + lvl]
    cm = meta[_M_MOFF + lvl - 1]
    scanned = meta[_M_SCAN + lvl] != 0
    if meta[_M_PF + lvl]:
        # scattered nodes: request all their lines first so that the misses overlap
        for q in range(m):
            base = ld(nodes, q) << shift
            for c in range(0, fan, 8):
                prefetch(buf, cv + base + c, False)
                if lvl > 1:
                    prefetch(buf, cm + base + c, False)
                if not scanned:
                    prefetch(buf, po + base + c, True)
    m2 = 0
    prev = -1
    for q in range(m):
        k = ld(nodes, q)
        base = k << shift
        if scanned:
            st(buf, vo + k, block_sum(buf, cv + base, fan))
        else:
            acc = 0.0
            for c in range(fan):
                acc += ld(buf, cv + base + c)
                st(buf, po + base + c, acc)
            st(buf, vo + k, acc)
        if lvl == 1:
            st(buf, mo + k, block_min(buf, cv + base, fan, True))
        else:
            st(buf, mo + k, block_min(buf, cm + base, fan, False))
        parent = k >> shift
        st(nodes, m2, parent)
        if ordered:
            m2 += parent != prev
            prev = parent
        else:
            m2 += 1 - np.int64(ld(marks, parent))
            st(marks, parent, 1)
    if not ordered:
        for q in range(m2):
            st(marks, ld(nodes, q), 0)
    return m2


@njit(**JIT_OPTIONS)
def _propagate(buf, meta, marks, slots, n):  # pragma: no cover - compiled
    """Bring every ancestor of slots[:n] up to date, each touched node once."""
    if n == 0:
        return
    shift = meta[_M_SHIFT]
    ordered = True
    for i in range(1, n):
        if slots[i] < slots[i - 1]:
            ordered = False
            break
    nodes = np.empty(n, np.int64)
    m = 0
    prev = -1
    for i in range(n):
        k = slots[i] >> shift
        st(nodes, m, k)
        if ordered:
            m += k != prev
            prev = k
        else:
            m += 1 - np.int64(ld(marks, k))
            st(marks, k, 1)
    if not ordered:
        for q in range(m):
            st(marks, ld(nodes, q), 0)
    levels = meta[_M_LEVELS]
    if shift == 4:  # the default fanout, compiled with a constant width
        for lvl in range(1, levels + 1):
            m = _recompute_level(buf, meta, marks, lvl, nodes, m, ordered, 16)
    else:
        for lvl in range(1, levels + 1):
            m = _recompute_level(buf, meta, marks, lvl, nodes, m, ordered, 1 << shift)


@njit(**JIT_OPTIONS)
def _rebuild(arena):  # pragma: no cover - compiled
    """Recompute every internal node from the leaves: O(capacity)."""
    meta, buf, marks = _views(arena)
    fan = 1 << meta[_M_SHIFT]
    for lvl in range(1, meta[_M_LEVELS] + 1):
        count = meta[_M_NODES + lvl]
        _recompute_level(buf, meta, marks, lvl, np.arange(count), count, True, fan)


@njit(**JIT_OPTIONS)
def _dedup_parents(nodes, n, shift, ordered, marks):  # pragma: no cover - compiled
    """Replace nodes[:n] by their distinct parents (in place, branch-free); return the
    count. Sorted input dedups against the neighbour; otherwise one mark byte per node."""
    m = 0
    prev = -1
    for i in range(n):
        k = ld(nodes, i) >> shift
        st(nodes, m, k)
        if ordered:
            m += k != prev
            prev = k
        else:
            m += 1 - np.int64(ld(marks, k))
            st(marks, k, 1)
    if not ordered:
        for i in range(m):
            st(marks, ld(nodes, i), 0)
    return m


@njit(**JIT_OPTIONS)
def _descend(buf, meta, rem, cur, n):  # pragma: no cover - compiled
    """Walk targets rem[:n] down the tree; cur[:n] receives the leaf slots (see _walk)."""
    if meta[_M_SHIFT] == 4:  # the default fanout, compiled with a constant width
        _walk(buf, meta, rem, cur, n, 16)
    else:
        _walk(buf, meta, rem, cur, n, 1 << meta[_M_SHIFT])


@njit(inline="always", **JIT_OPTIONS)
def _walk(buf, meta, rem, cur, n, fan):  # pragma: no cover - compiled
    """Walk targets rem[:n] down the tree; cur[:n] receives the leaf slots.

    Level-synchronous: the n walks advance one level at a time, so their loads are
    independent and overlap (3x faster than walk-by-walk at 1e6 leaves); where the next
    level is large, each chosen child's block is prefetched as soon as it is known.
    At a level with stored prefixes, one vector compare counts the children whose prefix is
    <= t: children of zero mass repeat their left neighbour's prefix, so they are never
    chosen, and a target at or past the node's total (rounding only) is moved just below
    it, which picks the last child with positive mass. At a scanned level (the leaves, and
    levels with many nodes) the prefixes are built in registers and the first child with
    positive mass whose prefix exceeds t is taken, or the last one with positive mass.
    """
    levels = meta[_M_LEVELS]
    shift = meta[_M_SHIFT]
    for i in range(n):
        cur[i] = 0
    # Scanned levels are the lowest ones (they have the most nodes): the targets they may
    # leave slightly negative (rounding) only ever meet scans, which handle them.
    for lvl in range(levels, 1, -1):
        so = meta[_M_SOFF + lvl]
        nb = meta[_M_SOFF + lvl - 1]
        pf = meta[_M_PF + lvl - 1] != 0
        scanned = meta[_M_SCAN + lvl] != 0
        for i in range(n):
            node = cur[i] << shift
            base = so + node
            t = rem[i]
            if scanned:
                j, prev = scan_pick(buf, base, t, fan)
                rem[i] = t - prev
            else:
                j = count_le(buf, base, t, fan)
                if j == fan:
                    t = below(ld(buf, base + fan - 1))
                    j = count_le(buf, base, t, fan)
                prev = ld(buf, base + j - 1)  # base >= 1: the leaves precede every prefix
                rem[i] = t - prev if j > 0 else t
            child = node + j
            cur[i] = child
            if pf:
                for c in range(0, fan, 8):
                    prefetch(buf, nb + (child << shift) + c, False)
    so = meta[_M_SOFF + 1]
    for i in range(n):
        node = cur[i] << shift
        cur[i] = node + leaf_pick(buf, so + node, rem[i], fan)


@njit(**JIT_OPTIONS)
def _write_kernel(arena, slots, values, alpha, mode):  # pragma: no cover - compiled
    """Validate everything, then write leaves (``values ** alpha`` unless alpha is 1) and
    propagate: one call per batch. Returns 0 or an error code (then nothing is written).

    Repeated slots: the last value wins. O(n F log_F N).
    """
    meta, buf, marks = _views(arena)
    n = slots.size
    cap = meta[_M_CAPACITY]
    v0 = meta[_M_VOFF]
    for i in range(n):
        s = slots[i]
        if s < 0 or s >= cap:
            return E_SLOT * ERROR_SCALE + i
    if mode == MODE_UPDATE or mode == MODE_REMOVE:
        for i in range(n):
            if as_bits(ld(buf, v0 + slots[i])) == 0:  # +0.0: free
                return E_NOT_OCCUPIED * ERROR_SCALE + i
    positive = meta[_M_POSITIVE]
    size = meta[_M_SIZE]
    if mode == MODE_CLEAR or mode == MODE_REMOVE:
        for i in range(n):
            at = v0 + slots[i]
            old = ld(buf, at)
            positive -= np.int64(old > 0.0)
            size -= np.int64(as_bits(old) != 0)
            st(buf, at, 0.0)
    else:
        for i in range(n):
            v = values[i]
            if not (v >= 0.0 and v <= _DBL_MAX):
                return E_VALUE * ERROR_SCALE + i
        # one binding for `new`: a variable bound to two arrays makes numba refcount it on
        # every element access (two atomic calls per item)
        new = np.empty(n)
        if alpha == 1.0:
            for i in range(n):
                new[i] = values[i]
        else:
            vpow(values, alpha, new)
            for i in range(n):
                if not (new[i] <= _DBL_MAX):
                    return E_OVERFLOW * ERROR_SCALE + i
        # the total must stay finite (replaced values are not subtracted: conservative)
        grown = buf[meta[_M_VOFF + meta[_M_LEVELS]]]
        for i in range(n):
            grown += new[i]
        if not (grown <= _DBL_MAX):
            return E_TOTAL * ERROR_SCALE
        occupy = mode != MODE_SET
        for i in range(n):
            at = v0 + slots[i]
            old = ld(buf, at)
            nv = new[i]
            if occupy and nv == 0.0:
                nv = -0.0  # occupied, zero mass
            positive += np.int64(nv > 0.0) - np.int64(old > 0.0)
            size += np.int64(as_bits(nv) != 0) - np.int64(as_bits(old) != 0)
            st(buf, at, nv)
    meta[_M_POSITIVE] = positive
    meta[_M_SIZE] = size
    _propagate(buf, meta, marks, slots, n)
    return 0


@njit(**JIT_OPTIONS)
def _find_kernel(arena, targets, out):  # pragma: no cover - compiled
    meta, buf, marks = _views(arena)
    total = buf[meta[_M_VOFF + meta[_M_LEVELS]]]
    if not (total > 0.0):
        return E_EMPTY * ERROR_SCALE
    rem = np.empty(targets.size)
    for i in range(targets.size):
        t = targets[i]
        if not (t >= 0.0 and t <= total):
            return E_TARGET * ERROR_SCALE + i
        rem[i] = t
    _descend(buf, meta, rem, out, targets.size)
    return 0


@njit(**JIT_OPTIONS)
def _sample_kernel(arena, rng_fn, rng_state, slots, probs, weights, beta):  # pragma: no cover
    """Stratified proportional sample of slots.size slots, with probabilities and weights.

    Uniforms come from the bit generator at (rng_fn, rng_state) (see ``_simd.rng_pointers``),
    in order, as ``Generator.random`` would draw them. Target i is (i + u_i) * total / B, so
    the targets are sorted and draw i lands in segment i. P(slot) = leaf / total and
    weight = (N * P / (N * P_min)) ** -beta = (leaf / min) ** -beta, where min is the
    smallest positive leaf of the whole tree (the min tree's root).
    """
    meta, buf, marks = _views(arena)
    nb = slots.size
    levels = meta[_M_LEVELS]
    total = buf[meta[_M_VOFF + levels]]
    if not (total > 0.0):
        return E_EMPTY * ERROR_SCALE
    seg = total / nb
    for i in range(nb):
        probs[i] = (i + next_double(rng_fn, rng_state)) * seg
    _descend(buf, meta, probs, slots, nb)
    v0 = meta[_M_VOFF]
    minv = buf[meta[_M_MOFF + levels]]
    ratio = np.empty(nb)
    for i in range(nb):
        v = ld(buf, v0 + slots[i])
        probs[i] = v / total
        ratio[i] = v / minv
    if beta == 0.0:
        for i in range(nb):
            weights[i] = 1.0
    else:
        vpow(ratio, -beta, weights)
    return 0


@njit(**{**JIT_OPTIONS, "nogil": False})
def _sample_kernel_held(arena, rng_fn, rng_state, slots, probs, weights, beta):  # pragma: no cover
    """`_sample_kernel`, keeping the GIL: for small batches (`HOLD_GIL_MAX_BATCH`), where
    releasing it buys nothing and taking it back can wait long (see `HOLD_GIL_MAX_BATCH`)."""
    return _sample_kernel(arena, rng_fn, rng_state, slots, probs, weights, beta)


#: Batches of at most this many slots are drawn by `_sample_kernel_held`, which keeps the GIL
#: (measured: 65 us for 256 slots and 150 us for 1024, at 1M and at 10M leaves). A thread
#: that releases the GIL must take it back, and while another thread drops and retakes it at
#: a high rate (py-lmdb drops it around its calls into LMDB, so a view write of thousands of
#: keys does), CPython wakes the waiter at each drop, the other thread has usually retaken it
#: by then, and the waiter's switch-interval timer starts over: a learner's draw waited up to
#: hundreds of times per call while a job evicted (bench/RESULTS.md, hygiene). Larger batches
#: release it, so that other threads run beside the longer walk.
HOLD_GIL_MAX_BATCH = 1024


@njit(**{**JIT_OPTIONS, "nogil": False})
def _write_kernel_held(arena, slots, values, alpha, mode):  # pragma: no cover - compiled
    """`_write_kernel`, keeping the GIL: for writes of at most `HOLD_GIL_MAX_WRITE` slots."""
    return _write_kernel(arena, slots, values, alpha, mode)


#: Selector writes (insert, update, remove) of at most this many slots keep the GIL
#: (`_write_kernel_held`; measured: 0.25 ms to remove 5,000 random slots of a 1M-leaf tree).
#: The table calls them under its lock, and a kernel that releases the GIL there must take it
#: back before the table is free again: behind whichever thread took it meanwhile (see
#: `HOLD_GIL_MAX_BATCH`), while every learner waits for the table. A job's evictions come in
#: calls of 5,000 (`replaybuf.jobs.runner.EVICT_BATCH`), appends usually in fewer.
HOLD_GIL_MAX_WRITE = 8192


# ----------------------------------------------------------------------------------------------
# Python side: layout and the SumTree class

_NO_VALUES = np.empty(0, np.float64)


def _round16(n: int) -> int:
    return -(-n // 16) * 16


def _make_arena(capacity: int, shift: int) -> np.ndarray:
    """Allocate and lay out the arena of a tree of ``capacity`` leaves, fanout 2**shift."""
    fan = 1 << shift
    nodes = [capacity]
    while True:
        nodes.append(-(-nodes[-1] // fan))
        if nodes[-1] == 1:
            break
    levels = len(nodes) - 1
    meta = np.zeros(_META_LEN, np.int64)
    meta[_M_LEVELS] = levels
    meta[_M_SHIFT] = shift
    meta[_M_CAPACITY] = capacity
    off = 0  # in float64; regions start on 128-byte boundaries, like 16-child blocks
    min_regions = []

    def region(length: int) -> int:
        nonlocal off
        start = off
        off += _round16(length)
        return start

    meta[_M_VOFF] = region(nodes[1] * fan)
    for lvl in range(1, levels + 1):
        width = nodes[lvl + 1] * fan if lvl < levels else 1
        scanned = lvl == 1 or nodes[lvl] >= _SCAN_MIN_NODES
        meta[_M_SCAN + lvl] = int(scanned)
        if not scanned:
            meta[_M_POFF + lvl] = region(nodes[lvl] * fan)
        meta[_M_VOFF + lvl] = region(width)
        meta[_M_MOFF + lvl] = region(width)
        min_regions.append((int(meta[_M_MOFF + lvl]), width))
    for lvl in range(1, levels + 1):
        scanned = meta[_M_SCAN + lvl]
        meta[_M_SOFF + lvl] = meta[_M_VOFF + lvl - 1] if scanned else meta[_M_POFF + lvl]
    for lvl, count in enumerate(nodes):
        meta[_M_NODES + lvl] = count
        if lvl >= 1:
            meta[_M_PF + lvl] = int(nodes[lvl - 1] * 8 > _PREFETCH_BYTES)
    n_flags = nodes[1]
    meta[_M_FOFF] = _round16(_META_LEN * 8)
    meta[_M_FLEN] = off
    meta[_M_GOFF] = meta[_M_FOFF] + 8 * off
    meta[_M_GLEN] = n_flags
    nbytes = int(meta[_M_GOFF]) + n_flags
    raw = np.zeros(nbytes + 128, np.uint8)
    start = -raw.ctypes.data % 128
    arena = raw[start : start + nbytes]
    arena[: _META_LEN * 8] = meta.view(np.uint8)
    tree = _arena_views(arena)[1]
    for mo, width in min_regions:
        tree[mo : mo + width] = np.inf
    return arena


def _arena_views(arena: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    meta = arena[: _META_LEN * 8].view(np.int64)
    fo, go = int(meta[_M_FOFF]), int(meta[_M_GOFF])
    tree = arena[fo : fo + 8 * int(meta[_M_FLEN])].view(np.float64)
    return meta, tree, arena[go : go + int(meta[_M_GLEN])]


class SumTree:
    """A B-ary sum tree and min tree over ``capacity`` non-negative float64 leaf values.

    The raw structure under prioritized replay: it knows nothing of alpha or occupancy. A leaf
    of value 0 is never reached by :meth:`find_prefix_sum` and is ignored by :meth:`min`.

    Costs, with F the fanout and n the number of slots in a call: ``set``/``clear``
    O(n * F * log_F(capacity)) (each touched node recomputed once per call), ``get`` O(n),
    ``find_prefix_sum`` O(n * log_F(capacity)), ``total``/``min`` O(1). Memory: about
    9.1 bytes per slot (the 8-byte leaf, and a total and a minimum per 16 slots above).
    Not thread-safe; the table serializes access.

    Example:
        >>> import numpy as np
        >>> tree = SumTree(5)
        >>> tree.set(np.array([0, 2, 4]), np.array([1.0, 0.0, 3.0]))
        >>> tree.total(), tree.min()
        (4.0, 1.0)
        >>> tree.find_prefix_sum(np.array([0.0, 0.99, 1.0, 3.99])).tolist()
        [0, 0, 4, 4]
    """

    def __init__(self, capacity: int, *, fanout: int = DEFAULT_FANOUT) -> None:
        """Create a tree of ``capacity`` zero leaves.

        Args:
            capacity: number of leaves (slots), 1 to 2**40.
            fanout: children per node, a power of two from 2 to 64. 16 (two cache lines)
                is the fastest measured for 1e5..1e7 leaves.

        Raises:
            InvalidArgumentError: bad capacity or fanout.
        """
        self.capacity = check_capacity(capacity)
        if (
            isinstance(fanout, bool)
            or not isinstance(fanout, (int, np.integer))
            or fanout not in FANOUTS
        ):
            raise InvalidArgumentError(f"fanout = {fanout!r} must be one of {FANOUTS}")
        self.fanout = int(fanout)
        self._arena = _make_arena(self.capacity, self.fanout.bit_length() - 1)
        self._meta, self._buf, self._marks = _arena_views(self._arena)
        levels = int(self._meta[_M_LEVELS])
        self._root = int(self._meta[_M_VOFF + levels])
        self._root_min = int(self._meta[_M_MOFF + levels])
        v0 = int(self._meta[_M_VOFF])
        self._leaves = self._buf[v0 : v0 + self.capacity]

    @property
    def levels(self) -> int:
        """Number of internal levels (ceil(log_F(capacity)), at least 1)."""
        return int(self._meta[_M_LEVELS])

    def total(self) -> float:
        """Sum of all leaves (float64, summed per node, exactly recomputed). O(1)."""
        return float(self._buf[self._root])

    def min(self) -> float:
        """Smallest positive leaf value; ``inf`` when no leaf is positive. O(1)."""
        return float(self._buf[self._root_min])

    def set(self, slots: np.ndarray, values: np.ndarray) -> None:
        """Set ``leaf[slots[i]] = values[i]`` for all i; with repeated slots the last wins.

        Cost O(n * F * log_F(capacity)); sorted slots take the cheaper dedup path.

        Raises:
            InvalidArgumentError: slots out of range, or bad dtype/shape/length.
            InvalidPriorityError: a value is NaN, infinite or negative.
            Nothing is changed when anything is rejected.
        """
        s = as_slots(slots)
        v = as_values(values, s.size, "values")
        rc = _write_kernel(self._arena, s, v, 1.0, MODE_SET)
        raise_for(rc, s, v, self.capacity, "values")

    def clear(self, slots: np.ndarray) -> None:
        """Set the leaves at ``slots`` to 0 (never sampled again until set). O(set)."""
        s = as_slots(slots)
        rc = _write_kernel(self._arena, s, _NO_VALUES, 1.0, MODE_CLEAR)
        raise_for(rc, s, None, self.capacity)

    def get(self, slots: np.ndarray) -> np.ndarray:
        """Return a copy of the leaf values at ``slots``. O(n)."""
        s = as_slots(slots)
        if s.size and (int(s.min()) < 0 or int(s.max()) >= self.capacity):
            i = int(np.argmax((s < 0) | (s >= self.capacity)))
            raise_for(E_SLOT * ERROR_SCALE + i, s, None, self.capacity)
        return self._leaves[s]

    def leaves(self) -> np.ndarray:
        """A read-only view of all ``capacity`` leaf values."""
        view = self._leaves.view()
        view.flags.writeable = False
        return view

    def find_prefix_sum(self, targets: np.ndarray) -> np.ndarray:
        """For each target t in [0, total()], the slot i with prefix(i) <= t < prefix(i + 1).

        ``prefix(i)`` is the sum of the leaves before slot i, so leaves of value 0 are never
        returned. A target equal to (or, through rounding, just under) ``total()`` returns
        the last slot with a positive value. O(n * F * log_F(capacity)) in the worst case.

        Raises:
            FailedPreconditionError: the total is 0.
            InvalidArgumentError: a target is NaN or outside [0, total()].
        """
        t = as_values(targets, None, "targets")
        out = np.empty(t.size, np.int64)
        rc = _find_kernel(self._arena, t, out)
        raise_for(rc, out, t, self.capacity, "targets")
        return out

    def state(self) -> dict[str, Any]:
        """Export as plain numpy arrays and ints (a copy), with ``format_version``.

        Only the leaves are stored: every internal node is a deterministic function of them,
        so :meth:`from_state` rebuilds a bit-identical tree in O(capacity).
        """
        return {
            "format_version": FORMAT_VERSION,
            "kind": "sum_tree",
            "capacity": self.capacity,
            "fanout": self.fanout,
            "leaves": self._leaves.copy(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> SumTree:
        """Rebuild a tree from :meth:`state` output.

        Raises:
            InvalidArgumentError: unknown format version or kind, or inconsistent arrays.
        """
        check_state_header(state, "sum_tree")
        tree = cls(int(state["capacity"]), fanout=int(state["fanout"]))
        tree.load_leaves(state["leaves"], "leaves")
        return tree

    def load_leaves(self, leaves: Any, name: str) -> None:
        """Replace every leaf and rebuild all nodes. O(capacity)."""
        arr = np.asarray(leaves)
        if arr.shape != (self.capacity,) or arr.dtype.kind != "f":
            raise InvalidArgumentError(
                f"state[{name!r}] must be a float array of shape ({self.capacity},); "
                f"got {arr.dtype} {arr.shape}"
            )
        bad = ~((arr >= 0.0) & (arr <= _DBL_MAX))
        if bad.any():
            i = int(np.argmax(bad))
            raise InvalidPriorityError(
                f"state[{name!r}][{i}] = {float(arr[i])!r} must be finite and >= 0"
            )
        self._leaves[:] = arr
        self._meta[_M_POSITIVE] = int(np.count_nonzero(arr))
        self._meta[_M_SIZE] = int(np.count_nonzero(self._leaves.view(np.int64)))
        _rebuild(self._arena)

    def __repr__(self) -> str:
        return f"SumTree(capacity={self.capacity}, fanout={self.fanout}, total={self.total()!r})"
