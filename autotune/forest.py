"""A small random-forest surrogate (extremely randomised trees on bootstrap samples), NumPy only.

The alternative to the Gaussian process of autotune.surrogate for spaces with cliffs: a tree
splits "block_size_y = 1" from the rest or "tile_size_x = 3" from its neighbours in one cut,
where a stationary kernel smooths the cliff over its length scale. As in SMAC (Hutter et al.
2011), the prediction is the trees' mean and the uncertainty their spread, scored by expected
improvement like the GP's.

Each tree is grown on a bootstrap sample of the observations; at each node every feature
gets one random threshold between its smallest and largest value in the node (extra trees,
Geurts et al. 2006) and the cut that most reduces the squared error is kept; a node with
fewer than `min_split` points, or whose points share one target, is a leaf.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Floor on the predicted standard deviation, in units of the standardised target: where every
# tree agrees (often far from any observation) EI would otherwise be exactly zero.
STD_FLOOR = 1e-3


class _Trees:
    """Every tree's nodes in shared arrays; nodes 0..trees-1 are the roots, feature -1 a leaf."""

    def __init__(self, capacity: int, trees: int) -> None:
        self.feature = np.full(capacity, -1)
        self.threshold = np.zeros(capacity)
        self.left = np.zeros(capacity, dtype=np.int64)
        self.right = np.zeros(capacity, dtype=np.int64)
        self.value = np.zeros(capacity)
        self.size = self.trees = trees

    def predict(self, x: np.ndarray) -> np.ndarray:
        """trees x rows: each tree's prediction at each row of x."""
        at = np.repeat(np.arange(self.trees), len(x))
        x = np.tile(x, (self.trees, 1))
        rows = np.arange(len(x))
        while len(rows):
            node = at[rows]
            f = self.feature[node]
            inner = f >= 0
            rows, node, f = rows[inner], node[inner], f[inner]
            go_left = x[rows, f] <= self.threshold[node]
            at[rows] = np.where(go_left, self.left[node], self.right[node])
        return self.value[at].reshape(self.trees, -1)


@dataclass
class RandomForest:
    """Extra trees on bootstrap samples: predict() gives the trees' mean and spread."""

    trees: int = 32
    min_split: int = 3
    seed: int = 0
    _forest: _Trees | None = field(default=None, init=False)

    def fit(self, x: np.ndarray, y: np.ndarray) -> None:
        """Grow the trees on bootstrap samples of (x, y), all at once, a level at a time."""
        rng = np.random.default_rng(self.seed)
        sample = rng.integers(0, len(y), (self.trees, len(y))).ravel()
        x, y = x[sample], y[sample]
        n, d = x.shape
        tree = _Trees(2 * n + self.trees, self.trees)
        at = np.repeat(np.arange(self.trees), len(y) // self.trees)  # each sample's node
        live = np.ones(n, dtype=bool)  # samples in a node still to be split
        open_nodes = np.arange(self.trees)
        while len(open_nodes):
            slot = np.full(tree.size, -1)
            slot[open_nodes] = np.arange(len(open_nodes))
            k = len(open_nodes)
            xs, ys, where = x[live], y[live], slot[at[live]]
            count = np.bincount(where, minlength=k)
            total = np.bincount(where, weights=ys, minlength=k)
            spread = np.bincount(where, weights=ys * ys, minlength=k) - total**2 / count
            tree.value[open_nodes] = total / count
            low = np.full((k, d), np.inf)
            high = np.full((k, d), -np.inf)
            np.minimum.at(low, where, xs)
            np.maximum.at(high, where, xs)
            cuts = low + rng.random((k, d)) * (high - low)
            goes_left = xs <= cuts[where]  # samples x features
            cell = (where[:, None] * d + np.arange(d)).ravel()
            n_left = np.bincount(cell, weights=goes_left.ravel(), minlength=k * d).reshape(k, d)
            sum_left = np.bincount(
                cell, weights=(goes_left * ys[:, None]).ravel(), minlength=k * d
            ).reshape(k, d)
            n_right = count[:, None] - n_left
            sum_right = total[:, None] - sum_left
            # the cut that maximises sum_l^2/n_l + sum_r^2/n_r minimises the squared error
            gain = sum_left**2 / np.maximum(n_left, 1) + sum_right**2 / np.maximum(n_right, 1)
            gain[(n_left == 0) | (n_right == 0) | (high <= low)] = -np.inf
            best = np.argmax(gain, axis=1)
            splits = (
                (count >= self.min_split)
                & (spread > 1e-12 * count)
                & np.isfinite(gain[np.arange(k), best])
            )
            parents = open_nodes[splits]
            children = tree.size + np.arange(2 * len(parents))
            tree.size += len(children)
            tree.feature[parents] = best[splits]
            tree.threshold[parents] = cuts[np.arange(k), best][splits]
            tree.left[parents], tree.right[parents] = children[0::2], children[1::2]
            moving = np.flatnonzero(live)[splits[where]]
            node = at[moving]
            go_left = x[moving, tree.feature[node]] <= tree.threshold[node]
            at[moving] = np.where(go_left, tree.left[node], tree.right[node])
            live[:] = False
            live[moving] = True
            open_nodes = children
        self._forest = tree

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The trees' mean and standard deviation at each row of x (fit first)."""
        if self._forest is None:
            raise ValueError("RandomForest.predict: call fit(x, y) first")
        votes = self._forest.predict(x)
        return votes.mean(axis=0), np.maximum(votes.std(axis=0), STD_FLOOR)
