"""tlkit.exercises: for every exercise, the check accepts the solution (its text run in a small
context built here: tiny seeded data, small_cnn, short runs, or fake objects where the check
reads only tables), rejects a wrong answer with a hint that does not give the answer away, and
says "not attempted yet" for the unfilled stub."""

from __future__ import annotations

import math
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import tlkit
import tlkit.exercises as ex
from tlkit.datasets import DomainPair

SMALL = dict(backbone="small_cnn", mode="full", image_size=8, batch_size=32, lr=3e-3, seed=0,
             progress=False)


class CheapTlkit:
    """``tlkit`` for running a solution in a test: ``fit`` and ``dashboard`` keep the options a
    solution passes but train at most ``epochs`` epochs of small_cnn at 8-16 pixels."""

    def __init__(self, epochs: int = 1, data: DomainPair | None = None):
        self._epochs, self._data, self.dashboards = epochs, data, []

    def __getattr__(self, name):
        return getattr(tlkit, name)

    def _cheap(self, options):
        options = dict(options)
        options["epochs"] = min(options.get("epochs", 1), self._epochs)
        if options.get("backbone") not in (None, "small_cnn") and "model" not in options:
            options["backbone"] = "small_cnn"
        if options.get("image_size", 8) > 16:
            options["image_size"] = 16
        return options

    def fit(self, data, backbone=None, **options):
        if backbone is not None:
            options["backbone"] = backbone
        return tlkit.fit(data, **{"progress": False, **self._cheap(options)})

    def dashboard(self, **options):
        options = self._cheap(options)
        if "dataset" in options and self._data is not None:
            options["data"] = {options.pop("dataset"): self._data}
        dash = tlkit.dashboard(**options)
        self.dashboards.append(dash)
        return dash

    @property
    def datasets(self):
        data = self._data

        class Datasets:
            def __getattr__(self, name):
                return getattr(tlkit.datasets, name)

            def load(self, name, **kw):
                return data if data is not None else tlkit.datasets.load(name, **kw)

        return Datasets()


# -- shared tiny data and runs ------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    full = tlkit.datasets.load("digits")
    return DomainPair(full.source.subset(range(400)), full.source_test.subset(range(150)),
                      name="tiny digits")


@pytest.fixture(scope="module")
def small_run(digits):
    return tlkit.fit(digits, epochs=1, **SMALL)


@pytest.fixture(scope="module")
def few(digits):
    return tlkit.datasets.few_labels(digits, k=5, seed=0)


def fake_dashboard(image_size=16):
    record = SimpleNamespace(error=None, run=SimpleNamespace(config=SimpleNamespace(image_size=image_size), data=None),
                             options={"image_size": image_size, "mode": "full"})
    return SimpleNamespace(runs=[record], options=lambda: {"backbone": "small_cnn", "mode": "auto",
                                                              "image_size": 0, "lr": 1e-3})


def strategy(family, hook):
    def make(fn, name="wrong"):
        return type("Wrong", (), {"name": name, "family": family, hook: lambda self, **kw: fn(**kw)})

    return make


