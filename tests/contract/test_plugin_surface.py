"""The public plugin surface: what a third-party strategy can rely on and do as a built-in does.

* previews: a strategy that transforms source images shows it through ``preview()``, which
  ``tlkit.plots.source_to_target_grid`` and the dashboard call -- for a strategy registered in a
  cell as for FDA and PixelDA;
* the shared helpers of :mod:`tlkit.strategy_tools` (prediction entropy, the per-domain BatchNorm
  swap, EMA), which the built-ins use too;
* the typed trainer (:class:`tlkit.hookspecs.TrainerView`) and its documentation;
* transforms of the source batch compose in the order the run selected them;
* contract messages for bad results of the transform and loss hooks.
"""

from __future__ import annotations

import ast
import inspect
import math
import typing
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import pytest
import torch
from torch import nn

import tlkit
import tlkit.plots
from tlkit import hookspecs, strategy_tools
from tlkit.hookspecs import SourcePreview, TrainerView
from tlkit.strategy_tools import DomainSwap, prediction_entropy

PLUGINS = Path(tlkit.__file__).parent.parent / "plugins"


# -- strategies a notebook might register ---------------------------------------------------------
class Invert:
    """Trains on inverted source images and previews the same transform."""

    name, family = "test_invert", "adapt"

    @tlkit.hookimpl
    def tlkit_transform_source(self, step):
        return 1 - step.x

    def preview(self, source, *, target=None, generator=None):
        return 1 - source


class Halve:
    """Halves the source images; records what it saw and gave (no preview)."""

    name, family = "test_halve", "adapt"

    def __init__(self):
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    @tlkit.hookimpl
    def tlkit_transform_source(self, step):
        out = step.x * 0.5
        self.seen.append((step.x.detach().clone(), out.detach().clone()))
        return out


class Shift(Halve):
    """Adds 0.25 to the source images; records what it saw and gave."""

    name = "test_shift"

    @tlkit.hookimpl
    def tlkit_transform_source(self, step):
        out = step.x + 0.25
        self.seen.append((step.x.detach().clone(), out.detach().clone()))
        return out


def _opts(fast, **kw):
    return {**fast, "epochs": 1, "max_steps": 2, "mode": "full", **kw}


# -- 1. previews ----------------------------------------------------------------------------------
def test_a_strategy_registered_in_a_cell_previews_through_the_public_grid(
    tiny_task, fast, temp_strategy
):
    temp_strategy(Invert)
    assert isinstance(Invert(), SourcePreview)
    trainer = tlkit.Trainer(tiny_task, adapt="test_invert", **_opts(fast))
    trainer.fit()
    fig = tlkit.plots.source_to_target_grid(trainer, tiny_task.source, tiny_task.target, n=3)
    assert [fig.axes[i].get_ylabel() for i in (0, 3, 6)] == [
        "source",
        "target style",
        "real target",
    ]
    source = torch.as_tensor(fig.axes[0].images[0].get_array())
    shown = torch.as_tensor(fig.axes[3].images[0].get_array())
    assert torch.allclose(shown, 1 - source)  # the strategy's own transform, called by name
    fig2 = tlkit.plots.source_to_target_grid(Invert(), tiny_task.source, n=3)
    assert torch.equal(torch.as_tensor(fig2.axes[3].images[0].get_array()), shown)
    plt.close("all")


def test_a_trainer_with_previews_composes_them_in_the_run_order(tiny_task, fast, temp_strategy):
    temp_strategy(Invert)
    from tlkit_strategies.adapt.fda import FDA

    trainer = tlkit.Trainer(tiny_task, adapt=[("fda", {"beta": 0.1}), "test_invert"], **fast)
    grid = tlkit.plots.source_to_target_grid
    both = grid(trainer, tiny_task.source, tiny_task.target, n=2)
    fda = grid(FDA(beta=0.1), tiny_task.source, tiny_task.target, n=2)  # same seed, same picks
    for col in (2, 3):
        shown = torch.as_tensor(both.axes[col].images[0].get_array())
        fda_only = torch.as_tensor(fda.axes[col].images[0].get_array())
        source = torch.as_tensor(both.axes[col - 2].images[0].get_array())
        assert not torch.allclose(fda_only, source, atol=1e-3)  # FDA changed the image
        assert torch.allclose(shown, 1 - fda_only, atol=1e-6)  # FDA first, then the inversion
    plt.close("all")


def test_the_grid_says_when_a_run_has_no_preview(tiny_task, fast, temp_strategy):
    temp_strategy(Halve)
    trainer = tlkit.Trainer(tiny_task, adapt="test_halve", **fast)
    assert not isinstance(trainer.strategies["test_halve"], SourcePreview)
    with pytest.raises(ValueError, match=r"'test_halve'\] offer no preview.*SourcePreview"):
        tlkit.plots.source_to_target_grid(trainer, tiny_task.source)
    with pytest.raises(ValueError, match="a Run keeps no strategies"):
        tlkit.plots.source_to_target_grid(object(), tiny_task.source)


