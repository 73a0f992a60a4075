"""Backbone ranking: LogME against a brute-force evidence maximisation, LEEP by hand, and
rank_backbones on a small bundled task (checkpoints, ImageNet head, skips with reasons)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from torch.distributions import MultivariateNormal

import tlkit
from tlkit.backbones import BackboneError
from tlkit.datasets import DataError, Domain, DomainPair, few_labels
from tlkit.ranking import BackboneRanking, leep, log_evidence, logme, rank_backbones


def brute_log_evidence(f: torch.Tensor, y: torch.Tensor, alpha: float, beta: float) -> float:
    """log N(y; 0, I/beta + F F^T / alpha): the marginal likelihood, without any SVD."""
    n = f.shape[0]
    cov = torch.eye(n, dtype=torch.float64) / beta + f @ f.T / alpha
    return float(MultivariateNormal(torch.zeros(n, dtype=torch.float64), cov).log_prob(y))


@pytest.mark.parametrize("shape", [(9, 3), (4, 6)], ids=["n>D", "n<D"])
def test_log_evidence_matches_the_gaussian_marginal(shape):
    g = torch.Generator().manual_seed(0)
    f = torch.randn(*shape, generator=g, dtype=torch.float64)
    y = (torch.rand(shape[0], generator=g) > 0.5).double()
    for alpha, beta in [(0.7, 2.3), (5.0, 0.1), (1e-2, 30.0)]:
        assert log_evidence(f, y, alpha, beta) == pytest.approx(
            brute_log_evidence(f, y, alpha, beta), rel=1e-9, abs=1e-9
        )


def test_logme_is_the_maximised_evidence():
    """LogME's fixed point reaches the maximum a general-purpose optimiser finds on the brute
    force evidence, per class, averaged and divided by n."""
    g = torch.Generator().manual_seed(1)
    n, d = 24, 4
    labels = torch.arange(n) % 3
    f = (
        torch.randn(n, d, generator=g, dtype=torch.float64)
        + torch.nn.functional.one_hot(labels, d).double()
    )
    best = []
    for c in range(3):
        y = (labels == c).double()

        def negative(log_ab, y=y):
            return -brute_log_evidence(f, y, math.exp(log_ab[0]), math.exp(log_ab[1]))

        runs = [
            minimize(
                negative,
                x0,
                method="Nelder-Mead",
                options={"xatol": 1e-9, "fatol": 1e-12, "maxiter": 4000},
            )
            for x0 in ([0.0, 0.0], [3.0, -2.0], [-3.0, 3.0])
        ]
        best.append(-min(r.fun for r in runs) / n)
    assert logme(f, labels) == pytest.approx(sum(best) / 3, abs=1e-6)


def test_logme_prefers_features_that_separate_the_classes():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(200) % 4
    noise = torch.randn(200, 16, generator=g)
    informative = noise.clone()
    informative[:, :4] += 3 * torch.nn.functional.one_hot(labels, 4)
    assert logme(informative, labels) > logme(noise, labels) + 0.1


def test_leep_by_hand():
    theta = torch.tensor([[0.8, 0.2], [0.6, 0.4], [0.3, 0.7], [0.1, 0.9]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1])
    # joint P(y, z) = [[.35, .15], [.10, .40]]; P(z) = [.45, .55]
    # P(y | z): z=0 -> (7/9, 2/9), z=1 -> (3/11, 8/11)
    eep = [
        0.8 * 7 / 9 + 0.2 * 3 / 11,
        0.6 * 7 / 9 + 0.4 * 3 / 11,
        0.3 * 2 / 9 + 0.7 * 8 / 11,
        0.1 * 2 / 9 + 0.9 * 8 / 11,
    ]
    assert leep(theta, y) == pytest.approx(np.mean(np.log(eep)), rel=1e-12)
    assert leep(torch.eye(3)[[0, 1, 2, 1]], torch.tensor([2, 0, 1, 0])) == pytest.approx(0.0)
    uniform = torch.full((6, 5), 0.2)
    assert leep(uniform, torch.tensor([0, 1, 2, 0, 1, 2])) == pytest.approx(math.log(1 / 3))
    with pytest.raises(DataError, match="softmax"):
        leep(torch.log(theta), y)


@pytest.fixture(scope="module")
def small_task():
    """digits at 16 px, 20 labels per class: 200 images to score."""
    return few_labels(tlkit.datasets.load("digits", image_size=16), 20, seed=0)


@pytest.fixture(scope="module")
def synth_checkpoint(tmp_path_factory):
    """A small_cnn trained 3 epochs on 800 synth-digits at 16 px (~10 s), saved with run.save."""
    source = tlkit.datasets.load("synth-digits", image_size=16).source
    task = DomainPair(source=source.subset(torch.arange(0, len(source), 3)), name="synth")
    run = tlkit.fit(task, "small_cnn", epochs=3, seed=0, batch_size=32, lr=1e-2, progress=False)
    return run.save(tmp_path_factory.mktemp("ckpt") / "synth.pt")


def test_rank_backbones_on_a_bundled_task(small_task, synth_checkpoint):
    ranking = rank_backbones(
        small_task,
        {
            "random small_cnn": "small_cnn",
            "synth-digits small_cnn": synth_checkpoint,
            "ImageNet": "efficientnet_lite0",
            "missing": "no/such/file.pt",
        },
        image_size=16,
        progress=False,
    )
    assert isinstance(ranking, BackboneRanking) and len(ranking) == 4
    assert ranking.samples == 200 and ranking.num_classes == 10
    logmes = [r["logme"] for r in ranking]
    assert logmes[:3] == sorted(logmes[:3], reverse=True) and math.isnan(logmes[3])
    assert ranking[3]["candidate"] == "missing" and "does not exist" in ranking[3]["note"]
    # digits-like source features beat random ones (measured: 0.38 vs 0.25; ImageNet at 16 px -0.17)
    assert ranking["synth-digits small_cnn"]["logme"] > ranking["random small_cnn"]["logme"]
    assert ranking["synth-digits small_cnn"]["source_classes"] == 10
    assert ranking["ImageNet"]["source_classes"] == 1000
    assert ranking["ImageNet"]["features"] == 1280 and ranking["ImageNet"]["input_size"] == 16
    for name in ("synth-digits small_cnn", "ImageNet"):
        assert -math.log(1000) <= ranking[name]["leep"] < 0
    assert math.isnan(ranking["random small_cnn"]["leep"])
    again = rank_backbones(small_task, ["small_cnn"], image_size=16, progress=False)
    assert again["small_cnn"]["logme"] == ranking["random small_cnn"]["logme"]  # seeded init
    assert "random init" in ranking["random small_cnn"]["note"]
    text = repr(ranking)
    assert text.splitlines()[0].startswith("BackboneRanking on 'digits'")
    assert text.splitlines()[2].startswith(ranking.best)
    assert ranking._repr_html_().count("<tr>") == 5
    assert all(r["seconds"] >= 0 for r in ranking) and ranking.seconds > 0
    by_leep = rank_backbones(
        small_task, [synth_checkpoint, "small_cnn"], by="leep", image_size=16, progress=False
    )
    assert by_leep.best == str(synth_checkpoint) and math.isnan(by_leep.scores()["small_cnn"])
    # a Run object scores like its checkpoint file, and is not changed (resized, moved)
    run = tlkit.load(synth_checkpoint)
    size = run.model.backbone.input_size
    from_run = rank_backbones(small_task, {"run": run}, image_size=12, progress=False)
    assert run.model.backbone.input_size == size and from_run["run"]["input_size"] == 12
    same = rank_backbones(small_task, {"run": run}, image_size=16, progress=False)
    assert same["run"]["logme"] == pytest.approx(ranking["synth-digits small_cnn"]["logme"])
    pd = pytest.importorskip("pandas")
    frame = ranking.to_dataframe()
    assert isinstance(frame, pd.DataFrame) and list(frame["candidate"]) == [
        r["candidate"] for r in ranking
    ]


def test_imagenet_head_is_the_real_classifier():
    """LEEP's source classifier for efficientnet_lite0, applied to the feature body, gives the
    full ImageNet model's logits (so the 1000 source classes are the real ones)."""
    from tlkit.backbones import create_backbone, efficientnet_lite0_imagenet
    from tlkit.ranking import _imagenet_head

    body = create_backbone("efficientnet_lite0").eval()
    head, why = _imagenet_head("efficientnet_lite0", 1280)
    assert why == "" and head.out_features == 1000
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(head(body(x)), efficientnet_lite0_imagenet()(x))


