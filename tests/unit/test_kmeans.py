"""The batched k-means: problems of different sizes solved in one padded call give what each
gives alone, and what sklearn's KMeans(random_state=0) gives."""

import numpy as np
import pytest

from summarizer.kmeans import kmeans, kmeans_ragged


def _blobs(rng, problems, n, k, d=8):
    centres = rng.normal(scale=6.0, size=(problems, k, d))
    members = rng.integers(0, k, size=(problems, n))
    points = np.take_along_axis(centres, members[:, :, None], axis=1) + rng.normal(size=(problems, n, d))
    return points.astype(np.float32)


def test_a_padded_call_gives_each_problem_what_it_gets_alone():
    rng = np.random.default_rng(7)
    batches = [_blobs(rng, problems, n, 3) for problems, n in ((4, 5), (1, 9), (6, 7), (3, 8))]
    together = kmeans_ragged(batches, 3)
    assert len(together) == len(batches)
    for points, (labels, centers) in zip(batches, together, strict=True):
        alone_labels, alone_centers = kmeans(points, 3)
        assert labels.shape == points.shape[:2]
        assert centers.shape == (len(points), 3, points.shape[2])
        np.testing.assert_array_equal(labels, alone_labels)
        np.testing.assert_allclose(centers, alone_centers, rtol=1e-4, atol=1e-4)


def test_padding_is_left_out_of_every_centre():
    # Far from the padding's zeros: a padding point counted in a cluster would pull its centre.
    rng = np.random.default_rng(3)
    short = _blobs(rng, 5, 4, 2) + 100.0
    long = _blobs(rng, 5, 16, 2) + 100.0
    (labels, centers), _ = kmeans_ragged([short, long], 2)
    centred = short - short.mean(axis=1, keepdims=True)  # centres come in centred coordinates
    for problem in range(len(short)):
        for cluster in range(2):
            members = centred[problem][labels[problem] == cluster]
            assert len(members)
            np.testing.assert_allclose(centers[problem, cluster], members.mean(axis=0), atol=1e-3)


def test_agrees_with_sklearn():
    cluster = pytest.importorskip("sklearn.cluster")
    rng = np.random.default_rng(11)
    batches = [_blobs(rng, 5, n, k) for n, k in ((12, 3), (15, 3), (9, 3))]
    for points, (labels, _) in zip(batches, kmeans_ragged(batches, 3), strict=True):
        for problem, ours in zip(points, labels, strict=True):
            theirs = cluster.KMeans(n_clusters=3, random_state=0, n_init=1).fit(problem).labels_
            np.testing.assert_array_equal(ours, theirs)