def test_the_dashboard_draws_a_third_party_preview(tiny_task, fast, temp_strategy, tmp_path):
    from tlkit.notebook.dashboard import Dashboard

    temp_strategy(Invert)
    temp_strategy(Halve)
    dash = Dashboard(data={"tiny": tiny_task}, checkpoint_root=tmp_path)
    plain = tlkit.Trainer(tiny_task, adapt="test_halve", **_opts(fast))
    dash._draw_translations(plain)  # transforms without a preview: no grid, no error
    assert not dash.translations.png
    trainer = tlkit.Trainer(tiny_task, adapt="test_invert", **_opts(fast))
    trainer.fit()
    dash._draw_translations(trainer)
    assert dash.translations.png.startswith(b"\x89PNG")


def test_the_notebook_layer_uses_only_public_names():
    source = (Path(tlkit.__file__).parent / "notebook" / "dashboard_figures.py").read_text()
    assert "tlkit_strategies" not in source and "except Exception" not in source
    assert "hasattr(" not in source


# -- 2. shared helpers ----------------------------------------------------------------------------
def test_prediction_entropy_is_shannon_entropy_of_the_predictions():
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [50.0, 0.0, 0.0, 0.0], [1.0, 2.0, 3.0, 4.0]])
    probs = logits.softmax(1)
    by_hand = -(probs * probs.log()).sum(1)
    h = prediction_entropy(logits)
    assert h.shape == (3,) and h[0] == pytest.approx(math.log(4))
    assert h[1] == pytest.approx(0.0, abs=1e-6)
    assert torch.allclose(h, by_hand, atol=1e-6)
    assert torch.allclose(prediction_entropy(probs=probs), by_hand, atol=1e-6)
    assert torch.allclose(prediction_entropy(logits, probs=probs), by_hand, atol=1e-6)
    assert torch.equal(prediction_entropy(log_probs=logits.log_softmax(1)), h)
    with_eps = prediction_entropy(probs=probs, eps=1e-5)
    assert torch.allclose(with_eps, -(probs * (probs + 1e-5).log()).sum(1))
    x = logits.clone().requires_grad_(True)
    prediction_entropy(x).sum().backward()  # differentiable, for entropy minimisation
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="logits=, log_probs= or probs="):
        prediction_entropy()


def test_the_built_ins_compute_entropy_with_the_shared_helper_bit_for_bit():
    from tlkit_strategies.adapt.entropy_min import entropy_loss
    from tlkit_strategies.adapt.shot import information_maximization
    from tlkit_strategies.validators.entropy import entropy_score
    from tlkit_strategies.validators.info_max import info_max_score

    logits = torch.randn(32, 10, generator=torch.Generator().manual_seed(0)) * 3
    assert torch.equal(entropy_loss(logits), prediction_entropy(logits).mean())
    assert entropy_score(logits) == float(-prediction_entropy(logits).mean())
    p = logits.softmax(1)
    assert info_max_score(logits) == float(
        prediction_entropy(probs=p.mean(0)) - prediction_entropy(probs=p).mean()
    )
    # SHOT's terms as its authors write them
    _, ent, div = information_maximization(logits)
    assert torch.equal(ent, -(p * logits.log_softmax(1)).sum(1).mean())
    assert torch.equal(div, -(p.mean(0) * (p.mean(0) + 1e-5).log()).sum())
    # nobody writes the formula again
    for f in PLUGINS.rglob("*.py"):
        code = f.read_text()
        assert "clamp_min(1e-12).log()" not in code, f
        assert ".exp() * log_p)" not in code, f


def test_a_domain_swap_trains_a_per_domain_copy_of_batchnorm():
    bn = nn.BatchNorm1d(3)
    held = {k: getattr(bn, k).clone() for k in strategy_tools.BATCHNORM_STATISTICS}
    swap = DomainSwap(bn, lambda: held)
    x = torch.randn(8, 3) + 5
    with tlkit.domain_context("source"):
        bn(x)
    assert int(held["num_batches_tracked"]) == 1 and held["running_mean"].mean() > 0.3
    assert int(bn.num_batches_tracked) == 0 and torch.equal(bn.running_mean, torch.zeros(3))
    bn(x)  # a target (or unnamed) pass updates the layer's own
    assert int(bn.num_batches_tracked) == 1 and int(held["num_batches_tracked"]) == 1
    swap.remove()
    with tlkit.domain_context("source"):
        bn(x)
    assert int(bn.num_batches_tracked) == 2  # unhooked


