"""Unsupervised validators: hand-made logits, then the scores in a run's history and as monitor."""

from __future__ import annotations

import math

import pytest
import torch
from tlkit_strategies.validators.entropy import entropy_score
from tlkit_strategies.validators.info_max import info_max_score
from tlkit_strategies.validators.snd import SNDScore, snd_score

import tlkit

CONFIDENT = torch.tensor([[9.0, 0.0, 0.0], [0.0, 9.0, 0.0], [0.0, 0.0, 9.0], [9.0, 0.0, 0.0]])
UNIFORM = torch.zeros(4, 3)
COLLAPSED = torch.tensor([[9.0, 0.0, 0.0]] * 4)  # confident, but every sample in one class


def test_entropy_score_orders_confident_above_uniform():
    assert entropy_score(UNIFORM) == pytest.approx(-math.log(3))
    assert entropy_score(CONFIDENT) > -0.01 > entropy_score(UNIFORM)
    p = [0.8, 0.2]
    expected = p[0] * math.log(p[0]) + p[1] * math.log(p[1])
    assert entropy_score(torch.tensor([p]).log()) == pytest.approx(expected, rel=1e-6)


def test_info_max_hand_computed_and_penalises_collapse():
    assert info_max_score(UNIFORM) == pytest.approx(0.0, abs=1e-6)  # log 3 - log 3
    # confident one-hot on classes 0, 1, 2, 0: H(mean) = H(1/2, 1/4, 1/4), mean H ~ 0
    h_mean = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))
    assert info_max_score(CONFIDENT * 10) == pytest.approx(h_mean, abs=1e-4)
    assert info_max_score(CONFIDENT) > info_max_score(COLLAPSED)
    assert info_max_score(CONFIDENT) > info_max_score(UNIFORM)
    assert entropy_score(COLLAPSED) == pytest.approx(entropy_score(CONFIDENT))  # entropy cannot


def test_snd_hand_computed():
    probs = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    # cosine similarities: s12 = 1, s13 = s23 = 0. Rows 1 and 2 see neighbours (1, 0) / 0.05,
    # row 3 sees (0, 0): a uniform distribution over its two neighbours, entropy log 2.
    q = 1 / (1 + math.exp(-20))
    h_peaked = -(q * math.log(q) + (1 - q) * math.log(1 - q))
    expected = (2 * h_peaked + math.log(2)) / 3
    assert snd_score(probs, temperature=0.05) == pytest.approx(expected, rel=1e-5)
    # normalisation: scaling a row does not change the score
    assert snd_score(probs * torch.tensor([[2.0], [1.0], [3.0]])) == pytest.approx(expected)


def test_snd_prefers_dense_clusters():
    g = torch.Generator().manual_seed(0)
    clustered = torch.eye(3)[torch.arange(30) % 3] * 8 + torch.randn(30, 3, generator=g) * 0.1
    scattered = torch.randn(30, 3, generator=g) * 2
    assert snd_score(clustered.softmax(1)) > snd_score(scattered.softmax(1))


def test_snd_rewards_collapse_its_known_failure():
    # every prediction in one class: all similarities equal, uniform neighbours, log(N - 1)
    assert snd_score(COLLAPSED.softmax(1)) == pytest.approx(math.log(3), rel=1e-5)
    assert snd_score(COLLAPSED.softmax(1)) > snd_score(CONFIDENT.softmax(1))


def test_snd_subsamples_large_targets_deterministically():
    validator = SNDScore(max_samples=50)
    logits = torch.randn(200, 4, generator=torch.Generator().manual_seed(0))
    trainer = type("T", (), {"task": "classification"})()
    a = validator.tlkit_target_scores(trainer=trainer, logits=logits)
    b = validator.tlkit_target_scores(trainer=trainer, logits=logits)
    assert a == b and set(a) == {"score_snd"}


@pytest.mark.parametrize(
    ("options", "match"), [({"temperature": 0}, "temperature"), ({"max_samples": 2}, "max")]
)
def test_snd_bad_options(options, match):
    with pytest.raises(ValueError, match=match):
        SNDScore(**options)


def test_validators_add_scores_and_pick_the_checkpoint(tiny_task, fast, tmp_path):
    run = tlkit.fit(
        tiny_task,
        epochs=3,
        mode="full",
        validate=["entropy", "info_max", "snd"],
        monitor="score_snd",
        checkpoint_dir=str(tmp_path),
        **fast,
    )
    for row in run.history:
        assert -math.log(4) <= row["score_entropy"] <= 0
        assert -math.log(4) <= row["score_info_max"] <= math.log(4)
        assert 0 <= row["score_snd"] <= math.log(len(tiny_task.target) - 1)
    snd = [row["score_snd"] for row in run.history]
    assert run.best["metric"] == "score_snd" and run.best["value"] == max(snd)
    assert run.best["epoch"] == snd.index(max(snd)) + 1
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert best["best"]["epoch"] == run.best["epoch"]


def test_validators_are_listed():
    names = {s.name for s in tlkit.strategies("validator")}
    assert {"entropy", "info_max", "snd"} <= names
