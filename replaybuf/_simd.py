"""Small vector and memory primitives for the sampling kernels, as numba intrinsics.

Why these exist (each measured on the W1 sample+update loop):

* numba wraps every array index it cannot prove non-negative (``base + c``) in a
  negative-index fix-up: a branch per access that also blocks vectorisation. ``ld``/``st``
  index without it; callers guarantee ``0 <= i < size``.
* A node search compares a target with 16 child prefix sums: ``count_le`` does it as one
  vector compare and a pop-count (two AVX-512 instructions) instead of ~50 scalar ones.
* The leaf level is searched without stored prefix sums: ``leaf_pick`` builds them in
  registers (a log-step scan) and picks the first child with positive mass whose prefix
  exceeds the target; ``block_sum``/``block_min`` are the matching reductions for updates.
* ``vpow`` is a vectorised ``x ** y`` (libm's pow does not vectorise).
* ``next_double`` draws from a NumPy bit generator through its documented ctypes
  interface (``BitGenerator.ctypes``), inside the kernel: the same stream as
  ``Generator.random()``, without a second Python call per sample.

Every intrinsic has a pure-Python twin with bit-identical arithmetic (same operations in
the same order, IEEE float64, no FMA contraction), used under ``NUMBA_DISABLE_JIT=1``; the
compiled and the interpreted kernels therefore sample the same slots.
"""

from __future__ import annotations

import ctypes
import math
from typing import Any

import numpy as np
from numba import config as _numba_config
from numba import njit

__all__ = [
    "JIT_OPTIONS",
    "ld",
    "st",
    "prefetch",
    "below",
    "as_bits",
    "from_bits",
    "next_double",
    "count_le",
    "leaf_pick",
    "scan_pick",
    "block_sum",
    "block_min",
    "vpow",
    "rng_pointers",
    "FANOUTS",
]

#: Options of every sampling kernel: release the GIL, cache compiled code on disk, and
#: numpy's float semantics (x / 0 -> inf instead of a ZeroDivisionError check per division,
#: which would also block vectorisation).
JIT_OPTIONS: dict[str, Any] = {"nogil": True, "cache": True, "error_model": "numpy"}

#: Supported tree fanouts: one vector width each.
FANOUTS = (2, 4, 8, 16, 32, 64)

_DBL_MAX = 1.7976931348623157e308
_MIN_NORMAL = 2.2250738585072014e-308
_LN2_HI = 0.6931471803691238
_LN2_LO = 1.9082149292705877e-10
_LN2 = 0.6931471805599453
_LOG2E = 1.4426950408889634
_SQRT2 = 1.4142135623730951
_ROUND = 6755399441055744.0  # 1.5 * 2**52: adding and subtracting it rounds to an integer


def rng_pointers(rng: np.random.Generator) -> tuple[int, int]:
    """(address of the bit generator's next_double, address of its state), for next_double.

    The kernel advances the generator exactly as ``rng.random()`` would (same stream), but
    without taking the generator's lock: callers must not share it with another thread
    during the call (the table serializes access).
    """
    # Read numpy's ``bitgen_t`` {state, next_uint64, next_uint32, next_double, next_raw}
    # through the generator's capsule: ``bit_generator.ctypes`` would build a fresh ctypes
    # interface (several CFUNCTYPE casts, ~10 us) on every call.
    ptr = _capsule_pointer(rng.bit_generator.capsule, b"BitGenerator")
    state = ctypes.c_void_p.from_address(ptr).value
    fn = ctypes.c_void_p.from_address(ptr + 3 * ctypes.sizeof(ctypes.c_void_p)).value
    return int(fn or 0), int(state or 0)


_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype = ctypes.c_void_p
_capsule_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]


