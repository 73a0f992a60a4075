"""The annotation assistant: query strategies (family "query"), the widget-free ActiveLearner,
and the widget driven by clicks.

The first-party query strategies are registered with ``tlkit.register`` when their entry points
are not declared (yet), so these tests pass before and after ``pyproject.toml`` lists them.
"""

from __future__ import annotations

import pytest
import torch
from conftest import pattern_domain
from tlkit_strategies.query.random_query import RandomQuery
from tlkit_strategies.query.uncertainty import EntropyQuery, LeastConfidenceQuery, MarginQuery

import tlkit
from tlkit.datasets import DataError, DomainPair, few_labels
from tlkit.notebook.annotate import ActiveLearner, button_width, split_pool
from tlkit.registry import PluginError

FIRST_PARTY = (MarginQuery, EntropyQuery, LeastConfidenceQuery, RandomQuery)
FAST = dict(steps=20, batch_size=16, image_size=16)


@pytest.fixture(autouse=True, scope="module")
def query_plugins():
    installed = {s.name for s in tlkit.strategies("query")}
    added = [cls.name for cls in FIRST_PARTY if cls.name not in installed]
    for cls in FIRST_PARTY:
        if cls.name in added:
            tlkit.register(cls)
    yield
    for name in added:
        tlkit.unregister(name)


@pytest.fixture(scope="module")
def pool_task() -> DomainPair:
    """4 classes, 1 label each; the other 116 training images are the unlabelled pool."""
    train, test = pattern_domain(160, seed=3, name="pat").split(0.25, seed=0)
    return few_labels(DomainPair(train, test, name="pat"), k=1)


def hook(cls, probs, **kw):
    return cls(**kw).tlkit_query_scores(probs=probs)


def test_query_family_lists_the_first_party_strategies():
    names = {s.name for s in tlkit.strategies("query")}
    assert {"margin", "max_entropy", "least_confidence", "random"} <= names


def test_uncertainty_scores_rank_the_unsure_first():
    probs = torch.tensor([[0.9, 0.05, 0.05], [0.45, 0.45, 0.1], [0.34, 0.33, 0.33]])
    margin = hook(MarginQuery, probs)
    assert margin.shape == (3,) and margin.argmax() == 1 and margin.argmin() == 0
    assert margin[1] == pytest.approx(0.0) and margin[0] == pytest.approx(-0.85)
    entropy = hook(EntropyQuery, probs)
    assert entropy.argmax() == 2 and entropy[2] == pytest.approx(1.0986, abs=1e-3)
    assert hook(LeastConfidenceQuery, probs).tolist() == pytest.approx([0.1, 0.55, 0.66])
    r = RandomQuery(seed=1)
    a, b = r.tlkit_query_scores(probs=probs), r.tlkit_query_scores(probs=probs)
    assert not torch.equal(a, b) and torch.equal(a, hook(RandomQuery, probs, seed=1))


def test_pool_is_the_hidden_part_of_the_task(pool_task):
    seed_set, pool, test = split_pool(pool_task)
    assert seed_set.num_labelled == 4 and pool.num_labelled == 0 and len(pool) == 116
    assert test is pool_task.source_test
    with pytest.raises(DataError, match="few_labels"):
        split_pool(DomainPair(pool_task.source, name="all labelled"))


def test_query_label_retrain_and_the_learning_curve(pool_task):
    learner = ActiveLearner(pool_task, query="margin", **FAST)
    learner.retrain()
    assert learner.curve[0]["human_labels"] == 0 and learner.curve[0]["labelled"] == 4
    picks = learner.query(6)
    idx = [p.index for p in picks]
    assert len(set(idx)) == 6 and [p.score for p in picks] == sorted(
        [p.score for p in picks], reverse=True
    )
    probs, _ = learner.pool_outputs()
    expected = MarginQuery().tlkit_query_scores(probs=probs).topk(6).indices.tolist()
    assert idx == expected
    assert all(p.label == int(probs[p.index].argmax()) for p in picks)
    truth = learner.pool.clean_labels[idx]
    assert learner.label(idx, truth) == 6
    assert learner.human_labels == 6 and learner.num_labelled == 10
    assert not set(idx) & {p.index for p in learner.query(20)}
    learner.label([idx[0]], [learner.classes[0]])  # by class name; relabelling is allowed
    assert learner.human_labels == 6
    learner.retrain()
    assert [c["human_labels"] for c in learner.curve] == [0, 6]
    assert all(0.0 <= c["accuracy"] <= 1.0 for c in learner.curve)
    fig = learner.plot_curve()
    assert fig.axes[0].lines[0].get_xdata().tolist() == [0, 6]


