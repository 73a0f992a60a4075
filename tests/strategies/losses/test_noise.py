"""tlkit.datasets.noise: transition matrices and label-noise injection on clean labels."""

from __future__ import annotations

import pytest
import torch

from tlkit.datasets import (
    UNLABELLED,
    DataError,
    Domain,
    DomainPair,
    add_label_noise,
    transition_matrix,
)

K = 10


def _domain(n: int = 6000, k: int = K, unlabelled: int = 0) -> Domain:
    labels = torch.arange(n) % k
    if unlabelled:
        labels = labels.clone()
        labels[:unlabelled] = UNLABELLED
    images = torch.zeros((n, 1, 2, 2), dtype=torch.uint8)
    return Domain(
        images, labels, clean_labels=torch.arange(n) % k, classes=[str(i) for i in range(k)]
    )


def test_symmetric_matrix():
    t = transition_matrix("symmetric", 0.4, 5)
    assert t.shape == (5, 5)
    assert torch.allclose(t.diagonal(), torch.full((5,), 0.6, dtype=t.dtype))
    assert torch.allclose(t[0, 1:], torch.full((4,), 0.1, dtype=t.dtype))
    assert torch.allclose(t.sum(1), torch.ones(5, dtype=t.dtype))


def test_pairflip_matrix():
    t = transition_matrix("pairflip", 0.3, 4)
    expected = torch.tensor(
        [[0.7, 0.3, 0, 0], [0, 0.7, 0.3, 0], [0, 0, 0.7, 0.3], [0.3, 0, 0, 0.7]],
        dtype=t.dtype,
    )
    assert torch.allclose(t, expected)


def test_matrix_errors():
    with pytest.raises(DataError, match="unknown noise kind"):
        transition_matrix("gaussian", 0.2, 10)
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        transition_matrix("symmetric", 1.5, 10)
    with pytest.raises(DataError, match="at least 2"):
        transition_matrix("symmetric", 0.2, 1)


@pytest.mark.parametrize("kind", ["symmetric", "pairflip"])
@pytest.mark.parametrize("rate", [0.2, 0.45])
def test_realised_rate_close_to_requested(kind, rate):
    d = _domain()
    noisy = add_label_noise(d, kind, rate, seed=0)
    assert isinstance(noisy, Domain)
    assert abs(noisy.noise_rate - rate) < 0.03
    assert torch.equal(noisy.clean_labels, d.clean_labels)
    assert torch.equal(noisy.images, d.images)
    flipped = noisy.labels != noisy.clean_labels
    if kind == "pairflip":
        c = noisy.clean_labels[flipped]
        assert torch.equal(noisy.labels[flipped], (c + 1) % K)
    else:  # spread over all the other classes, roughly evenly
        counts = torch.bincount(noisy.labels[flipped & (noisy.clean_labels == 0)], minlength=K)
        assert counts[0] == 0 and (counts[1:] > 0).all()
        assert counts[1:].float().std() / counts[1:].float().mean() < 0.5


def test_seed_determinism_and_no_compounding():
    d = _domain()
    a = add_label_noise(d, "symmetric", 0.4, seed=1)
    b = add_label_noise(d, "symmetric", 0.4, seed=1)
    c = add_label_noise(d, "symmetric", 0.4, seed=2)
    assert torch.equal(a.labels, b.labels) and not torch.equal(a.labels, c.labels)
    twice = add_label_noise(a, "symmetric", 0.4, seed=3)  # drawn from the clean labels again
    assert abs(twice.noise_rate - 0.4) < 0.03


def test_unlabelled_stay_unlabelled():
    d = _domain(unlabelled=2000)
    noisy = add_label_noise(d, "symmetric", 0.5, seed=0)
    assert (noisy.labels[:2000] == UNLABELLED).all()
    assert noisy.num_labelled == 4000
    assert abs(noisy.noise_rate - 0.5) < 0.04


def test_explicit_matrix():
    t = torch.eye(3)[[1, 2, 0]]  # always 0->1, 1->2, 2->0
    d = _domain(300, k=3)
    noisy = add_label_noise(d, t)
    assert torch.equal(noisy.labels, (d.clean_labels + 1) % 3)
    assert noisy.noise_rate == 1.0


@pytest.mark.parametrize(
    "matrix, match",
    [
        (torch.eye(4), r"shape \(3, 3\)"),
        ([[1.5, -0.5, 0], [0, 1, 0], [0, 0, 1]], "non-negative"),
        ([[0.5, 0.4, 0], [0, 1, 0], [0, 0, 1]], "row 0 sums to 0.9"),
    ],
)
def test_bad_matrix(matrix, match):
    with pytest.raises(DataError, match=match):
        add_label_noise(_domain(30, k=3), matrix)


def test_pair_gets_noise_on_source_only():
    src, test = _domain(), _domain(500)
    tgt = _domain(400).unlabelled()
    pair = DomainPair(src, test, tgt, test, name="p")
    noisy = add_label_noise(pair, "pairflip", 0.3, seed=0)
    assert isinstance(noisy, DomainPair) and noisy.name == "p"
    assert abs(noisy.source.noise_rate - 0.3) < 0.03
    assert noisy.source_test is test and noisy.target is tgt and noisy.target_test is test
    assert "noise=" in repr(noisy.source)


def test_rejects_regression_and_other_types():
    reg = Domain(torch.zeros((4, 1, 2, 2), dtype=torch.uint8), torch.rand(4), task="regression")
    with pytest.raises(DataError, match="classification"):
        add_label_noise(reg)
    with pytest.raises(DataError, match="Domain or a DomainPair"):
        add_label_noise([1, 2, 3])