def test_torchvision_candidate_with_cached_weights(small_task, tmp_path, monkeypatch):
    """A torchvision name works offline when its weights are in the hub cache; LEEP then uses
    its own 1000-way classifier. (Random weights stand in for the real file here.)"""
    from torchvision.models import get_model

    from tlkit.backbones.torchvision_models import cached_weights_path, default_weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path = cached_weights_path(default_weights("resnet18"))
    torch.manual_seed(0)
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(get_model("resnet18", weights=None).state_dict(), path)
    ranking = rank_backbones(small_task, ["resnet18"], image_size=16, progress=False)
    row = ranking["resnet18"]
    assert row["features"] == 512 and row["source_classes"] == 1000 and row["note"] == ""
    assert math.isfinite(row["logme"]) and math.isfinite(row["leep"])


def test_ranking_errors_name_the_fix(small_task):
    with pytest.raises(ValueError, match="by must be"):
        rank_backbones(small_task, ["small_cnn"], by="accuracy")
    with pytest.raises(ValueError, match="unique"):
        rank_backbones(small_task, ["small_cnn", "small_cnn"])
    with pytest.raises(BackboneError, match="unknown backbone"):
        rank_backbones(small_task, ["no_such_net"], errors="raise", progress=False)
    skipped = rank_backbones(small_task, ["no_such_net"], progress=False)
    assert skipped[0]["note"].startswith("skipped: BackboneError")
    images = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    regression = Domain(images=images, labels=torch.rand(4), task="regression", name="r")
    with pytest.raises(DataError, match="regression"):
        rank_backbones(regression, ["small_cnn"])
    one_class = Domain(images=images, labels=torch.zeros(4, dtype=torch.long), name="one")
    with pytest.raises(DataError, match="two classes"):
        rank_backbones(one_class, ["small_cnn"])
