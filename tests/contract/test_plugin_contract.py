"""The plugin contract catches mistakes: results are checked, registration checks signatures,
names are owned, broken plugins are reported, and a step exposes what strategies need (and never
the target's true labels)."""

from __future__ import annotations

import importlib.metadata
import warnings

import pytest
import torch
import torch.nn.functional as F
from conftest import pattern_domain

import tlkit
from tlkit import registry
from tlkit.cli import main
from tlkit.datasets import DomainPair, few_labels
from tlkit.errors import PluginError


def loss_strategy(name, fn, task="classification"):
    return type(
        "Loss",
        (),
        {
            "name": name,
            "family": "loss",
            "requires_task": task,
            "tlkit_supervised_loss": tlkit.hookimpl(
                lambda self, logits, targets: fn(logits, targets)
            ),
        },
    )


def ce(logits, targets):
    return F.cross_entropy(logits, targets, reduction="none")


# -- every hook result is checked -------------------------------------------------------------
@pytest.mark.parametrize(
    "bad, message",
    [
        (
            lambda lg, t: ce(lg, t).mean(),
            r"per-sample losses must have shape \(16,\), got \(\): a single",
        ),
        (lambda lg, t: ce(lg, t)[:, None], r"must have shape \(16,\), got \(16, 1\)"),
        (lambda lg, t: F.cross_entropy(lg, t, reduction="none")[:, None] * lg, r"got \(16, 4\)"),
        (lambda lg, t: [1.0] * len(t), r"must return a float tensor of shape \(16,\), got list"),
    ],
)
def test_a_wrong_shape_loss_names_strategy_and_hook(tiny_task, fast, temp_strategy, bad, message):
    temp_strategy(loss_strategy("test_bad_loss", bad))
    with pytest.raises(
        PluginError,
        match=f"strategy 'test_bad_loss' returned a bad result from tlkit_supervised_loss: .*{message}",
    ):
        tlkit.fit(tiny_task, epochs=1, loss="test_bad_loss", **fast)


@pytest.mark.parametrize(
    "bad, message",
    [
        (lambda s: {"term": s.logits.pow(2).mean(1)}, r"term 'term' must be a float scalar tensor"),
        (lambda s: {"term": 0.5}, r"term 'term' is a float; return a tensor"),
        (lambda s: s.logits.pow(2).mean(), r"it must return a dict \{name: scalar tensor\}"),
        (lambda s: {"supervised": s.logits.mean()}, r"'supervised' is already used"),
    ],
)
def test_bad_extra_losses_name_strategy_and_hook(tiny_task, fast, temp_strategy, bad, message):
    temp_strategy(
        type(
            "Extra",
            (),
            {
                "name": "test_bad_extra",
                "family": "regularizer",
                "tlkit_extra_losses": tlkit.hookimpl(lambda self, step: bad(step)),
            },
        )
    )
    with pytest.raises(
        PluginError,
        match=f"'test_bad_extra' returned a bad result from tlkit_extra_losses: .*{message}",
    ):
        tlkit.fit(tiny_task, epochs=1, regularize="test_bad_extra", **fast)


def test_step_log_takes_numbers_and_refuses_vectors(tiny_task, fast, temp_strategy):
    class Logs:
        name, family = "test_logs", "regularizer"

        @tlkit.hookimpl
        def tlkit_extra_losses(self, step):
            step.log("a_float", 0.5)
            step.log("an_int", 2)
            step.log("a_tensor", step.logits.detach().mean())
            if step.index == 3:
                step.log("a_vector", step.logits.detach())

    temp_strategy(Logs)
    with pytest.raises(
        PluginError,
        match=r"'test_logs' failed in hook tlkit_extra_losses: .*one number; got a tensor of shape \(16, 4\)",
    ):
        tlkit.fit(tiny_task, epochs=1, regularize="test_logs", **fast)
    Logs.tlkit_extra_losses = tlkit.hookimpl(lambda self, step: step.log("a_float", 0.5))
    temp_strategy(Logs)
    run = tlkit.fit(tiny_task, epochs=1, regularize="test_logs", **fast)
    assert run.history[0]["a_float"] == 0.5