def test_bulk_accept_counts_apart_from_human_labels(pool_task):
    learner = ActiveLearner(pool_task, query="random", **FAST)
    shown = learner.unlabelled_indices()[:5]
    assert learner.accept_suggestions(0.0, indices=shown) == 5
    assert learner.accepted_labels == 5 and learner.human_labels == 0
    assert learner.accept_suggestions(1.01) == 0
    n = learner.accept_suggestions(0.0)
    assert n == len(learner.pool) - 5 and learner.query(3) == []
    assert set(learner.label_accuracy()) == {"accepted"}


def test_labels_are_validated(pool_task):
    learner = ActiveLearner(pool_task, **FAST)
    with pytest.raises(DataError, match="outside"):
        learner.label([10_000], [0])
    with pytest.raises(DataError, match="outside"):
        learner.label([0], [7])
    with pytest.raises(DataError, match="unknown label"):
        learner.label([0], ["zebra"])
    with pytest.raises(DataError, match="2 indices but 1 labels"):
        learner.label([0, 1], [0])


def test_third_party_query_strategy_and_broken_ones(pool_task, temp_strategy):
    class Oldest:
        """Ask about the lowest pool indices first."""

        name = "oldest_first"
        family = "query"

        @tlkit.hookimpl
        def tlkit_query_scores(self, probs, features):
            assert features.ndim == 2 and len(features) == len(probs)
            return -torch.arange(len(probs), dtype=torch.float)

    class Short:
        name = "short_scores"
        family = "query"

        @tlkit.hookimpl
        def tlkit_query_scores(self, probs):
            return torch.zeros(1)

    temp_strategy(Oldest)
    temp_strategy(Short)
    learner = ActiveLearner(pool_task, query="oldest_first", **FAST)
    assert [p.index for p in learner.query(3)] == [0, 1, 2]
    learner.label([0, 1], [0, 1])
    assert [p.index for p in learner.query(2)] == [2, 3]
    with pytest.raises(PluginError, match="unknown query strategy"):
        ActiveLearner(pool_task, query="nope")
    with pytest.raises(PluginError, match="loss strategy"):
        ActiveLearner(pool_task, query="cross_entropy")
    short = ActiveLearner(pool_task, query="short_scores", **FAST)
    short.run, short._outputs = learner.run, learner.pool_outputs()
    with pytest.raises(PluginError, match=r"must return scores of shape \(\d+,\)"):
        short.query(2)


def test_widget_clicks_label_accept_and_retrain(pool_task, temp_strategy):
    from tlkit.notebook.annotate import AnnotationAssistant

    learner = ActiveLearner(pool_task, query="least_confidence", **FAST)
    ui = AnnotationAssistant(learner, batch=4)
    assert "no model yet" in ui.status.value
    ui.retrain_button.click()
    ui.wait(60)
    assert ui.error.value == "" and len(ui.cards) == 4 and len(ui.grid.children) == 4
    assert bytes(ui.curve.value).startswith(b"\x89PNG")
    first, second = ui.cards[0], ui.cards[1]
    first.accept.click()
    assert learner.pool_labels[first.suggestion.index] == first.suggestion.label
    assert first.accept.disabled and "tlkit-given" in first.info.value
    assert first.choice.style.button_width == button_width(learner.classes)
    second.choice.value = learner.classes[3]
    assert learner.pool_labels[second.suggestion.index] == 3
    assert learner.human_labels == 2 and "2 human labels" in ui.status.value
    ui.min_confidence.value = 0.5
    ui.accept_button.click()
    assert f"{learner.accepted_labels} accepted" in ui.status.value
    ui.retrain_button.click()
    ui.wait(60)
    assert len(learner.curve) == 2 and learner.curve[1]["human_labels"] == 2
    shown = {c.suggestion.index for c in ui.cards}
    assert not shown & set(learner.label_origin)
    # a failing strategy is reported in the widget, not raised
    temp_strategy(type("Bad", (), {"name": "bad_q", "family": "query", "tlkit_query_scores": _bad}))
    bad = AnnotationAssistant(ActiveLearner(pool_task, query="bad_q", **FAST), batch=2)
    bad.learner.run, bad.learner._outputs = learner.run, learner.pool_outputs()
    bad.ask_button.click()
    assert "PluginError" in bad.error.value and "bad_q" in bad.error.value


def test_class_toggles_fit_the_longest_class_name():
    digits, words = button_width([str(d) for d in range(10)]), button_width(["cat", "airplane"])
    assert float(digits.removesuffix("em")) >= 2.0  # one character plus the button's padding
    assert float(words.removesuffix("em")) > 0.6 * len("airplane")


@tlkit.hookimpl
def _bad(self, probs):
    raise ValueError("no scores today")


