"""A plain numpy sum-tree: the baseline peer in `bench/bench_sum_tree.py`.

Deliberately straightforward, the way one would write it without numba or C++: a complete binary
tree over `P = next_pow2(capacity)` leaves stored in one float64 array (node 1 is the root, node
`i` has children `2i` and `2i + 1`, leaf `j` is node `P + j`), plus a min-tree of the same shape
for the importance-weight normaliser. Both batch operations are vectorised one tree level at a
time, so a batch of `B` costs `O(B log P)` numpy work in `log2(P)` numpy calls.

Sampling draws i.i.d. uniform masses in `[0, total)` (not stratified), as torchrl's
`PrioritizedSampler` does, and returns `(N * P(i)) ** -beta / max_j w_j = (p_i / p_min) ** -beta`
as weights.

Bench code, not part of replaybuf. Not thread-safe.

Example:
    >>> import numpy as np
    >>> s = NumpyPrioritizedSampler(8, alpha=1.0)
    >>> s.insert(np.arange(4), np.array([1.0, 1.0, 2.0, 4.0]))
    >>> slots, weights, probs = s.sample(2, np.random.default_rng(0), beta=0.4)
    >>> float(probs.sum() <= 1.0)
    1.0
"""

from __future__ import annotations

import numpy as np


class NumpySumTree:
    """Sum- and min-tree over `capacity` non-negative float64 leaves (unset leaves are 0)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.leaves = 1 << max(0, (capacity - 1).bit_length())
        self.depth = self.leaves.bit_length() - 1
        self._sum = np.zeros(2 * self.leaves, dtype=np.float64)
        self._min = np.full(2 * self.leaves, np.inf, dtype=np.float64)

    @property
    def total(self) -> float:
        return float(self._sum[1])

    @property
    def min(self) -> float:
        """Smallest leaf value that was ever set (unset leaves count as +inf)."""
        return float(self._min[1])

    def get(self, index: np.ndarray) -> np.ndarray:
        return self._sum[np.asarray(index, dtype=np.int64) + self.leaves]

    def set(self, index: np.ndarray, values: np.ndarray) -> None:
        """Sets leaves `index` to `values` and recomputes their ancestors, one level per step."""
        nodes = np.asarray(index, dtype=np.int64) + self.leaves
        values = np.asarray(values, dtype=np.float64)
        self._sum[nodes] = values
        self._min[nodes] = values
        for _ in range(self.depth):
            nodes = np.unique(nodes >> 1)
            left = nodes << 1
            self._sum[nodes] = self._sum[left] + self._sum[left + 1]
            self._min[nodes] = np.minimum(self._min[left], self._min[left + 1])

    def find_prefix(self, mass: np.ndarray) -> np.ndarray:
        """For each `m` in `mass`, the leaf `j` where the running sum of leaves first exceeds `m`.

        Never descends into a zero-sum subtree, so rounding cannot pick an unset leaf.
        """
        mass = np.array(mass, dtype=np.float64)
        node = np.ones(mass.shape, dtype=np.int64)
        for _ in range(self.depth):
            left = node << 1
            left_sum = self._sum[left]
            go_right = (mass >= left_sum) & (self._sum[left + 1] > 0)
            mass -= np.where(go_right, left_sum, 0.0)
            node = left + go_right
        return node - self.leaves


class NumpyPrioritizedSampler:
    """Proportional prioritized sampling over a `NumpySumTree` with priorities `p ** alpha`."""

    def __init__(self, capacity: int, alpha: float = 0.6) -> None:
        self.tree = NumpySumTree(capacity)
        self.alpha = alpha
        self.size = 0

    def insert(self, slots: np.ndarray, priorities: np.ndarray) -> None:
        slots = np.asarray(slots, dtype=np.int64)
        self.tree.set(slots, np.power(priorities, self.alpha))
        self.size = max(self.size, int(slots.max()) + 1)

    def update(self, slots: np.ndarray, priorities: np.ndarray) -> None:
        self.tree.set(slots, np.power(priorities, self.alpha))

    def sample(
        self, batch_size: int, rng: np.random.Generator, beta: float = 0.4
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Returns `(slots, weights, probabilities)` for `batch_size` i.i.d. draws."""
        total, p_min = self.tree.total, self.tree.min
        if not (total > 0 and p_min > 0):
            raise RuntimeError(f"cannot sample: priorities must be > 0 (sum {total}, min {p_min})")
        slots = self.tree.find_prefix(rng.random(batch_size) * total)
        p = self.tree.get(slots)
        weights = np.power(p / p_min, -beta)
        return slots, weights, p / total