@pytest.fixture(scope="module")
def cases(digits, small_run, few, tmp_path_factory):
    """id -> (namespace the solution runs in, check's context, a wrong answer, the key value
    a hint must not show)."""
    from tlkit_strategies.adapt.dan import mmd_loss

    from tlkit.backbones import TransferModel, make_head
    from tlkit.datasets import add_label_noise, from_folder

    base = dict(torch=torch, F=F, pd=pd, np=np, math=math, replace=replace, shutil=shutil,
                tlkit=CheapTlkit(data=digits))
    out = {}
    test = digits.source_test

    # chapter 1
    full = tlkit.datasets.load("digits")
    out["1.1"] = ({"task": full, "test": full.source_test, "result": {"accuracy": 0.9}, "tlkit": tlkit}, {"test": full.source_test},
                  small_run, None)
    cm = torch.tensor([[5, 1, 0], [3, 6, 0], [0, 2, 7]])
    out["1.2"] = ({"result": {"confusion_matrix": cm}}, {"confusion": cm}, (0, 1), "(1, 0)")
    dash = tlkit.dashboard(data={"tiny": digits}, epochs=1, image_size=16, lr=3e-3)
    out["1.3"] = ({"dash": dash}, {}, fake_dashboard(16), None)

    # chapter 2
    train = replace(few, target=None, target_test=None, source_test=None)
    runs = {"linear probe, ImageNet features": small_run}
    out["2.1"] = ({"runs": runs, "train": train, "test": test, "acc": {"linear probe, ImageNet features": 0.5},
                   "ft": 0.6}, {"runs": runs, "train": train, "test": test}, 0.01, None)
    acc2 = {"linear probe, ImageNet features": 0.0}
    out["2.2"] = ({"test": test, "acc": acc2, "ft": 0.6, "common": dict(batch_size=20, progress=False, seed=0),
                   "tlkit": CheapTlkit(data=full)}, {"acc": acc2, "test": test}, small_run, None)
    out["2.3"] = ({"train": train}, {}, fake_dashboard(), "efficientnet_lite0")

    # chapter 3
    common = dict(image_size=8, batch_size=32, lr=3e-3, progress=False, seed=0)
    target = replace(few, target=None, target_test=None)
    source_run = tlkit.fit(digits, epochs=1, **SMALL)
    two_stage = SimpleNamespace(model=small_run.model, pretrain_run=source_run,
                                last={"source_accuracy": 0.5})
    out["3.1"] = ({"source_run": source_run, "target": target, "common": common, "make_head": make_head,
                   "TransferModel": TransferModel, "copy": __import__("copy"), "zero_shot": 0.0,
                   "run": two_stage}, {"source_run": source_run, "zero_shot": 0.0}, small_run, None)
    out["3.2"] = ({"run": two_stage}, {"run": two_stage},
                  pd.Series({n: 0.5 for n, p in small_run.model.backbone.named_parameters() if p.ndim > 1}), None)
    scratch = SimpleNamespace(last={"source_accuracy": 0.5})
    out["3.3"] = ({"target": target, "scratch": scratch}, {"target": target}, fake_dashboard(), None)

    # chapter 4
    out["4.1"] = ({}, {}, torch.eye(4), "0.0667")
    pairflip = add_label_noise(digits, "pairflip", 0.4, seed=0)
    noisy = add_label_noise(digits, "symmetric", 0.4, seed=0)

    def fit4(task, loss="auto"):
        return tlkit.fit(task, loss=loss, epochs=1, **SMALL), None

    acc4 = {"GCE (q=0.7)": 1.01}
    out["4.2"] = ({"fit": fit4, "pairflip": pairflip, "acc": acc4}, {"pairflip": pairflip, "acc": acc4},
                  fit4(noisy, "gce")[0], None)
    out["4.3"] = ({}, {}, strategy("loss", "tlkit_supervised_loss")(
        lambda logits, targets: F.cross_entropy(logits, targets, reduction="none")), None)

    # chapter 5
    pool = few.target
    runs5 = {"supervised only": small_run}
    out["5.1"] = ({"runs": runs5, "pool": pool}, {"runs": runs5, "pool": pool},
                  pd.DataFrame({"admitted": [0.0] * 4, "right": [0.0] * 4}, index=[0.5, 0.8, 0.95, 0.99]), None)
    settings = dict(mode="full", image_size=8, batch_size=10, lr=3e-3, epochs=3, progress=False, seed=0)
    plain0 = tlkit.fit(replace(few, target=None, target_test=None, source_test=None), "small_cnn", **settings)
    out["5.2"] = ({"digits": digits, "settings": settings, "test": test, "tlkit": tlkit},
                  {"labelled": few.source}, (plain0, plain0), None)
    out["5.3"] = ({}, {}, strategy("pseudo_label", "tlkit_pseudo_labels")(
        lambda step: tlkit.PseudoLabels(targets=step.target_logits.argmax(1),
                                        weights=torch.ones(len(step.target_logits)))), None)

    # chapter 6
    accs = pd.Series({"source only": 0.95, "DANN": 0.7, "DAN": 0.6})
    alignment = pd.DataFrame({"domain classifier acc.": accs, "target accuracy (head)": [0.4, 0.6, 0.5]})
    rng = np.random.default_rng(0)
    feats = {"src": rng.normal(size=(60, 4)).astype("float32"),
             "tgt": (rng.normal(size=(50, 4)) + 1).astype("float32")}
    ctx6 = {"runs": {"source only": None}, "features": lambda run, d: feats[d], "src": "src", "tgt": "tgt",
            "mmd_loss": mmd_loss}
    out["6.1"] = ({"alignment": alignment}, {"alignment": alignment}, 2 * (1 - 2 * accs), None)
    out["6.2"] = (ctx6, ctx6, (0.0, 1.0), None)
    out["6.3"] = ({}, {}, strategy("adapt", "tlkit_extra_losses")(
        lambda step: {"coral": ((torch.cov(step.features.T) - torch.cov(step.target_features.T)) ** 2).sum()}),
        None)

    # chapter 6b: two small images, target logits, a validator strategy
    g6 = torch.Generator().manual_seed(0)
    xs, xt = torch.rand(3, 16, 16, generator=g6), torch.rand(3, 16, 16, generator=g6)
    logits6 = torch.randn(50, 10, generator=g6) * 3
    entropy6 = -(logits6.softmax(1) * logits6.log_softmax(1)).sum(1).mean()
    out["6b.1"] = ({"xs": xs, "xt": xt}, {"xs": xs, "xt": xt}, xs.clone(), None)
    out["6b.2"] = ({"logits": logits6}, {"logits": logits6}, float(-entropy6), None)
    out["6b.3"] = ({}, {}, strategy("validator", "tlkit_target_scores")(
        lambda trainer, logits, features: {"confidence": -float(logits.softmax(1).max(1).values.mean())}),
        None)

    # chapter 7: fake learners (the checks read their curves and previews)
    labelled = [10, 15, 20]
    margin = pd.Series([0.5, 0.6, 0.7], index=labelled)
    clean = torch.tensor([0, 1, 2, 0, 1])

    class Learner:
        def __init__(self, query):
            self.query_name, self.accepted_labels = query, 0
            self.curve = [{"labelled": n, "accuracy": a} for n, a in zip(labelled, [0.5, 0.65, 0.75])]
            self.pool = SimpleNamespace(clean_labels=clean)

        def preview_accept(self, c):
            picks = [(0, 0, 0.999), (1, 2, 0.99), (2, 2, 0.95), (3, 0, 0.92)]
            return [SimpleNamespace(index=i, label=lab) for i, lab, conf in picks if conf >= c]

    fresh = Learner("margin")
    out["7.1"] = ({"simulate": Learner, "curves": margin.to_frame("margin")}, {"margin": margin},
                  Learner("margin"), None)
    out["7.2"] = ({"simulate": lambda q: fresh}, {"learner": fresh}, {0.9: (1, 1.0), 0.98: (1, 1.0), 0.995: (1, 1.0)},
                  None)
    out["7.3"] = ({}, {}, strategy("query", "tlkit_query_scores")(lambda probs: 1 - probs.max(1).values), None)

    # chapter 8
    fast = dict(backbone="small_cnn", mode="full", epochs=1, image_size=8, lr=3e-3, progress=False, seed=0)
    out["8.1"] = ({"task": digits, "fast": fast, "tlkit": tlkit}, {}, strategy("loss", "tlkit_supervised_loss")(
        lambda logits, targets: F.cross_entropy(logits, targets, reduction="none")), None)
    out["8.2"] = ({}, {}, strategy("query", "tlkit_query_scores")(lambda probs: probs.max(1).values), None)
    out["8.3"] = ({"tlkit": tlkit}, {}, {"loss": ["gce"]}, None)

    # chapter 9
    work = tmp_path_factory.mktemp("work")
    log = "".join(f"epoch {e}/3 train_loss=0.5 source_accuracy=0.9 eta 0:0{3 - e}\n" for e in (1, 2, 3))

    def sh(*args):
        return subprocess.CompletedProcess(args, 0, stdout=log, stderr="")

    options = dict(backbone="small_cnn", mode="full", epochs=3, image_size=8, lr=3e-3, progress=False, seed=0,
                   batch_size=16)
    task9 = DomainPair(digits.source.subset(range(320)), test, name="tiny")
    whole = tlkit.fit(task9, **options)
    cut = tlkit.fit(task9, max_steps=30, checkpoint_dir=work / "cut", **options)
    out["9.1"] = ({"sh": sh, "tlkit_command": "tlkit"}, {}, log.replace("\n", "\r", 1), None)
    out["9.2"] = ({"task": task9, "options": options, "work": work, "tlkit": tlkit}, {"whole": whole}, cut, None)
    cheap9 = CheapTlkit(data=digits)
    out["9.3"] = ({"work": work, "tlkit": cheap9}, {"work": work}, whole, None)

    # chapter 10: a photo folder of two classes
    from PIL import Image

    home = tmp_path_factory.mktemp("own")
    gen = np.random.default_rng(0)
    for k, cls in enumerate(("cat", "coffee")):
        (home / "photos" / cls).mkdir(parents=True)
        for i in range(12):
            pixels = (gen.random((24, 24, 3)) * 120 + 100 * k).astype("uint8")
            Image.fromarray(pixels).save(home / "photos" / cls / f"{i:03d}.jpg")
    photos = from_folder(home / "photos")
    tr, te = photos.split(0.25, seed=0)
    task10 = DomainPair(tr, te, name="two photos")
    intact = tlkit.fit(from_folder(home / "photos"), "small_cnn", epochs=1, image_size=16, num_workers=0,
                       progress=False)
    cheap10 = CheapTlkit()
    out["10.1"] = ({"work": home, "from_folder": from_folder, "tlkit": cheap10}, {}, intact, None)
    out["10.2"] = ({"work": home, "task": task10, "tlkit": tlkit}, {}, [24, 24], None)
    out["10.3"] = ({"task": task10, "tlkit": cheap10}, {"task": task10}, fake_dashboard(), None)

    # the strategies chapter
    ell, ell_t = torch.tensor([0.5, 1.5, 1.0]), torch.tensor([2.0, 1.0, 4.0, 3.0])
    w, extra = torch.tensor([1.0, 0.0, 1.0, 0.5]), {"dann": torch.tensor(0.25)}
    ctx_s = {"ell": ell, "ell_t": ell_t, "w": w, "extra": extra}
    out["S.1"] = ({"tlkit": tlkit}, {}, dict.fromkeys(("gce", "fixmatch", "dann", "snd", "margin"), "loss"), None)
    out["S.2"] = (ctx_s, ctx_s, float(ell.mean() + (w * ell_t).sum() / w.sum() + 0.25), "3.0")
    out["S.3"] = ({}, {}, strategy("adapt", "tlkit_extra_losses")(
        lambda step: {"h": -(step.target_logits.softmax(1) * step.target_logits.log_softmax(1)).sum(1).mean()}),
        None)
    yield {**{k: ({**base, **v[0]}, *v[1:]) for k, v in out.items()}, "_base": base}
    for d in [dash, *cheap9.dashboards, *cheap10.dashboards, *base["tlkit"].dashboards]:
        d.close()


