"""``numpy.random.default_rng(seed)`` without building a SeedSequence per draw.

Every sample is seeded (DESIGN.md invariant 6: the same table, LSN and seed give the same
batch), and ``default_rng(seed)`` costs ~20 us: most of it is `numpy.random.SeedSequence`
hashing the seed in Python-level Cython with an ``errstate`` decorator. `Reseeder` keeps one
PCG64 bit generator and sets its state to exactly what ``default_rng(seed)`` would start from,
computing SeedSequence's hash in a compiled kernel. The stream is bit-identical (tested
against numpy for random seeds), so stored seeds replay the same draws with plain numpy.

Algorithm (numpy/random/bit_generator.pyx and pcg64.c, numpy >= 1.17): the seed's 32-bit words
(little-endian, at least one) are mixed into a pool of four words; four 64-bit words are drawn
from the pool; PCG64 takes the first two as its initial state and the last two as its stream
(``pcg_setseq_128_srandom_r``).

Thread-safety: a `Reseeder` and its generator belong to one caller at a time (the table draws
under its lock).
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["Reseeder", "seed_words"]

_M32 = 0xFFFFFFFF
_INIT_A, _MULT_A = 0x43B0D7E5, 0x931E8875
_INIT_B, _MULT_B = 0x8B51F9DD, 0x58F38DED
_MIX_L, _MIX_R = 0xCA01F9DD, 0x4973F715
_PCG_MULT = (2549297995355413924 << 64) + 4865540595714422341
_M128 = (1 << 128) - 1


# Keeps the GIL: a microsecond of work on every draw, and a thread that releases the GIL
# while another thread keeps dropping and retaking it (an LMDB write loop) waits for it until
# that loop ends (bench/RESULTS.md, hygiene: the learner's GIL waits).
@numba.njit(cache=True)
def _seed_words(lo: int, hi: int, n_entropy: int, out: np.ndarray) -> None:  # pragma: no cover
    """SeedSequence(entropy).generate_state(4, uint64) for entropy = hi * 2**32 + lo with
    n_entropy (1 or 2) words, written as 8 uint32 words into out (int64 arithmetic: every
    value is masked to 32 bits, and a wrapped 64-bit product keeps its low 32 bits)."""

    pool = [0, 0, 0, 0]
    h = _INIT_A
    for i in range(4):
        v = lo if i == 0 else (hi if i == 1 and n_entropy > 1 else 0)
        v = (v ^ h) & _M32
        h = (h * _MULT_A) & _M32
        v = (v * h) & _M32
        pool[i] = v ^ (v >> 16)
    for src in range(4):
        for dst in range(4):
            if src != dst:
                v = (pool[src] ^ h) & _M32
                h = (h * _MULT_A) & _M32
                v = (v * h) & _M32
                v = v ^ (v >> 16)
                r = (_MIX_L * pool[dst] - _MIX_R * v) & _M32
                pool[dst] = r ^ (r >> 16)
    h = _INIT_B
    for i in range(8):
        v = (pool[i % 4] ^ h) & _M32
        h = (h * _MULT_B) & _M32
        v = (v * h) & _M32
        out[i] = v ^ (v >> 16)


def seed_words(seed: int) -> tuple[int, int, int, int]:
    """The four uint64 words ``SeedSequence(seed).generate_state(4, np.uint64)`` returns, for
    an integer seed in [0, 2**64)."""

    if not 0 <= seed < 2**64:
        raise ValueError(f"seed {seed} is outside [0, 2**64)")
    out = np.empty(8, np.int64)
    _seed_words(seed & _M32, seed >> 32, 2 if seed >> 32 else 1, out)
    w = out.tolist()
    return (w[0] | w[1] << 32, w[2] | w[3] << 32, w[4] | w[5] << 32, w[6] | w[7] << 32)


class Reseeder:
    """One reusable generator, reset to ``default_rng(seed)``'s start for each seed.

    Example::

        r = Reseeder()
        rng = r.reseed(42)          # same stream as np.random.default_rng(42)
        rng.random()
    """

    def __init__(self) -> None:
        self._bits = np.random.PCG64(0)
        self.generator = np.random.Generator(self._bits)

    def reseed(self, seed: int) -> np.random.Generator:
        """Reset and return the generator (the same object every time)."""

        s0, s1, i0, i1 = seed_words(seed)
        inc = (((i0 << 64) | i1) << 1 | 1) & _M128
        # From state 0: one step (0 * mult + inc), add the initial state, one more step.
        state = ((inc + ((s0 << 64) | s1)) * _PCG_MULT + inc) & _M128
        self._bits.state = {"bit_generator": "PCG64", "state": {"state": state, "inc": inc},
                            "has_uint32": 0, "uinteger": 0}
        return self.generator