def test_bad_pseudo_labels_and_setup_results_are_named(tiny_task, fast, temp_strategy):
    class Wrong:
        name, family, needs_target = "test_bad_pl", "pseudo_label", True

        @tlkit.hookimpl
        def tlkit_pseudo_labels(self, step):
            n = len(step.target_logits)
            return tlkit.PseudoLabels(
                targets=torch.zeros(n, dtype=torch.long), weights=torch.ones(n + 1)
            )

    temp_strategy(Wrong)
    with pytest.raises(
        PluginError,
        match=r"'test_bad_pl' returned a bad result from tlkit_pseudo_labels: weights must have shape \(16,\), got \(17,\)",
    ):
        tlkit.fit(tiny_task, epochs=1, pseudo_label="test_bad_pl", **fast)

    class NotAModule:
        name, family = "test_bad_setup", "adapt"

        @tlkit.hookimpl
        def tlkit_setup(self):
            return {"weights": 1}

    temp_strategy(NotAModule)
    with pytest.raises(
        PluginError,
        match="'test_bad_setup' returned a bad result from tlkit_setup: it must return an nn.Module or None, got dict",
    ):
        tlkit.fit(tiny_task, epochs=1, adapt="test_bad_setup", **fast)


# -- registration checks signatures and markers -----------------------------------------------
def test_registration_checks_hook_signatures_markers_and_declarations():
    class WrongArg:
        name, family, requires_task = "test_wrong_arg", "loss", "classification"

        @tlkit.hookimpl
        def tlkit_supervised_loss(self, logits, target):  # 'targets' is meant
            return logits

    with pytest.raises(
        PluginError,
        match=r"tlkit_supervised_loss asks for \['target'\], which the hook does not pass; it passes logits, targets, step, domain",
    ):
        tlkit.register(WrongArg)

    class Unmarked:
        name, family = "test_unmarked", "regularizer"

        def tlkit_extra_losses(self, step):
            return {"x": step.logits.mean()}

    with pytest.raises(PluginError, match="defines tlkit_extra_losses without @tlkit.hookimpl"):
        tlkit.register(Unmarked)

    class OldHook:
        name, family = "test_old_hook", "adapt"

        @tlkit.hookimpl
        def tlkit_wants_target(self):
            return True

    with pytest.raises(PluginError, match="tlkit_wants_target, which is not a tlkit hook"):
        tlkit.register(OldHook)

    class BadDeclaration:
        name, family, needs_target = "test_bad_decl", "adapt", "yes"

        @tlkit.hookimpl
        def tlkit_extra_losses(self):
            return None

    with pytest.raises(PluginError, match="needs_target must be True or False"):
        tlkit.register(BadDeclaration)

    class NoTask:
        name, family = "test_no_task", "loss"

        @tlkit.hookimpl
        def tlkit_supervised_loss(self, logits, targets):
            return ce(logits, targets)

    with pytest.raises(PluginError, match="must declare the task it is for"):
        tlkit.register(NoTask)
    assert "test_wrong_arg" not in {s.name for s in tlkit.strategies()}


# -- who owns a name --------------------------------------------------------------------------
class FakeDist:
    def __init__(self, name):
        self.name = name


class FakeEntryPoint:
    def __init__(self, name, dist, load):
        self.name, self.value, self.dist, self._load = (
            name,
            f"{dist}_mod:Thing",
            FakeDist(dist),
            load,
        )

    def load(self):
        return self._load()


@pytest.fixture
def installed(monkeypatch):
    """Re-discover entry points with extra fake ones (``installed(*eps)``), isolated per test."""
    real = importlib.metadata.entry_points

    def install(*extra):
        monkeypatch.setattr(
            importlib.metadata,
            "entry_points",
            lambda **kw: [*real(**kw), *extra] if kw.get("group") == "tlkit" else real(**kw),
        )
        for attr, value in (
            ("_installed", {}),
            ("_owner", {}),
            ("_contested", {}),
            ("_broken", {}),
        ):
            monkeypatch.setattr(registry, attr, value)
        monkeypatch.setattr(registry, "_entry_points_loaded", False)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            table = tlkit.strategies()
        return table, [str(w.message) for w in caught]

    return install


def fake_dann():
    class OtherDANN:
        """Somebody else's DANN."""

        name, family, needs_target = "dann", "adapt", True

        @tlkit.hookimpl
        def tlkit_extra_losses(self, step):
            return {"other_dann": step.target_logits.float().mean() * 0}

    return OtherDANN


