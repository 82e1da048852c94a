"""Batched k-means in numpy: many small problems of the same shape solved at once.

A review has 3-40 sentences and 2-7 clusters; sklearn's per-call overhead (~1 ms) dwarfs the
arithmetic. Here a batch of B problems with the same k clusters is one 3-D array (problems of
fewer points padded with zeros that are never drawn as seeds nor counted in a cluster) and every
step of k-means++ seeding and Lloyd's algorithm is a handful of array operations. Each Lloyd
iteration works on the problems still moving only.

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


def kmeans_plusplus(x: np.ndarray, k: int, x_sq: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Greedy k-means++ seeds (B, k, d) for a batch x (B, n, d) of problems of `sizes` points
    (the rest padding), sklearn's procedure and stream."""
    b, n, _ = x.shape
    trials = 2 + int(np.log(k))
    stream = _uniform_stream(1 + (k - 1) * trials)
    rows = np.arange(b)
    first = np.array([_first_center(size) for size in sizes.tolist()])
    last = sizes - 1
    centers = np.empty((b, k, x.shape[2]), dtype=x.dtype)
    centers[:, 0] = x[rows, first]
    # A padding point is at distance 0 from the seeds: it adds nothing to the potential and is
    # never drawn (draws fall short of the potential; one at its very end is clamped to `last`).
    closest = _sq_dist(centers[:, :1], x, x_sq)[:, 0] * (np.arange(n) <= last[:, None])  # (B, n)
    pot = closest.sum(axis=1)
    for c in range(1, k):
        u = stream[1 + (c - 1) * trials : 1 + c * trials]
        rand_vals = u[None, :] * pot[:, None]  # (B, t)
        cum = np.cumsum(closest, axis=1, dtype=np.float64)
        # batched searchsorted(side="left"): how many cumulative values are < each draw
        cand = (cum[:, :, None] < rand_vals[:, None, :]).sum(axis=1)
        np.minimum(cand, last[:, None], out=cand)
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
    return kmeans_padded(x, k, np.full(x.shape[0], x.shape[1]))


def kmeans_ragged(problems: list[np.ndarray], k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """`kmeans` of each batch of problems (B_j, n_j, d), all into k clusters, in one padded batch:
    a chunk of reviews has dozens of shapes of a few problems each, and a call costs about the
    same for four problems as for four hundred."""
    if len(problems) == 1:
        return [kmeans(problems[0], k)]
    counts = [len(problem) for problem in problems]
    starts = np.cumsum([0, *counts]).tolist()  # each batch's first problem in the padded one
    sizes = np.repeat([problem.shape[1] for problem in problems], counts)
    padded = np.zeros((len(sizes), int(sizes.max()), problems[0].shape[2]), dtype=problems[0].dtype)
    for problem, start, end in zip(problems, starts, starts[1:], strict=False):
        padded[start:end, : problem.shape[1]] = problem
    labels, centers = kmeans_padded(padded, k, sizes)
    return [
        (labels[start:end, : problem.shape[1]], centers[start:end])
        for problem, start, end in zip(problems, starts, starts[1:], strict=False)
    ]


def kmeans_padded(x: np.ndarray, k: int, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`kmeans` of B problems x (B, n, d) of `sizes` (B,) points each, the rest of each row zero
    padding (labelled, but left out of every sum)."""
    b, n, _ = x.shape
    real = np.arange(n) < sizes[:, None]  # (B, n)
    count = sizes.astype(x.dtype)[:, None, None]

    def centred(points: np.ndarray) -> np.ndarray:
        """Each problem's points less their mean, the padding kept at zero."""
        return (points - points.sum(axis=1, keepdims=True) / count) * real[:, :, None]

    # sklearn centres the data first (for precision); distances are unchanged.
    x = centred(x)
    x_sq = np.einsum("bnd,bnd->bn", x, x)
    # (The variance centres once more, as numpy's var does: the same float rounding as sklearn.)
    spread = centred(x)
    tol = ((spread * spread).sum(axis=1) / count[:, 0]).mean(axis=1) * _TOL  # (B,): mean variance
    centers = kmeans_plusplus(x, k, x_sq, sizes)
    labels = np.full((b, n), -1)
    eye = np.eye(k, dtype=x.dtype)
    # The problems still iterating, and their working copies: compacted when some finish, so
    # an iteration costs what the problems left cost, not the whole batch.
    left = np.arange(b)
    xa, x_sq_a, real_a, weight_a, tol_a = x, x_sq, real, real[:, :, None].astype(x.dtype), tol
    centers_a, labels_a = centers, labels
    for _ in range(_MAX_ITER):
        new_labels = _sq_dist(centers_a, xa, x_sq_a).argmin(axis=1)  # (A, n)
        onehot = eye[new_labels] * weight_a  # (A, n, k); padding in no cluster
        counts = onehot.sum(axis=1)  # (A, k)
        new_centers = (onehot.transpose(0, 2, 1) @ xa) / np.maximum(counts, 1)[:, :, None]
        empty = counts == 0
        if empty.any():
            _relocate_empty(xa, new_labels, centers_a, new_centers, empty, sizes[left])
        shift = ((new_centers - centers_a) ** 2).sum(axis=(1, 2))
        strict = ((new_labels == labels_a) | ~real_a).all(axis=1)
        centers_a, labels_a = new_centers, new_labels
        done = strict | (shift <= tol_a)
        if not done.any():
            continue
        finished = np.flatnonzero(done)
        centers[left[finished]] = centers_a[finished]
        # sklearn re-labels with the final centres unless the labels had stopped changing
        loose = finished[~strict[finished]]
        if loose.size:
            labels_a[loose] = _sq_dist(centers_a[loose], xa[loose], x_sq_a[loose]).argmin(axis=1)
        labels[left[finished]] = labels_a[finished]
        if finished.size == left.size:
            return labels, centers
        going = np.flatnonzero(~done)
        left, xa, x_sq_a, real_a, weight_a, tol_a = (
            array[going] for array in (left, xa, x_sq_a, real_a, weight_a, tol_a)
        )
        centers_a, labels_a = centers_a[going], labels_a[going]
    centers[left], labels[left] = centers_a, labels_a  # (the iteration limit)
    return labels, centers


def _relocate_empty(
    x: np.ndarray, labels: np.ndarray, old: np.ndarray, new: np.ndarray, empty: np.ndarray, sizes: np.ndarray
) -> None:
    """Like sklearn: an empty cluster takes the point farthest from its (previous) centre."""
    for i in np.flatnonzero(empty.any(axis=1)):
        n = sizes[i]
        far = ((x[i, :n] - old[i][labels[i, :n]]) ** 2).sum(axis=1)
        order = np.argsort(-far, kind="stable")
        for c, p in zip(np.flatnonzero(empty[i]), order, strict=False):
            new[i, c] = x[i, p]