IDS = list(ex.list())


def test_every_chapter_has_three_exercises_or_more():
    chapters = {i.split(".")[0] for i in IDS}
    assert chapters == {*map(str, range(1, 11)), "6b", "S"}
    for chapter in chapters:
        assert len(ex.list(chapter)) >= 3, chapter


@pytest.mark.parametrize("exercise_id", IDS)
def test_unfilled_stub_is_not_attempted_and_never_fails(exercise_id):
    result = ex.check(exercise_id, ...)
    assert not result.passed and not result.attempted
    assert "not attempted yet" in str(result) and exercise_id in repr(result)


@pytest.mark.parametrize("exercise_id", IDS)
def test_check_accepts_the_solution_and_rejects_a_wrong_answer(exercise_id, cases, monkeypatch):
    namespace, context, wrong, key = cases[exercise_id]
    monkeypatch.setenv("TLKIT_CACHE", str(Path(namespace.get("work", "/nonexistent")) / "cache"))
    namespace = dict(namespace)
    exec(compile(ex.solution(exercise_id), f"<solution {exercise_id}>", "exec"), namespace)
    for name in ("my_mae", "my_threshold", "my_coral", "my_confidence", "my_label_smoothing"):
        if name in {s.name for s in tlkit.strategies()}:
            tlkit.unregister(name)
    right = ex.check(exercise_id, namespace["answer"], **context)
    assert right.passed, f"{exercise_id}: the solution fails its own check: {right.hint}"
    assert str(right) == f"✓ {exercise_id} correct"

    rejected = ex.check(exercise_id, wrong, **context)
    assert not rejected.passed and rejected.attempted
    assert rejected.hint and not rejected.hint.startswith("could not check"), rejected.hint
    assert str(rejected) == f"✗ {exercise_id}: {rejected.hint}"
    for shown in key_values(namespace["answer"]) + ([key] if key else []):
        assert shown not in rejected.hint, f"{exercise_id}: the hint gives away {shown!r}"
    for line in ex.solution(exercise_id).splitlines():
        assert len(line.strip()) < 25 or line.strip() not in rejected.hint