# -- background training, bulk-accept preview, undo -------------------------------------------
SLOW = dict(steps=300, batch_size=16, image_size=16)  # a few seconds: long enough to see


def test_ask_trains_the_first_model_in_the_background_and_says_so(pool_task):
    import time

    from tlkit.notebook.annotate import AnnotationAssistant

    ui = AnnotationAssistant(ActiveLearner(pool_task, query="margin", **SLOW), batch=4)
    start = time.perf_counter()
    ui.ask_button.click()
    assert time.perf_counter() - start < 1.0  # the kernel is free at once
    assert ui.training and ui.ask_button.disabled and ui.retrain_button.disabled
    assert "training the first model on 4 labels" in ui.status.value  # not "not trained yet"
    ui.wait(120)
    assert not ui.training and not ui.ask_button.disabled and ui.error.value == ""
    assert len(ui.cards) == 4 and "test accuracy" in ui.status.value and "%" in ui.status.value
    assert ui.curve.layout.display is None and bytes(ui.curve.value).startswith(b"\x89PNG")


def test_labels_given_during_a_retrain_count_for_the_next_one(pool_task):
    from tlkit.notebook.annotate import AnnotationAssistant

    ui = AnnotationAssistant(ActiveLearner(pool_task, query="margin", **SLOW), batch=4)
    ui.ask()
    ui.wait(120)
    ui.cards[0].accept.click()
    ui.retrain()
    ui.cards[1].accept.click()  # while training: kept, but not part of this model
    ui.wait(120)
    assert [c["human_labels"] for c in ui.learner.curve] == [0, 1]
    assert ui.learner.human_labels == 2


def test_bulk_accept_shows_a_preview_and_undo_takes_it_back(pool_task):
    from tlkit.notebook.annotate import AnnotationAssistant

    ui = AnnotationAssistant(ActiveLearner(pool_task, query="margin", **FAST), batch=4)
    assert "once a model is trained" in ui.preview.value
    ui.ask()
    ui.wait(60)
    ui.min_confidence.value = 0.6
    preview = ui.learner.preview_accept(0.6)
    confidences = [p.confidence for p in preview]
    assert confidences == sorted(confidences, reverse=True) and min(confidences) >= 0.6
    assert f"<b>{len(preview)}</b>" in ui.preview.value
    assert ui.accept_button.description == f"Accept {len(preview)}"
    assert len(ui.preview_images.children) == min(8, len(preview))
    assert ui.learner.accepted_labels == 0  # a preview labels nothing
    before = ui.learner.pool_labels.clone()
    ui.accept_button.click()
    assert ui.learner.accepted_labels == len(preview) > 0
    assert not ui.undo_button.disabled
    ui.undo_button.click()
    assert ui.learner.accepted_labels == 0 and torch.equal(ui.learner.pool_labels, before)
    # a single click is undone the same way, and its card shows it is unlabelled again
    card = ui.cards[0]
    card.choice.value = ui.learner.classes[2]
    assert "tlkit-given" in card.info.value and card.accept.disabled
    ui.undo()
    assert ui.learner.human_labels == 0 and card.choice.value is None
    assert "tlkit-given" not in card.info.value and not card.accept.disabled
    assert ui.undo_button.disabled and ui.undo() == []


def test_undo_restores_a_relabelled_sample(pool_task):
    learner = ActiveLearner(pool_task, **FAST)
    learner.label([3], [1])
    learner.label([3, 4], [2, 0])
    assert learner.undo() == [3, 4]
    assert int(learner.pool_labels[3]) == 1 and int(learner.pool_labels[4]) == -1
    assert learner.label_origin == {3: "human"}
    with pytest.raises(DataError, match="unknown label"):
        learner.label([5, 6], [0, "zebra"])  # nothing of a rejected action is kept
    assert int(learner.pool_labels[5]) == -1 and learner.undo() == [3]


def test_learning_curve_counts_whole_labels():
    learner = ActiveLearner.__new__(ActiveLearner)
    learner.curve = [{"human_labels": 0, "accuracy": 0.5}, {"human_labels": 1, "accuracy": 0.6}]
    learner.query_name = "margin"
    ax = learner.plot_curve().axes[0]
    assert all(float(t).is_integer() for t in ax.get_xticks())


def test_retraining_epochs_count_the_last_short_batch(pool_task):
    learner = ActiveLearner(pool_task, **FAST)  # 20 steps at batch 16
    assert learner._epochs(24) == 10  # batches of 16 and 8: 2 steps an epoch
    assert learner._epochs(17) == 20  # a remainder of one joins the batch: 1 step
    auto = ActiveLearner(pool_task, steps=20, image_size=16, batch_size="auto")  # <= n / 4
    assert auto._epochs(40) == 5  # batches of 10: 4 steps an epoch