if _numba_config.DISABLE_JIT:  # pure-Python twins, same arithmetic

    def ld(arr, i):  # type: ignore[no-redef]
        return arr[i]

    def st(arr, i, v):  # type: ignore[no-redef]
        arr[i] = v

    def prefetch(arr, i, write):  # type: ignore[no-redef]
        pass

    def below(x):  # type: ignore[no-redef]
        return np.nextafter(x, -np.inf)

    def as_bits(x):  # type: ignore[no-redef]
        return np.float64(x).view(np.int64)

    def from_bits(i):  # type: ignore[no-redef]
        return np.int64(i).view(np.float64)

    _DOUBLE_FN = ctypes.CFUNCTYPE(ctypes.c_double, ctypes.c_void_p)
    _callers: dict[int, Any] = {}

    def next_double(fn, state):  # type: ignore[no-redef]
        call = _callers.get(fn)
        if call is None:
            call = _callers[fn] = _DOUBLE_FN(fn)
        return call(state)

    def _scan(vec):
        p, s = vec.copy(), 1
        while s < p.size:
            shifted = np.concatenate((np.zeros(s), p[:-s]))
            p = p + shifted
            s *= 2
        return p

    def _make_count_le(width: int) -> Any:
        def count_le_w(arr, start, t):
            return int(np.count_nonzero(arr[start : start + width] <= t))

        return count_le_w

    def _make_leaf_pick(width: int) -> Any:
        def leaf_pick_w(arr, start, t):
            vec = arr[start : start + width]
            positive = vec > 0.0
            candidates = np.flatnonzero(positive & ~(_scan(vec) <= t))
            if candidates.size:
                return int(candidates[0])
            return int(np.flatnonzero(positive)[-1])

        return leaf_pick_w

    def _make_scan_pick(width: int) -> Any:
        def scan_pick_w(arr, start, t):
            vec = arr[start : start + width]
            scan = _scan(vec)
            positive = vec > 0.0
            candidates = np.flatnonzero(positive & ~(scan <= t))
            j = int(candidates[0]) if candidates.size else int(np.flatnonzero(positive)[-1])
            return j, float(scan[j - 1]) if j > 0 else 0.0

        return scan_pick_w

    def _make_block_sum(width: int) -> Any:
        def block_sum_w(arr, start):
            v = arr[start : start + width].copy()
            while v.size > 1:
                v = v[: v.size // 2] + v[v.size // 2 :]
            return float(v[0])

        return block_sum_w

    def _make_block_min(width: int, positive: bool) -> Any:
        def block_min_w(arr, start):
            block = arr[start : start + width]
            if positive:
                block = block[block > 0.0]
            return float(block.min()) if block.size else math.inf

        return block_min_w

else:
    from llvmlite import ir
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic

    _I32 = ir.IntType(32)
    _I64 = ir.IntType(64)
    _F64 = ir.DoubleType()

    def _ptr(context, builder, sig, args, k=0):
        ary = context.make_array(sig.args[k])(context, builder, args[k])
        return builder.gep(ary.data, [args[k + 1]])

    @intrinsic
    def ld(typingctx, arr, i):  # pragma: no cover - compiled
        """arr[i] without the negative-index fix-up."""

        def codegen(context, builder, sig, args):
            return builder.load(_ptr(context, builder, sig, args))

        return arr.dtype(arr, types.int64), codegen

    @intrinsic
    def st(typingctx, arr, i, v):  # pragma: no cover - compiled
        """arr[i] = v without the negative-index fix-up."""

        def codegen(context, builder, sig, args):
            builder.store(args[2], _ptr(context, builder, sig, args))
            return context.get_dummy_value()

        return types.void(arr, types.int64, arr.dtype), codegen

    @intrinsic
    def prefetch(typingctx, arr, i, write):  # pragma: no cover - compiled
        """Hint the cache line of arr[i] into L1 (for writing if ``write``); never faults."""
        if not isinstance(write, types.BooleanLiteral):
            return None
        rw = 1 if write.literal_value else 0

        def codegen(context, builder, sig, args):
            ptr = _ptr(context, builder, sig, args)
            fnty = ir.FunctionType(ir.VoidType(), [ptr.type, _I32, _I32, _I32])
            fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
            builder.call(fn, [ptr, ir.Constant(_I32, rw), ir.Constant(_I32, 3),
                              ir.Constant(_I32, 1)])
            return context.get_dummy_value()

        return types.void(arr, types.int64, write), codegen

    @intrinsic
    def as_bits(typingctx, x):  # pragma: no cover - compiled
        def codegen(context, builder, sig, args):
            return builder.bitcast(args[0], _I64)

        return types.int64(types.float64), codegen

    @intrinsic
    def from_bits(typingctx, i):  # pragma: no cover - compiled
        def codegen(context, builder, sig, args):
            return builder.bitcast(args[0], _F64)

        return types.float64(types.int64), codegen

    @intrinsic
    def below(typingctx, x):  # pragma: no cover - compiled
        """The largest double below x, for finite x > 0 (its bit pattern minus one)."""

        def codegen(context, builder, sig, args):
            bits = builder.sub(builder.bitcast(args[0], _I64), ir.Constant(_I64, 1))
            return builder.bitcast(bits, _F64)

        return types.float64(types.float64), codegen

    @intrinsic
    def next_double(typingctx, fn, state):  # pragma: no cover - compiled
        """Call ``double fn(void *state)`` given both as integer addresses."""

        def codegen(context, builder, sig, args):
            vp = ir.IntType(8).as_pointer()
            fnty = ir.FunctionType(_F64, [vp])
            callee = builder.inttoptr(args[0], fnty.as_pointer())
            return builder.call(callee, [builder.inttoptr(args[1], vp)])

        return types.float64(types.int64, types.int64), codegen

    def _load_vec(builder, context, sig, args, width):
        vty = ir.VectorType(_F64, width)
        ptr = _ptr(context, builder, sig, args)
        return builder.load(builder.bitcast(ptr, vty.as_pointer()), align=8), vty

    def _splat(builder, value, vty, width):
        one = builder.insert_element(ir.Constant(vty, ir.Undefined), value,
                                     ir.Constant(_I32, 0))
        return builder.shuffle_vector(one, ir.Constant(vty, ir.Undefined),
                                      ir.Constant(ir.VectorType(_I32, width), [0] * width))

    def _make_count_le(width: int) -> Any:
        ity = ir.IntType(width)

        @intrinsic
        def count_le_w(typingctx, arr, start, t):  # pragma: no cover - compiled
            def codegen(context, builder, sig, args):
                vec, vty = _load_vec(builder, context, sig, args, width)
                le = builder.fcmp_ordered("<=", vec, _splat(builder, args[2], vty, width))
                ctpop = builder.module.declare_intrinsic("llvm.ctpop", [ity])
                return builder.zext(builder.call(ctpop, [builder.bitcast(le, ity)]), _I64)

            return types.int64(arr, types.int64, types.float64), codegen

        return count_le_w

    def _pick(builder, context, sig, args, width):
        """(scan, j): inclusive prefix sums of the block, and the first child > 0 whose
        prefix exceeds t (else the last child > 0)."""
        ity = ir.IntType(width)
        vec, vty = _load_vec(builder, context, sig, args, width)
        zeros = ir.Constant(vty, [0.0] * width)
        scan, s = vec, 1
        while s < width:  # log2(width) shift-and-add steps
            mask = [width if i < s else i - s for i in range(width)]
            shifted = builder.shuffle_vector(
                scan, zeros, ir.Constant(ir.VectorType(_I32, width), mask))
            scan = builder.fadd(scan, shifted)
            s *= 2
        le = builder.bitcast(builder.fcmp_ordered(
            "<=", scan, _splat(builder, args[2], vty, width)), ity)
        pos = builder.bitcast(builder.fcmp_ordered(">", vec, zeros), ity)
        cand = builder.and_(builder.not_(le), pos)
        false = ir.Constant(ir.IntType(1), 0)
        bitty = ir.FunctionType(ity, [ity, ir.IntType(1)])  # llvmlite's declare drops the i1
        cttz = cgutils.get_or_insert_function(builder.module, bitty, f"llvm.cttz.i{width}")
        ctlz = cgutils.get_or_insert_function(builder.module, bitty, f"llvm.ctlz.i{width}")
        first = builder.call(cttz, [cand, false])
        last = builder.sub(ir.Constant(ity, width - 1), builder.call(ctlz, [pos, false]))
        has = builder.icmp_unsigned("!=", cand, ir.Constant(ity, 0))
        return scan, builder.zext(builder.select(has, first, last), _I64)

    def _make_leaf_pick(width: int) -> Any:
        @intrinsic
        def leaf_pick_w(typingctx, arr, start, t):  # pragma: no cover - compiled
            def codegen(context, builder, sig, args):
                return _pick(builder, context, sig, args, width)[1]

            return types.int64(arr, types.int64, types.float64), codegen

        return leaf_pick_w

    def _make_scan_pick(width: int) -> Any:
        rtype = types.Tuple((types.int64, types.float64))

        @intrinsic
        def scan_pick_w(typingctx, arr, start, t):  # pragma: no cover - compiled
            def codegen(context, builder, sig, args):
                scan, j = _pick(builder, context, sig, args, width)
                before = builder.sub(j, ir.Constant(_I64, 1))
                at = builder.select(builder.icmp_signed(">", j, ir.Constant(_I64, 0)),
                                    before, ir.Constant(_I64, 0))
                prev = builder.extract_element(scan, at)
                prev = builder.select(builder.icmp_signed(">", j, ir.Constant(_I64, 0)),
                                      prev, ir.Constant(_F64, 0.0))
                return context.make_tuple(builder, rtype, [j, prev])

            return rtype(arr, types.int64, types.float64), codegen

        return scan_pick_w

    def _halve(builder, vec, width, combine):
        while width > 1:
            width //= 2
            iv = ir.VectorType(_I32, width)
            lo = builder.shuffle_vector(vec, vec, ir.Constant(iv, list(range(width))))
            hi = builder.shuffle_vector(vec, vec, ir.Constant(iv, list(range(width, 2 * width))))
            vec = combine(lo, hi)
        return builder.extract_element(vec, ir.Constant(_I32, 0))

    def _make_block_sum(width: int) -> Any:
        @intrinsic
        def block_sum_w(typingctx, arr, start):  # pragma: no cover - compiled
            def codegen(context, builder, sig, args):
                vec, _ = _load_vec(builder, context, sig, args, width)
                return _halve(builder, vec, width, builder.fadd)

            return types.float64(arr, types.int64), codegen

        return block_sum_w

    def _make_block_min(width: int, positive: bool) -> Any:
        @intrinsic
        def block_min_w(typingctx, arr, start):  # pragma: no cover - compiled
            def codegen(context, builder, sig, args):
                vec, vty = _load_vec(builder, context, sig, args, width)
                if positive:
                    zero = ir.Constant(vty, [0.0] * width)
                    inf = ir.Constant(vty, [math.inf] * width)
                    vec = builder.select(builder.fcmp_ordered(">", vec, zero), vec, inf)

                def smaller(lo, hi):  # min is exact: any order gives the serial result
                    return builder.select(builder.fcmp_ordered("<", hi, lo), hi, lo)

                return _halve(builder, vec, width, smaller)

            return types.float64(arr, types.int64), codegen

        return block_min_w


_cle = {w: _make_count_le(w) for w in FANOUTS}
_lp = {w: _make_leaf_pick(w) for w in FANOUTS}
_sp = {w: _make_scan_pick(w) for w in FANOUTS}
_bs = {w: _make_block_sum(w) for w in FANOUTS}
_bm = {w: _make_block_min(w, False) for w in FANOUTS}
_bmp = {w: _make_block_min(w, True) for w in FANOUTS}
# numba resolves module globals, not dict lookups, at compile time
_cle2, _cle4, _cle8, _cle16, _cle32, _cle64 = (_cle[w] for w in FANOUTS)
_lp2, _lp4, _lp8, _lp16, _lp32, _lp64 = (_lp[w] for w in FANOUTS)
_sp2, _sp4, _sp8, _sp16, _sp32, _sp64 = (_sp[w] for w in FANOUTS)
_bs2, _bs4, _bs8, _bs16, _bs32, _bs64 = (_bs[w] for w in FANOUTS)
_bm2, _bm4, _bm8, _bm16, _bm32, _bm64 = (_bm[w] for w in FANOUTS)
_bmp2, _bmp4, _bmp8, _bmp16, _bmp32, _bmp64 = (_bmp[w] for w in FANOUTS)


# Width dispatch: ``fan`` is loop-invariant in every caller, so LLVM hoists the branch.


@njit(**JIT_OPTIONS)
def count_le(buf, start, t, fan):  # pragma: no cover - compiled
    """How many of buf[start : start + fan] are <= t."""
    if fan == 16:
        return _cle16(buf, start, t)
    if fan == 8:
        return _cle8(buf, start, t)
    if fan == 32:
        return _cle32(buf, start, t)
    if fan == 4:
        return _cle4(buf, start, t)
    if fan == 64:
        return _cle64(buf, start, t)
    return _cle2(buf, start, t)


@njit(**JIT_OPTIONS)
def leaf_pick(buf, start, t, fan):  # pragma: no cover - compiled
    """Index of the first value in buf[start : start + fan] that is > 0 and whose prefix
    sum exceeds t; the last value > 0 if none does (t at or past the block's total)."""
    if fan == 16:
        return _lp16(buf, start, t)
    if fan == 8:
        return _lp8(buf, start, t)
    if fan == 32:
        return _lp32(buf, start, t)
    if fan == 4:
        return _lp4(buf, start, t)
    if fan == 64:
        return _lp64(buf, start, t)
    return _lp2(buf, start, t)


@njit(**JIT_OPTIONS)
def scan_pick(buf, start, t, fan):  # pragma: no cover - compiled
    """(j, prefix before j) for the child leaf_pick would choose, from prefix sums built
    in registers (a log-step scan: not necessarily monotone, hence the positive-mass test)."""
    if fan == 16:
        return _sp16(buf, start, t)
    if fan == 8:
        return _sp8(buf, start, t)
    if fan == 32:
        return _sp32(buf, start, t)
    if fan == 4:
        return _sp4(buf, start, t)
    if fan == 64:
        return _sp64(buf, start, t)
    return _sp2(buf, start, t)


@njit(**JIT_OPTIONS)
def block_sum(buf, start, fan):  # pragma: no cover - compiled
    """Sum of buf[start : start + fan] by pairwise halving."""
    if fan == 16:
        return _bs16(buf, start)
    if fan == 8:
        return _bs8(buf, start)
    if fan == 32:
        return _bs32(buf, start)
    if fan == 4:
        return _bs4(buf, start)
    if fan == 64:
        return _bs64(buf, start)
    return _bs2(buf, start)


@njit(**JIT_OPTIONS)
def block_min(buf, start, fan, positive):  # pragma: no cover - compiled
    """min(buf[start : start + fan]), over the values > 0 only if positive (inf if none)."""
    if positive:
        if fan == 16:
            return _bmp16(buf, start)
        if fan == 8:
            return _bmp8(buf, start)
        if fan == 32:
            return _bmp32(buf, start)
        if fan == 4:
            return _bmp4(buf, start)
        if fan == 64:
            return _bmp64(buf, start)
        return _bmp2(buf, start)
    if fan == 16:
        return _bm16(buf, start)
    if fan == 8:
        return _bm8(buf, start)
    if fan == 32:
        return _bm32(buf, start)
    if fan == 4:
        return _bm4(buf, start)
    if fan == 64:
        return _bm64(buf, start)
    return _bm2(buf, start)


@njit(**JIT_OPTIONS)
def vpow(x, y, out):  # pragma: no cover - compiled
    """out[i] = x[i] ** y for finite x[i] >= 0 (0 -> 0), in one vectorised loop.

    exp(y * log(x)) with polynomial kernels, within ~4e-15 relative of pow (~4x faster
    than libm's pow for 256 values, which does not vectorise). Arguments outside the fast
    path (0, subnormal, |y * log x| >= 700) are redone with ``**`` in a second, rarely
    taken pass, so that the call is not speculated into the vector loop. In place
    (``out is x``) is not supported.
    """
    n = x.size
    bad = 0
    for i in range(n):
        xi = x[i]
        b = as_bits(xi)
        m = from_bits((b & 0x000FFFFFFFFFFFFF) | 0x3FF0000000000000)
        e = np.float64(((b >> 52) & 0x7FF) - 1023)
        big = m > _SQRT2
        m = m * 0.5 if big else m
        e = e + 1.0 if big else e
        # log(m) = 2 atanh(s), |s| <= 0.1716: the odd series to s**21 is exact to ~1e-17
        s = (m - 1.0) / (m + 1.0)
        s2 = s * s
        p = 1.0 / 21.0
        p = p * s2 + 1.0 / 19.0
        p = p * s2 + 1.0 / 17.0
        p = p * s2 + 1.0 / 15.0
        p = p * s2 + 1.0 / 13.0
        p = p * s2 + 1.0 / 11.0
        p = p * s2 + 1.0 / 9.0
        p = p * s2 + 1.0 / 7.0
        p = p * s2 + 1.0 / 5.0
        p = p * s2 + 1.0 / 3.0
        p = p * s2 + 1.0
        z = y * (e * _LN2 + 2.0 * s * p)
        # exp(z) = 2**k * exp(r), |r| <= ln2 / 2: Taylor to r**13 is exact to ~1e-17
        k = (z * _LOG2E + _ROUND) - _ROUND
        r = (z - k * _LN2_HI) - k * _LN2_LO
        q = 1.0 / 6227020800.0
        q = q * r + 1.0 / 479001600.0
        q = q * r + 1.0 / 39916800.0
        q = q * r + 1.0 / 3628800.0
        q = q * r + 1.0 / 362880.0
        q = q * r + 1.0 / 40320.0
        q = q * r + 1.0 / 5040.0
        q = q * r + 1.0 / 720.0
        q = q * r + 1.0 / 120.0
        q = q * r + 1.0 / 24.0
        q = q * r + 1.0 / 6.0
        q = q * r + 0.5
        q = q * r + 1.0
        q = q * r + 1.0
        out[i] = q * from_bits((np.int64(k) + 1023) << 52)
        fast = (xi >= _MIN_NORMAL) & (xi <= _DBL_MAX) & (z > -700.0) & (z < 700.0)
        bad |= np.int64(not fast)
    if bad:
        for i in range(n):
            xi = x[i]
            if not (_MIN_NORMAL <= xi <= _DBL_MAX) or not (-700.0 < y * math.log(xi) < 700.0):
                out[i] = xi**y if xi > 0.0 else 0.0