def key_values(answer) -> list[str]:
    """How a numeric answer would be printed (a hint must not show it)."""
    if isinstance(answer, pd.Series):
        values = list(answer.to_numpy().ravel())
    elif isinstance(answer, torch.Tensor):
        values = answer.flatten().tolist()
    elif isinstance(answer, tuple | list) and all(isinstance(v, int | float) for v in answer):
        values = list(answer)
    elif isinstance(answer, int | float) and not isinstance(answer, bool):
        values = [answer]
    else:
        return []
    shown = []
    for v in values:
        v = float(v)
        if v not in (0.0, 1.0) and math.isfinite(v):
            shown += [f"{v:.3f}", f"{v:.1%}"]
    return shown


def test_missing_context_and_unknown_ids_say_what_to_pass():
    with pytest.raises(TypeError, match=r'check\("6.1", answer, alignment=alignment\)'.replace('"', "'")):
        ex.check("6.1", pd.Series(dtype=float))
    with pytest.raises(KeyError, match="known ids"):
        ex.check("99.1", 1)


def test_solution_is_source_text_shown_as_code():
    text = ex.solution("6.1")
    assert isinstance(text, str) and "answer =" in text
    assert text._repr_markdown_().startswith("**Solution 6.1**\n\n```python\n")
    compile(text, "<solution>", "exec")