def test_an_entry_point_cannot_shadow_a_builtin(installed, tiny_task, fast):
    table, messages = installed(FakeEntryPoint("dann", "other-pkg", fake_dann))
    assert any("uses the name of the built-in strategy 'dann'" in m for m in messages)
    names = {row[0]: row[3] for row in table.rows()}
    assert names["dann"] == "tlkit" and names["other-pkg:dann"] == "other-pkg"
    assert registry.get("dann").provider == "tlkit"
    run = tlkit.fit(tiny_task, epochs=1, adapt="other-pkg:dann", **fast)
    assert "other_dann" in run.history[0]


def test_two_packages_with_one_name_must_be_told_apart(installed):
    _, messages = installed(
        FakeEntryPoint("shared", "pkg-a", fake_dann), FakeEntryPoint("shared", "pkg-b", fake_dann)
    )
    assert any("pkg-a, pkg-b all declare a strategy 'shared'" in m for m in messages)
    with pytest.raises(
        PluginError, match="declared by several packages; select one of pkg-a:shared, pkg-b:shared"
    ):
        registry.get("shared")
    assert registry.get("pkg-b:shared").provider == "pkg-b"


def test_a_cell_cannot_take_or_remove_an_installed_name():
    with pytest.raises(
        PluginError, match="'dann' belongs to the adapt strategy from package 'tlkit'"
    ):
        tlkit.register(fake_dann())
    with pytest.raises(PluginError, match="cannot be unregistered"):
        tlkit.unregister("dann")
    assert registry.get("dann").provider == "tlkit"


def test_a_plugin_that_fails_to_import_is_reported_as_such(installed, capsys):
    def broken():
        raise ImportError("No module named 'torch_scatter'")

    def exits():
        raise SystemExit(3)

    _, messages = installed(
        FakeEntryPoint("fancy", "fancy-pkg", broken), FakeEntryPoint("quitter", "quit-pkg", exits)
    )
    assert any("skipped plugin 'quitter'" in m and "SystemExit" in m for m in messages)
    with pytest.raises(
        PluginError,
        match="'fancy' is installed but failed to import: package 'fancy-pkg' .*torch_scatter",
    ):
        registry.get("fancy")
    assert main(["strategies"]) == 0  # a plugin calling sys.exit does not end the command
    assert "cross_entropy" in capsys.readouterr().out


# -- validators are namespaced ----------------------------------------------------------------
def test_validator_scores_are_namespaced_and_collisions_refused(tiny_task, fast, temp_strategy):
    def validator(name, key):
        return type(
            name,
            (),
            {
                "name": name,
                "family": "validator",
                "tlkit_target_scores": tlkit.hookimpl(lambda self, logits: {key: 1.0}),
            },
        )

    temp_strategy(validator("test_sneaky", "supervised"))
    run = tlkit.fit(tiny_task, epochs=1, validate="test_sneaky", **fast)
    row = run.history[0]
    assert row["score_supervised"] == 1.0 and row["supervised"] != 1.0  # the loss is intact
    temp_strategy(validator("test_twin", "score_supervised"))
    with pytest.raises(PluginError, match="'score_supervised' is reported twice"):
        tlkit.fit(tiny_task, epochs=1, validate=["test_sneaky", "test_twin"], **fast)


# -- what a step exposes ----------------------------------------------------------------------
def test_a_step_gives_sample_indices_domains_and_one_epoch_numbering(
    tiny_task, fast, temp_strategy
):
    seen = {"domains": set(), "epochs": set(), "epoch_end": [], "target_indices": set()}
    source = tiny_task.source

    class Inspect:
        name, family, needs_target = "test_inspect", "pseudo_label", True
        requires_task = "classification"

        @tlkit.hookimpl
        def tlkit_pseudo_labels(self, step):
            assert torch.equal(step.y.cpu(), source.labels[step.indices.cpu()])
            seen["target_indices"].update(step.target_indices.tolist())
            seen["epochs"].add(step.epoch)
            n = len(step.target_logits)
            return tlkit.PseudoLabels(torch.zeros(n, dtype=torch.long), torch.ones(n))

        @tlkit.hookimpl
        def tlkit_on_epoch_end(self, trainer, epoch):
            seen["epoch_end"].append((epoch, trainer.history[-1]["epoch"]))

    class Loss:
        name, family, requires_task = "test_domain_loss", "loss", "classification"

        @tlkit.hookimpl
        def tlkit_supervised_loss(self, logits, targets, domain):
            seen["domains"].add(domain)
            return ce(logits, targets)

    temp_strategy(Inspect)
    temp_strategy(Loss)
    tlkit.fit(tiny_task, epochs=2, pseudo_label="test_inspect", loss="test_domain_loss", **fast)
    assert seen["domains"] == {"source", "target"}
    assert seen["epochs"] == {1, 2} and seen["epoch_end"] == [(1, 1), (2, 2)]
    assert seen["target_indices"] <= set(range(len(tiny_task.target)))