def test_the_engine_and_dsbn_share_one_batchnorm_swap(tiny_task, fast):
    separate = tlkit.Trainer(tiny_task, adapt="dann", domain_bn="separate", **_opts(fast))
    separate.fit()
    dsbn = tlkit.Trainer(tiny_task, adapt="dsbn", domain_bn="separate", **_opts(fast))
    dsbn.fit()
    assert separate.domain_stats.swaps and all(
        isinstance(s, DomainSwap) for s in separate.domain_stats.swaps
    )
    strategy = dsbn.strategies["dsbn"]
    assert strategy._swaps == []  # removed at the end of the run
    for f in (PLUGINS / "tlkit_strategies", Path(tlkit.__file__).parent / "engine"):
        for path in f.rglob("*.py"):
            assert "_BUFFERS =" not in path.read_text(), path


def test_the_helpers_are_public():
    for name in ("prediction_entropy", "batchnorm_layers", "DomainSwap", "EMA"):
        assert name in strategy_tools.__all__
    from tlkit_strategies.pseudo_label import mean_teacher

    assert mean_teacher.EMA is strategy_tools.EMA


# -- 3. the typed trainer -------------------------------------------------------------------------
def _view_members() -> set[str]:
    return {
        n
        for n in (*TrainerView.__annotations__, *vars(TrainerView))
        if not n.startswith("_")
    }


def test_every_hook_types_its_trainer_with_the_view():
    typed = 0
    for name in hookspecs.HOOK_NAMES:
        ann = inspect.signature(getattr(hookspecs, name)).parameters.get("trainer")
        if ann is not None:
            assert ann.annotation == "TrainerView", name
            typed += 1
    assert typed >= 7


def test_a_steps_trainer_is_typed_with_the_view_too():
    import tlkit.trainer_view

    assert typing.get_type_hints(tlkit.Step)["trainer"] is tlkit.trainer_view.TrainerView
    assert TrainerView is tlkit.trainer_view.TrainerView  # hookspecs' name for the same class


def test_the_view_lists_what_plugins_use_and_the_trainer_has_it(tiny_task, fast):
    members = _view_members()
    assert {"target_batches", "predict_outputs", "strategies", "request_stop"} <= members
    used = set()
    for f in PLUGINS.rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Attribute):
                owner = node.value
                if (isinstance(owner, ast.Name) and owner.id == "trainer") or (
                    isinstance(owner, ast.Attribute) and owner.attr == "trainer"
                ):
                    used.add(node.attr)
    assert used and used <= members, f"plugins use {sorted(used - members)} beyond TrainerView"
    trainer = tlkit.Trainer(tiny_task, adapt="adabn", **_opts(fast))
    trainer.fit()
    missing = [m for m in members if not hasattr(trainer, m)]
    assert not missing, missing


def test_validators_scores_and_step_stats_are_documented():
    doc = hookspecs.__doc__
    assert 'scores = ("score_' in doc and "monitor=" in doc
    step_doc = tlkit.Step.__doc__
    assert "``stats``" in step_doc and "``stat_weights``" in step_doc
    assert "TrainerView" in doc


# -- 5. composition of source transforms ----------------------------------------------------------
@pytest.mark.parametrize("order", [["test_halve", "test_shift"], ["test_shift", "test_halve"]])
def test_transforms_compose_in_the_selected_order(tiny_task, fast, temp_strategy, order):
    temp_strategy(Halve)
    temp_strategy(Shift)
    seen_by_engine = []

    class Watch:
        @tlkit.hookimpl
        def tlkit_on_step_end(self, step):
            seen_by_engine.append(step.x.detach().clone())

    trainer = tlkit.Trainer(tiny_task, adapt=order, observers=[Watch()], **_opts(fast))
    trainer.fit()
    first, second = (trainer.strategies[n] for n in order)
    assert len(first.seen) == len(second.seen) == 2
    for (x0, out1), (in2, out2), final in zip(first.seen, second.seen, seen_by_engine):
        assert torch.equal(in2, out1)  # the second transforms what the first returned
        assert torch.equal(final, out2)  # and the network trains on the last one's images
        want = x0 * 0.5 + 0.25 if order[0] == "test_halve" else (x0 + 0.25) * 0.5
        assert torch.allclose(final, want)