def test_fda_check_names_each_near_miss():
    """6b.1's hints tell apart the usual slips: the whole amplitude swapped, the target's
    phase kept, a batch instead of one image."""
    from tlkit_strategies.adapt.fda import fourier_transfer

    g = torch.Generator().manual_seed(1)
    xs, xt = torch.rand(3, 16, 16, generator=g), torch.rand(3, 16, 16, generator=g)
    fs, ft = torch.fft.fft2(xs), torch.fft.fft2(xt)
    swapped_all = torch.fft.ifft2(torch.polar(ft.abs(), fs.angle())).real.clamp(0, 1)
    target_phase = torch.fft.ifft2(torch.polar(fs.abs(), ft.angle())).real.clamp(0, 1)
    assert ex.check("6b.1", fourier_transfer(xs[None], xt[None], 0.1)[0], xs=xs, xt=xt).passed
    assert "whole amplitude" in ex.check("6b.1", swapped_all, xs=xs, xt=xt).hint
    assert "phase" in ex.check("6b.1", target_phase, xs=xs, xt=xt).hint
    assert "shape" in ex.check("6b.1", xs[None], xs=xs, xt=xt).hint


def test_info_max_check_tells_entropy_and_sign_apart():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(30, 4, generator=g) * 2
    p = logits.softmax(1)
    h_mean = float(-(p.mean(0) * p.mean(0).log()).sum())
    h_each = float(-(p * p.log()).sum(1).mean())
    assert ex.check("6b.2", h_mean - h_each, logits=logits).passed
    assert "entropy score" in ex.check("6b.2", -h_each, logits=logits).hint
    assert "sign" in ex.check("6b.2", h_each - h_mean, logits=logits).hint
    assert "nats" in ex.check("6b.2", (h_mean - h_each) / math.log(2), logits=logits).hint


def test_validator_check_runs_the_hook_as_the_trainer_calls_it():
    """A validator may name any of trainer, logits and features, or take **kwargs; the score
    it returns is compared, whatever the score's name prefix."""

    class OnlyLogits:
        name, family = "only_logits", "validator"

        def tlkit_target_scores(self, logits):
            return {"score_confidence": float(logits.softmax(1).max(1).values.mean())}

    class Unknown(OnlyLogits):
        def tlkit_target_scores(self, trainer, outputs):
            return {"confidence": 1.0}

    assert ex.check("6b.3", OnlyLogits).passed
    assert "no outputs" in ex.check("6b.3", Unknown).hint


def test_the_fda_checks_reference_is_the_fda_strategys_transform():
    from tlkit_strategies.adapt.fda import fourier_transfer

    from tlkit.exercises.ch06b import BETA, _fourier_transfer

    g = torch.Generator().manual_seed(0)
    src, tgt = torch.rand(3, 32, 32, generator=g), torch.rand(3, 32, 32, generator=g)
    expected = fourier_transfer(src[None], tgt[None], BETA)[0]
    assert torch.allclose(_fourier_transfer(src, tgt, BETA), expected, atol=1e-6)
