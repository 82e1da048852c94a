"""Batched k-means in numpy: many small problems of the same shape solved at once.

A review has 3-40 sentences and 2-7 clusters; sklearn's per-call overhead (~1 ms) dwarfs the
arithmetic. Here a batch of B problems with the same (n points, k clusters) is one 3-D array and
every step of k-means++ seeding and Lloyd's algorithm is a handful of array operations.

The algorithm mirrors sklearn's ``KMeans(random_state=0)`` (greedy k-means++ with 2 + log(k)
local trials, Lloyd iterations until labels stop changing or the centre shift falls below
``1e-4 * mean feature variance``, at most 300 iterations), with the same random stream, so it
makes the same choices up to floating-point ties. Deterministic: every problem is seeded the
same way, independently of the batch it is in.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

_MAX_ITER = 300
_TOL = 1e-4


def _uniform_stream(count: int) -> np.ndarray:
    """The first ``count`` (or more) uniforms of ``RandomState(0)``.

    sklearn draws from RandomState(0) one uniform for the first centre (``choice`` with p), then
    n_local_trials uniforms per further centre: just the first values of this stream."""
    return _uniforms(max(4096, 1 << (count - 1).bit_length()))


@lru_cache(maxsize=4)
def _uniforms(count: int) -> np.ndarray:
    return np.random.RandomState(0).random_sample(count)


@lru_cache(maxsize=4096)
def _first_center(n: int) -> int:
    cdf = np.cumsum(np.full(n, 1.0 / n))
    cdf /= cdf[-1]
    return int(cdf.searchsorted(_uniform_stream(1)[0], side="right"))


def _sq_dist(a: np.ndarray, b: np.ndarray, b_sq: np.ndarray) -> np.ndarray:
    """Squared distances (B, p, q) between a (B, p, d) and b (B, q, d), b_sq = |b|^2 (B, q)."""
    d = np.einsum("bpd,bpd->bp", a, a)[:, :, None] - 2.0 * (a @ b.transpose(0, 2, 1)) + b_sq[:, None, :]
    return np.maximum(d, 0.0, out=d)


def kmeans_plusplus(x: np.ndarray, k: int, x_sq: np.ndarray) -> np.ndarray:
    """Greedy k-means++ seeds (B, k, d) for a batch x (B, n, d), sklearn's procedure and stream."""
    b, n, _ = x.shape
    trials = 2 + int(np.log(k))
    stream = _uniform_stream(1 + (k - 1) * trials)
    rows = np.arange(b)
    first = _first_center(n)
    centers = np.empty((b, k, x.shape[2]), dtype=x.dtype)
    centers[:, 0] = x[:, first]
    closest = _sq_dist(x[:, first : first + 1], x, x_sq)[:, 0]  # (B, n)
    pot = closest.sum(axis=1)
    for c in range(1, k):
        u = stream[1 + (c - 1) * trials : 1 + c * trials]
        rand_vals = u[None, :] * pot[:, None]  # (B, t)
        cum = np.cumsum(closest, axis=1, dtype=np.float64)
        # batched searchsorted(side="left"): how many cumulative values are < each draw
        cand = (cum[:, :, None] < rand_vals[:, None, :]).sum(axis=1)
        np.minimum(cand, n - 1, out=cand)
        cand_x = x[rows[:, None], cand]  # (B, t, d)
        dist = np.minimum(_sq_dist(cand_x, x, x_sq), closest[:, None, :])  # (B, t, n)
        cand_pot = dist.sum(axis=2)
        best = cand_pot.argmin(axis=1)
        pot = cand_pot[rows, best]
        closest = dist[rows, best]
        centers[:, c] = cand_x[rows, best]
    return centers


def kmeans(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Cluster each of B problems x (B, n, d) into k clusters: (labels (B, n), centers (B, k, d))."""
    b, n, _ = x.shape
    # sklearn centres the data first (for precision); distances are unchanged.
    x = x - x.mean(axis=1, keepdims=True)
    x_sq = np.einsum("bnd,bnd->bn", x, x)
    tol = x.var(axis=1).mean(axis=1) * _TOL  # (B,)
    centers = kmeans_plusplus(x, k, x_sq)
    labels = np.full((b, n), -1)
    active = np.ones(b, dtype=bool)
    eye = np.eye(k, dtype=x.dtype)
    for _ in range(_MAX_ITER):
        idx = np.flatnonzero(active)
        xa = x[idx]
        new_labels = _sq_dist(centers[idx], xa, x_sq[idx]).argmin(axis=1)  # (A, n)
        onehot = eye[new_labels]  # (A, n, k)
        counts = onehot.sum(axis=1)  # (A, k)
        sums = onehot.transpose(0, 2, 1) @ xa  # (A, k, d)
        empty = counts == 0
        new_centers = sums / np.maximum(counts, 1)[:, :, None]
        if empty.any():
            _relocate_empty(xa, new_labels, centers[idx], new_centers, empty)
        shift = ((new_centers - centers[idx]) ** 2).sum(axis=(1, 2))
        strict = (new_labels == labels[idx]).all(axis=1)
        centers[idx] = new_centers
        labels[idx] = new_labels
        done = strict | (shift <= tol[idx])
        # sklearn re-labels with the final centres unless the labels had stopped changing
        loose = idx[done & ~strict]
        if loose.size:
            labels[loose] = _sq_dist(centers[loose], x[loose], x_sq[loose]).argmin(axis=1)
        active[idx[done]] = False
        if not active.any():
            break
    return labels, centers


def _relocate_empty(
    x: np.ndarray, labels: np.ndarray, old: np.ndarray, new: np.ndarray, empty: np.ndarray
) -> None:
    """Like sklearn: an empty cluster takes the point farthest from its (previous) centre."""
    for i in np.flatnonzero(empty.any(axis=1)):
        far = ((x[i] - old[i][labels[i]]) ** 2).sum(axis=1)
        order = np.argsort(-far, kind="stable")
        for c, p in zip(np.flatnonzero(empty[i]), order, strict=False):
            new[i, c] = x[i, p]
