"""Confident learning (Northcutt et al., JAIR 2021): the noise estimate computed by hand, each
pruning rule, remove vs relabel, and a seeded run where it beats the old off-diagonal rule."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

import tlkit
from tlkit.cross_validation import cross_validated_probabilities, cross_validated_suspicious_labels
from tlkit.datasets import DataError, Domain, DomainPair, add_label_noise, transition_matrix
from tlkit.label_issues import (
    PRUNE,
    SuspiciousLabels,
    estimate_noise,
    find_label_issues,
)

# 11 samples, 3 classes. Thresholds (mean self-confidence per given class):
#   t0 = mean(.9, .7, .2, .1, .3) = .44, t1 = mean(.8, .6, .25) = .55, t2 = mean(.8, .55, .2) = .5167
# Confident classes: 0 0 1 | 1 1 0 | 2 2 - | 2 -   (sample 8 and 10 reach no threshold)
P = torch.tensor(
    [
        [0.90, 0.05, 0.05],  # 0  given 0
        [0.70, 0.20, 0.10],  # 1  given 0
        [0.20, 0.70, 0.10],  # 2  given 0, looks like 1
        [0.10, 0.80, 0.10],  # 3  given 1
        [0.10, 0.60, 0.30],  # 4  given 1
        [0.65, 0.25, 0.10],  # 5  given 1, looks like 0
        [0.10, 0.10, 0.80],  # 6  given 2
        [0.20, 0.25, 0.55],  # 7  given 2
        [0.30, 0.50, 0.20],  # 8  given 2, argmax 1 but below t1
        [0.10, 0.10, 0.80],  # 9  given 0, looks like 2
        [0.30, 0.35, 0.35],  # 10 given 0, unsure
    ],
    dtype=torch.float64,
)
Y = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 0, 0])
CLEAN = torch.tensor([0, 0, 1, 1, 1, 0, 2, 2, 1, 2, 1])


def test_noise_estimate_by_hand():
    est = estimate_noise(P, Y)
    torch.testing.assert_close(
        est.thresholds, torch.tensor([2.2 / 5, 1.65 / 3, 1.55 / 3], dtype=torch.float64)
    )
    assert est.confident_class.tolist() == [0, 0, 1, 1, 1, 0, 2, 2, -1, 2, -1]
    assert est.confident_joint.tolist() == [[2, 1, 1], [1, 2, 0], [0, 0, 2]]
    # calibration: row i rescaled to n_i = (5, 3, 3): row 0 x 5/4, row 2 x 3/2
    cal = torch.tensor([[2.5, 1.25, 1.25], [1, 2, 0], [0, 0, 3]], dtype=torch.float64)
    torch.testing.assert_close(est.calibrated_joint, cal)
    torch.testing.assert_close(est.noise_joint, cal / 11)
    torch.testing.assert_close(est.true_prior, torch.tensor([3.5, 3.25, 4.25]).double() / 11)
    # noise matrix, rows true class: P(given = i | true = j) = Q[i, j] / P(true = j)
    expected = torch.tensor([[5 / 7, 2 / 7, 0], [5 / 13, 8 / 13, 0], [5 / 17, 0, 12 / 17]])
    torch.testing.assert_close(est.noise_matrix, expected.double())
    inverse = torch.tensor([[0.5, 0.25, 0.25], [1 / 3, 2 / 3, 0], [0, 0, 1]]).double()
    torch.testing.assert_close(est.inverse_noise_matrix, inverse)
    assert est.noise_rate == pytest.approx(3.5 / 11)
    assert est.num_errors.tolist() == pytest.approx([2.5, 1.0, 0.0])
    assert "noise matrix" in repr(est) and "31.8%" in repr(est)


@pytest.mark.parametrize(
    "prune, flagged",
    [
        # pairs (0,1), (0,2), (1,0), each round(1.25 | 1) = 1: the largest margin p_j - p_i
        ("by_pair", [2, 5, 9]),
        ("prune_by_noise_rate", [2, 5, 9]),  # the paper's name
        # class 0: round_half_up(5 - 2.5) = 3 lowest normalised margins 9 (-.7), 2 (-.5), 10
        # (-.05); class 1: 1 -> 5; class 2: 0
        ("by_class", [2, 5, 9, 10]),
        ("both", [2, 5, 9]),
        (None, [2, 5, 9, 10]),  # the default: by_class
        ("off_diagonal", [2, 5, 9]),
        ("argmax", [2, 5, 8, 9, 10]),
    ],
)
def test_each_pruning_rule_picks_the_expected_samples(prune, flagged):
    mask = find_label_issues(P, Y, prune=prune)
    assert mask.nonzero().flatten().tolist() == flagged
    issues = SuspiciousLabels.from_probabilities(P, Y, prune=prune)
    assert sorted(issues.flagged_indices.tolist()) == flagged
    # flagged first, most suspicious (largest normalised margin) first
    assert issues.flagged_indices.tolist()[0] == 9
    assert (issues.scores[: len(issues)].diff() <= 0).all()


def test_rank_by_self_confidence():
    issues = SuspiciousLabels.from_probabilities(P, Y, prune="by_class", rank_by="self_confidence")
    assert sorted(issues.flagged_indices.tolist()) == [2, 5, 9, 10]
    i = issues.indices.tolist().index(10)
    assert issues.scores[i] == pytest.approx(1 - 0.30)


def test_counting_rules_never_flag_the_models_choice_and_keep_one_per_class():
    # t0 = .85, t1 = .075 -> confident joint [[1, 1], [2, 0]]: every label "1" looks like "0"
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.9, 0.1], [0.95, 0.05]])
    labels = torch.tensor([0, 0, 1, 1])
    assert estimate_noise(probs, labels).confident_joint.tolist() == [[1, 1], [2, 0]]
    # pair (0, 1) would flag sample 1, but its most probable class is its label 0: kept.
    # pair (1, 0) would flag both samples of class 1: the more self-confident one (2) is kept.
    for prune in ("by_pair", "by_class", "both"):
        assert find_label_issues(probs, labels, prune=prune).nonzero().flatten().tolist() == [3]
    assert find_label_issues(probs, labels, prune="argmax").nonzero().flatten().tolist() == [2, 3]


def tiny_domain() -> Domain:
    images = torch.arange(11, dtype=torch.uint8).view(11, 1, 1, 1).expand(11, 1, 4, 4).clone()
    return Domain(images=images, labels=Y, clean_labels=CLEAN, classes=("a", "b", "c"), name="t")


def test_remove_and_relabel():
    domain = tiny_domain()
    issues = SuspiciousLabels.from_probabilities(P, Y, prune="by_pair", classes=domain.classes)
    assert sorted(issues.flagged_indices.tolist()) == [2, 5, 9]
    removed = issues.remove(domain)
    assert len(removed) == 8 and removed.images[:, 0, 0, 0].tolist() == [0, 1, 3, 4, 6, 7, 8, 10]
    relabelled = issues.relabel(domain)
    assert len(relabelled) == 11
    # each flagged label becomes the most probable class; clean labels and images untouched
    assert relabelled.labels.tolist() == [0, 0, 1, 1, 1, 0, 2, 2, 2, 2, 0]
    assert torch.equal(relabelled.clean_labels, CLEAN)
    assert torch.equal(relabelled.images, domain.images)
    assert domain.noise_rate == pytest.approx(5 / 11)
    assert relabelled.noise_rate == pytest.approx(2 / 11)  # 8 and 10 were not flagged
    assert removed.noise_rate == pytest.approx(2 / 8)
    found = issues.precision_recall(domain)
    assert found["precision"] == 1.0 and found["recall"] == pytest.approx(3 / 5)
    assert found["suggestion_accuracy"] == 1.0
    # on a task, the source is cleaned and the test split kept
    task = DomainPair(source=domain, source_test=domain, name="task")
    for cleaned in (issues.remove(task), issues.relabel(task)):
        assert isinstance(cleaned, DomainPair) and cleaned.source_test is domain
    assert issues.relabel(task).source.labels.tolist() == relabelled.labels.tolist()
    with pytest.raises(DataError, match="not the domain"):
        issues.relabel(relabelled)


def test_noise_matrix_recovers_a_known_transition_matrix():
    """Probabilities that know the true class (plus Gaussian noise on the logits) and labels
    drawn from a known transition matrix: the estimate comes back close to the realised one."""
    g = torch.Generator().manual_seed(0)
    k, n = 4, 4000
    true = torch.randint(0, k, (n,), generator=g)
    t = torch.tensor(
        [[0.7, 0.3, 0.0, 0.0], [0.0, 0.8, 0.2, 0.0], [0.0, 0.0, 0.9, 0.1], [0.1, 0.0, 0.0, 0.9]]
    )
    given = torch.multinomial(t[true], 1, generator=g).squeeze(1)
    realised = torch.bincount(true * k + given, minlength=k * k).view(k, k).double()
    realised /= realised.sum(dim=1, keepdim=True)
    logits = 4.0 * torch.nn.functional.one_hot(true, k) + torch.randn(n, k, generator=g)
    est = estimate_noise(logits.softmax(dim=1), given)
    # measured 0.019 (seeds 0-4: 0.010-0.019); the transpose would be off by 0.3
    assert (est.noise_matrix - realised).abs().max() < 0.04
    assert est.noise_rate == pytest.approx(float((given != true).float().mean()), abs=0.01)


def test_bad_inputs_fail_with_the_fix():
    with pytest.raises(DataError, match="softmax"):
        SuspiciousLabels.from_probabilities(torch.log(P), Y)  # logits, not probabilities
    with pytest.raises(DataError, match="sum to 1"):
        estimate_noise(P * 2, Y)
    with pytest.raises(DataError, match=r"\(N, K\)"):
        estimate_noise(P, Y[:5])
    with pytest.raises(ValueError, match="unknown prune"):
        find_label_issues(P, Y, prune="by_noise")
    with pytest.raises(ValueError, match="rank_by"):
        SuspiciousLabels.from_probabilities(P, Y, rank_by="loss")
    with pytest.raises(ValueError, match="small_loss"):
        SuspiciousLabels.from_probabilities(P, Y, method="small_loss", prune="by_pair")
    with pytest.raises(ValueError, match="unknown prune"):  # before any training
        cross_validated_suspicious_labels(tiny_domain(), prune="pairs")
    issues = SuspiciousLabels.from_probabilities(P, Y, method="small_loss")
    with pytest.raises(ValueError, match="confident_learning"):
        issues.noise_matrix  # noqa: B018
    assert set(PRUNE) == {"by_pair", "by_class", "both", "off_diagonal", "argmax"}


NOISY_FIT = dict(backbone="small_cnn", mode="full", image_size=8, lr=1e-2, batch_size=32)


@pytest.fixture(scope="module")
def noisy40():
    return add_label_noise(tlkit.datasets.load("digits"), "symmetric", 0.4, seed=0)


@pytest.fixture(scope="module")
def out_of_fold(noisy40):
    """2 folds x 3 epochs on 8x8 digits: a few seconds."""
    return cross_validated_probabilities(
        noisy40, folds=2, epochs=3, seed=0, progress=False, **NOISY_FIT
    )


def test_real_run_beats_the_off_diagonal_rule(noisy40, out_of_fold):
    probs, idx = out_of_fold
    labels = noisy40.source.labels[idx]
    f1 = {
        prune: SuspiciousLabels.from_probabilities(
            probs, labels, prune=prune, indices=idx
        ).precision_recall(noisy40)["f1"]
        for prune in ("off_diagonal", "by_pair", "by_class")
    }
    # measured (seeds 0, 1, 2): off_diagonal 0.90 0.90 0.92, by_pair 0.94 0.94 0.96, by_class
    # 0.94 0.95 0.96
    assert f1["by_pair"] > f1["off_diagonal"] + 0.02, f1
    assert f1["by_class"] > f1["off_diagonal"] + 0.02, f1
    est = estimate_noise(probs, labels)
    truth = transition_matrix("symmetric", 0.4, 10)
    assert est.noise_rate == pytest.approx(noisy40.source.noise_rate, abs=0.05)
    assert (est.noise_matrix - truth).abs().mean() < 0.03  # measured 0.016


@pytest.mark.slow
def test_cleaning_then_retraining_beats_training_on_the_noise(noisy40):
    """The whole recipe at the benchmark's budget (4 folds x 4 epochs, 15 epochs retraining):
    measured (seed 0) 0.981 clean test accuracy after removal, 0.978 after relabelling, vs 0.744
    for cross-entropy on the noisy labels."""
    issues = cross_validated_suspicious_labels(
        noisy40, folds=4, epochs=4, seed=0, progress=False, **NOISY_FIT
    )
    options = dict(epochs=15, seed=0, progress=False, **NOISY_FIT)
    noisy = tlkit.fit(noisy40, **options).last["source_accuracy"]
    cleaned = tlkit.fit(issues.remove(noisy40), **options).last["source_accuracy"]
    relabelled = tlkit.fit(issues.relabel(noisy40), **options).last["source_accuracy"]
    assert cleaned > noisy + 0.1 and cleaned > 0.96, (cleaned, noisy)
    assert relabelled > noisy + 0.1, (relabelled, noisy)
    assert replace(noisy40, source=issues.remove(noisy40).source).source.noise_rate < 0.08