def test_pixelda_composes_with_other_transforms(tiny_task, fast, temp_strategy, monkeypatch):
    from tlkit_strategies.adapt import fda as fda_module
    from tlkit_strategies.adapt.pixelda import PixelDA

    temp_strategy(Shift)
    small = ("pixelda", {"width": 4, "blocks": 0})
    run = tlkit.fit(tiny_task, adapt=[small, "test_shift"], **{**_opts(fast), "max_steps": None})
    assert "pixelda_generator" in run.history[-1]

    swapped, generated_from = [], []
    transfer, generate = fda_module.fourier_transfer, PixelDA.generate

    def spy_transfer(*a, **kw):
        out = transfer(*a, **kw)
        swapped.append(out.detach().clone())
        return out

    def spy_generate(self, x, generator=None):
        generated_from.append(x.detach().clone())
        return generate(self, x, generator)

    monkeypatch.setattr(fda_module, "fourier_transfer", spy_transfer)
    monkeypatch.setattr(PixelDA, "generate", spy_generate)
    tlkit.fit(tiny_task, adapt=["fda", small], **_opts(fast))
    assert len(swapped) == len(generated_from) == 2  # neither is dropped
    assert all(torch.equal(a, b) for a, b in zip(swapped, generated_from))  # FDA, then PixelDA


def test_the_transform_hook_documents_composition():
    doc = inspect.getdoc(hookspecs.tlkit_transform_source)
    assert "Composition" in doc and "previous one returned" in doc
    assert not hookspecs.tlkit_transform_source.tlkit_spec.get("firstresult")


# -- 6. contract messages -------------------------------------------------------------------------
def _transform_returning(make):
    class Bad:
        name, family = "test_bad_images", "adapt"

        @tlkit.hookimpl
        def tlkit_transform_source(self, step):
            return make(step.x)

    return Bad


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda x: (x * 255).to(torch.uint8), r"dtype torch\.uint8.*x\.float\(\) / 255"),
        (lambda x: x * 255, r"range from .* to 2\d\d.*divide 0-255 pixel values by 255"),
        (lambda x: (x - 0.5) / 0.05, r"range from -\d+.*undo any normalisation"),
        (lambda x: x.mean(), r"a single number \(a 0-d tensor\)"),
        (lambda x: x[:, :, :4], r"got shape \(16, 1, 4, 16\)"),
        (lambda x: x.tolist(), r"got list"),
    ],
    ids=["uint8", "0-255", "normalised", "scalar", "shape", "list"],
)
def test_bad_transformed_images_get_a_message_that_says_what_is_wrong(
    tiny_task, fast, temp_strategy, make, message
):
    temp_strategy(_transform_returning(make))
    with pytest.raises(
        tlkit.PluginError,
        match=r"strategy 'test_bad_images' returned a bad result from tlkit_transform_source: "
        + ".*"
        + message,
    ):
        tlkit.fit(tiny_task, adapt="test_bad_images", **_opts(fast))


class Critic(nn.Module):
    own_optimizer = True

    def __init__(self, d):
        super().__init__()
        self.fc = nn.Linear(d, 1)


def test_a_detached_adversary_term_names_the_strategy_and_the_hook(
    tiny_task, fast, temp_strategy
):
    class DetachedCritic:
        name, family, needs_target = "test_detached_critic", "adapt", True

        @tlkit.hookimpl
        def tlkit_setup(self, trainer):
            self.critic = Critic(trainer.model.backbone.num_features)
            return self.critic

        @tlkit.hookimpl
        def tlkit_adversary_losses(self, step):
            return {"critic": self.critic.fc(step.target_features.float()).mean().detach()}

    temp_strategy(DetachedCritic)
    with pytest.raises(
        tlkit.PluginError,
        match=r"strategy 'test_detached_critic' returned a bad result from "
        r"tlkit_adversary_losses: term 'critic' carries no gradient",
    ):
        tlkit.fit(tiny_task, adapt="test_detached_critic", **_opts(fast))


def test_a_detached_extra_term_is_refused_like_a_number(tiny_task, fast, temp_strategy):
    class Detached:
        name, family, needs_target = "test_detached_term", "adapt", True

        @tlkit.hookimpl
        def tlkit_extra_losses(self, step):
            return {"align": step.target_features.float().pow(2).mean().detach()}

    temp_strategy(Detached)
    with pytest.raises(
        tlkit.PluginError,
        match=r"'test_detached_term' returned a bad result from tlkit_extra_losses: "
        r"term 'align' carries no gradient",
    ):
        tlkit.fit(tiny_task, adapt="test_detached_term", **_opts(fast))


def test_a_term_on_frozen_features_is_still_accepted(tiny_task, fast):
    """With the backbone frozen, feature alignment has nothing to train yet: not a bug."""
    opts = {**_opts(fast), "mode": "feature_extraction", "max_steps": None}
    run = tlkit.fit(tiny_task, adapt="coral", **opts)
    assert "coral" in run.history[-1]


def test_the_public_names_are_importable_from_tlkit():
    assert tlkit.strategy_tools is strategy_tools
    assert callable(tlkit.plots.source_to_target_grid)
    assert matplotlib.get_backend()  # plots imported pyplot without a display