def test_only_strategies_that_need_the_target_get_it(tiny_task, fast, temp_strategy):
    seen = []

    class SourceOnly:
        name, family = "test_source_only", "regularizer"

        @tlkit.hookimpl
        def tlkit_extra_losses(self, step):
            seen.append((step.x_target, step.target_logits, step.target_indices))

    temp_strategy(SourceOnly)
    tlkit.fit(tiny_task, epochs=1, regularize="test_source_only", **fast)
    assert seen and all(item == (None, None, None) for item in seen)
    hidden = tlkit.Trainer(tiny_task, **fast).target
    assert (hidden.clean_labels == -1).all() and len(hidden) == len(tiny_task.target)


# -- the query hook can express BALD, core-set and BADGE --------------------------------------
@pytest.fixture(scope="module")
def pool_task() -> DomainPair:
    train, test = pattern_domain(120, seed=3, name="pat").split(0.25, seed=0)
    return few_labels(DomainPair(train, test, name="pat"), k=1)


def test_query_strategies_get_model_pool_labelled_features_and_budget(pool_task, temp_strategy):
    from tlkit.notebook.annotate import ActiveLearner

    calls = {}

    class CoreSet:  # k-center greedy: farthest from everything labelled, then from the picks
        name, family = "test_coreset", "query"

        @tlkit.hookimpl
        def tlkit_query_scores(self, features, labelled_features, budget):
            calls["coreset"] = (len(labelled_features), budget)
            dist = torch.cdist(features, labelled_features).min(1).values
            scores = torch.zeros(len(features))
            for rank in range(budget):
                i = int(dist.argmax())
                scores[i] = budget - rank
                dist = torch.minimum(dist, torch.cdist(features, features[i : i + 1]).squeeze(1))
            return scores

    class BALD:  # mutual information from MC-dropout passes of the model over the pool
        name, family = "test_bald", "query"

        @tlkit.hookimpl
        def tlkit_query_scores(self, model, pool):
            calls["bald"] = (type(model).__name__, len(pool))
            model.train()  # dropout on
            with torch.no_grad():
                x = pool.images.float() / 255
                p = torch.stack([model(x).softmax(1) for _ in range(4)])  # (T, N, K)
            model.eval()
            mean = p.mean(0)
            entropy = -(mean * mean.clamp_min(1e-8).log()).sum(1)
            expected = -(p * p.clamp_min(1e-8).log()).sum(2).mean(0)
            return entropy - expected

    temp_strategy(CoreSet)
    temp_strategy(BALD)
    fast = dict(steps=10, batch_size=8, image_size=16)
    learner = ActiveLearner(pool_task, query="test_coreset", backbone="small_cnn", **fast)
    picks = learner.query(5)
    assert calls["coreset"] == (4, 5)  # the seed set's 4 labelled samples; a budget of 5
    assert len({p.index for p in picks}) == 5 and [p.score for p in picks] == [5, 4, 3, 2, 1]
    bald = ActiveLearner(pool_task, query="test_bald", backbone="small_cnn", dropout=0.3, **fast)
    assert len(bald.query(3)) == 3 and calls["bald"][0] == "TransferModel"


def test_plugin_types_come_from_tlkit_itself():
    assert tlkit.PseudoLabels is registry.__dict__.get("PseudoLabels", tlkit.PseudoLabels)
    from tlkit.step import PseudoLabels, Step

    assert tlkit.Step is Step and tlkit.PseudoLabels is PseudoLabels
    assert callable(tlkit.options.positive) and issubclass(tlkit.StrategyOptionError, ValueError)
