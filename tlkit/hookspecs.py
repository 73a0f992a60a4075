"""The plugin contract: every hook a tlkit strategy or observer may implement.

A *strategy* is any object -- a class, an instance or a module -- with a ``name``, a ``family`` and
one or more functions marked ``@tlkit.hookimpl`` whose names are the hooks below. The engine never
names a strategy: for each run it registers the strategies the user asked for (plus the observers,
e.g. the progress bar) in a fresh, run-scoped :class:`pluggy.PluginManager`, and calls these hooks
at fixed points of the training step.

Conventions, as in pytest's hook module:

* Hooks are called with keyword arguments only; an implementation may accept any subset of a
  hook's arguments, by name. Asking for an argument the hook does not pass is refused when the
  strategy is registered.
* *firstresult* hooks stop at the first implementation that returns something other than
  ``None``; the others collect every non-``None`` result.
* Implementations registered later run first; ``@hookimpl(tryfirst=True)`` / ``trylast`` reorder.
* Every result is checked (type and shape); a wrong one raises :class:`tlkit.PluginError` naming
  the strategy and the hook, and so does an exception raised inside a hook.

**When the hooks run.** One run, as pseudo-code (``epoch`` counts from 1 everywhere)::

    tlkit_setup(trainer)                              # once per run (again when resuming)
    tlkit_on_fit_start(trainer)
    for epoch in 1..epochs:
        for each step:
            tlkit_transform_source(step)          # first wins: replaces step.x (FDA, PixelDA)
            forward pass of the source batch, and of the target batch when a strategy
                needs_target (one call; BatchNorm sees both together, or each domain apart
                with domain_bn="separate")
            tlkit_supervised_loss(logits, targets=step.y, step, domain="source")   # first wins
            if a target batch:
                tlkit_pseudo_labels(step)                                         # first wins
                -> tlkit_supervised_loss(..., targets=pseudo-labels, domain="target")
            tlkit_extra_losses(step)                                              # all summed
            backward, optimiser step, EMA update
            tlkit_adversary_losses(step)  # all summed: a second step for own_optimizer modules
            tlkit_on_step_end(trainer, step, logs)
        tlkit_before_evaluate(trainer)
        evaluation of the held-out sets; tlkit_target_scores(trainer, logits, features)
        tlkit_on_epoch_end(trainer, epoch, metrics)
        the epoch's checkpoint is written (also when that hook, or the monitor, fails)
    tlkit_on_fit_end(trainer, history)                # also after a stop or an error

**What a strategy declares** (class attributes the engine reads; checked at registration):

* ``name`` -- what users type (``adapt="dann"``); ``family`` -- which ``fit`` argument selects it:
  ``loss``, ``pseudo_label``, ``adapt``, ``regularizer``, ``validator`` or ``query``.
* ``requires_task`` -- ``"classification"``, ``"regression"`` or ``"any"``; a run of the other
  task refuses the strategy before training. **Required for losses.**
* ``needs_target = True`` -- feed the unlabelled target batch through the network each step
  (``step.x_target``, ``step.target_logits``...). Without any such strategy, runs are source-only
  and BatchNorm never sees target data.
* ``needs_images = True`` -- the strategy works on inputs (``step.x``, ``step.forward``), so the
  engine never replaces them by cached frozen-backbone features.
* ``needs_strong_view = True`` -- the strategy calls ``step.target_view("strong")``: for
  file-backed photos the DataLoader then makes a strongly augmented view of each target sample.
* ``source_free = True`` -- the strategy also works without labelled source data, so it may run
  in a source-free run (``fit(target, model=source_run, source_free=True)``), where every step's
  source batch is empty and the supervised loss is not called.
* ``domain_bn = "separate"`` -- with ``fit(domain_bn="auto")`` (the default) the backbone runs
  once per domain, so BatchNorm normalises source and target each with its own statistics
  (adversarial alignment needs it) and keeps running statistics per domain: the model's own
  BatchNorm buffers hold the target's, and the source's are swapped in during source passes
  (:class:`tlkit.strategy_tools.DomainSwap`, which a strategy may use for statistics of its
  own); without any such strategy both go through one pass.
* ``keeps_domain_statistics = True`` -- the strategy keeps BatchNorm statistics per domain
  itself (DSBN's source branch), so the engine does not keep its own source copy.
* ``replaces_weight_decay = True`` -- no optimiser weight decay on the model (L2-SP's penalty
  takes its place).
* ``own_optimizer`` **on a module** returned from :func:`tlkit_setup` (or one of its
  sub-modules) -- that module is left out of the main optimiser. ``own_optimizer = True``: a
  second optimiser of the run's kind, learning rate and schedule trains it on the losses of
  :func:`tlkit_adversary_losses` (a GAN's discriminator). ``own_optimizer =``
  :class:`OwnOptimizer` ``(lr=2e-4, betas=(0.5, 0.999), steps=1, loss="adversary")`` (or a dict
  of those fields) gives the module an Adam optimiser of its own settings, at a constant rate:
  ``loss="adversary"`` steps it ``steps`` times per training step on the adversary losses (a
  discriminator's steps per generator step); ``loss="main"`` steps it on the main loss, with the
  model (a generator's own rate and betas). Its state is checkpointed and resumed with the run.
* ``state_dict()`` / ``load_state_dict(state)`` -- state kept on the strategy object (counters,
  running thresholds, per-sample memories) that checkpoints must save so a resumed run equals an
  uninterrupted one. Without them, the engine saves the strategy's plain attributes (numbers,
  strings, booleans, tensors, and lists/tuples/dicts of those) and restores them on resume.
  Modules returned from :func:`tlkit_setup` are saved separately, with their weights.

**The objects hooks receive.** ``step`` is a :class:`tlkit.Step` (its attributes are documented
there: ``x``, ``y``, ``indices``, ``x_target``, ``target_indices``, ``features``, ``logits``,
``target_features``, ``target_logits``, ``index``, ``epoch``, ``progress``, ``generator``,
``model``, ``trainer``, ``stats``, ``stat_weights``, ``log()``, ``log_target_predictions()``,
``target_view()``, ``forward()``). ``trainer`` is the :class:`tlkit.Trainer`, typed in every hook
by :class:`TrainerView`: the part of it strategies may rely on, with what each member holds.
Helpers the first-party strategies share (prediction entropy, BatchNorm layers, the per-domain
BatchNorm swap, EMA) are public in :mod:`tlkit.strategy_tools`; a strategy needs nothing from
``tlkit.engine``.

**Validators** (``family = "validator"``, implementing :func:`tlkit_target_scores`) should
declare ``scores = ("score_<name>", ...)``, the names they report: when every validator of a run
declares them, ``monitor="score_<name>"`` is checked against them before training (a typo is
refused at once instead of after the first epoch); without the declaration any ``score_*``
monitor is accepted until the scores arrive.

**Strategies that transform source images** (:func:`tlkit_transform_source`) may also offer a
preview, :class:`SourcePreview`: ``preview(source, *, target=None, generator=None)`` returns the
target-style versions of ``source`` images outside training. :func:`tlkit.plots.source_to_target_grid`,
the dashboard's "source -> target" tab and the book call it; a strategy without it gets no grid.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import pluggy

from tlkit.step import OwnOptimizer
from tlkit.trainer_view import TrainerView

if TYPE_CHECKING:  # pragma: no cover - imported for annotations only
    import torch
    from torch import nn

    from tlkit.step import PseudoLabels, Step

PROJECT = "tlkit"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@runtime_checkable
class SourcePreview(Protocol):
    """A strategy that transforms source images and can show what it does outside training.

    ``preview(source, target=..., generator=...)`` takes source images ``(B, C, H, W)`` float in
    [0, 1] (on CPU) and returns their target-style versions, the same shape, float in [0, 1],
    on CPU, without changing the strategy's state (a generator is run in eval mode and put back).
    ``target``: target images ``(N, C_t, H_t, W_t)`` float in [0, 1], or ``None`` when the caller
    has none (raise ``ValueError`` if the transform needs them, as FDA's amplitude does);
    ``generator``: a CPU ``torch.Generator`` for any randomness (noise, partners), so a preview
    is reproducible. Called under ``torch.no_grad()``.
    """

    def preview(
        self,
        source: torch.Tensor,
        *,
        target: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor: ...


# -- setup ------------------------------------------------------------------------------------
@hookspec
def tlkit_setup(trainer: TrainerView) -> nn.Module | None:
    """Prepare a strategy for a run; called once, before the first step (also when resuming).

    It runs before a resumed run restores its checkpoint: the model then holds its starting
    weights (pretrained, or the seeded initialisation), and the returned module's weights -- and
    the strategy's own state (see ``state_dict`` above) -- are restored from the checkpoint
    afterwards.

    Use it to build modules the strategy trains alongside the model, such as a domain
    discriminator. Return such a module (or ``None``): the engine moves it to the device, adds its
    parameters to the optimizer at the head's learning rate (those of a module declaring
    ``own_optimizer`` go to its own optimiser instead), averages its gradients across
    processes under ``torchrun``, and saves/restores its weights in checkpoints under the
    strategy's name. Raise ``ValueError`` to refuse a run the strategy cannot serve (e.g. a model
    without BatchNorm); the message reaches the user naming the strategy.

    :param trainer: the trainer; ``trainer.model`` and ``trainer.num_classes`` are ready.
    :return: an ``nn.Module`` to train, or ``None``. All results are used (not firstresult).
    """


# -- inputs -----------------------------------------------------------------------------------
@hookspec
def tlkit_transform_source(step: Step) -> torch.Tensor | None:
    """Replace the source images of this step before the forward pass.

    For pixel-level adaptation: FDA swaps their low-frequency amplitude spectrum for the
    target's; PixelDA's generator renders them in the target's style. The supervised loss then
    scores the transformed images against the source labels, and gradients flow back into
    whatever made them (a generator returned from :func:`tlkit_setup` trains with the model).
    Implementing this hook means the backbone must see images, so features are never cached.

    **Composition.** Every strategy that implements it transforms, in the order the run selected
    them (``adapt=["fda", "pixelda"]``: FDA first; ``tryfirst`` / ``trylast`` go before / after
    the rest): each sees as ``step.x`` the images the previous one returned, and the last one's
    are what the network trains on. A strategy that returns ``None`` passes the images on.

    Offer :class:`SourcePreview` as well so that plots and the dashboard can show the transform.

    :param step: the step before its forward pass: ``step.x`` ``(B, C, H, W)`` float in [0, 1]
        (after ``augment``, and after the transforms selected before this one),
        ``step.x_target`` when the strategy ``needs_target``.
    :return: images of the same shape and device as ``step.x``, float in [0, 1], or ``None`` to
        leave them. An integer dtype, another shape, a single number or values far outside
        [0, 1] (0-255 pixels, normalised inputs) are refused. Every result is used, in order.
    """


# -- losses -----------------------------------------------------------------------------------
@hookspec(firstresult=True)
def tlkit_supervised_loss(
    logits: torch.Tensor, targets: torch.Tensor, step: Step, domain: str
) -> torch.Tensor | None:
    """The per-sample loss on labelled data. firstresult: exactly one loss strategy answers.

    Called for the labelled source batch, and again for the pseudo-labelled target batch when a
    pseudo-labelling strategy answers; ``domain`` tells which. The samples are
    ``step.indices`` (source) or ``step.target_indices`` (target), for losses that keep a memory
    per sample.

    :param logits: model outputs ``(B, K)`` (classification) or ``(B, D)`` (regression).
    :param targets: class ids ``(B,)`` int64, class probabilities ``(B, K)`` (soft
        pseudo-labels), or regression targets ``(B,)`` / ``(B, D)``.
    :param step: the current :class:`tlkit.Step` (for schedules depending on ``step.progress``).
    :param domain: ``"source"`` (labelled data) or ``"target"`` (pseudo-labels).
    :return: per-sample losses ``(B,)`` float; the engine averages (or weights) them. A scalar or
        a ``(B, K)`` tensor is refused. firstresult.
    """


@hookspec(firstresult=True)
def tlkit_pseudo_labels(step: Step) -> PseudoLabels | None:
    """Targets for the unlabelled batch. firstresult: one pseudo-labelling strategy answers.

    Called after the forward pass when a target batch exists. The engine applies the supervised
    loss to ``PseudoLabels.logits`` (the target logits unless the strategy gives its own, e.g.
    of a strongly augmented view) against ``PseudoLabels.targets``, weighted per sample by
    ``PseudoLabels.weights``, and logs it as ``pseudo_label``; it also logs the mask rate
    (fraction of weights > 0) and, when the target's true labels are known to the engine,
    pseudo-label accuracy (strategies never see those labels).

    :param step: the step, with ``step.target_logits`` ``(B_t, K)``.
    :return: a :class:`tlkit.PseudoLabels` -- targets ``(B_t,)`` int64 or ``(B_t, K)`` float,
        weights ``(B_t,)``, optional logits ``(B_t, K)`` -- or ``None`` to skip this step.
        firstresult.
    """


@hookspec
def tlkit_extra_losses(step: Step) -> dict[str, torch.Tensor] | None:
    """Additional loss terms (domain alignment, regularisers...). Every result is used.

    :param step: the step after the forward pass.
    :return: a mapping ``{term name: scalar float tensor}``, already weighted; the engine adds all
        terms to the loss and logs each under its name. ``None`` adds nothing. All results are
        used (not firstresult); a name may not repeat another term's (``supervised``,
        ``pseudo_label``, or another strategy's).
    """


@hookspec
def tlkit_adversary_losses(step: Step) -> dict[str, torch.Tensor] | None:
    """Losses for modules trained by their own optimiser, after the main optimiser step.

    A GAN alternates: the generator (and the classifier) step on the main loss, then the
    discriminator steps on its own. Mark the discriminator ``own_optimizer = True`` and return
    its loss here: the engine zeroes its gradients, backpropagates the sum of these terms, and
    steps a second AdamW/SGD (the run's optimiser, learning rate and schedule) over the
    ``own_optimizer`` parameters only. With ``own_optimizer = OwnOptimizer(lr=..., betas=...,
    steps=k)`` the discriminator has its own Adam settings instead, and the hook is called ``k``
    times per training step, each call followed by one step of the module (the largest ``k``
    of the run's modules sets how many calls; a module with a smaller ``k`` steps only in the
    first ``k``). Typically computed on detached generator outputs.

    :param step: the step after the main optimiser step (its outputs are those of the forward
        pass before it).
    :return: ``{term name: scalar float tensor}``; each is logged under its name (the last
        call's value). ``None`` skips the second step. All results are used (not firstresult).
    """


# -- evaluation -------------------------------------------------------------------------------
@hookspec
def tlkit_before_evaluate(trainer: TrainerView) -> None:
    """Called at the end of each epoch, just before the held-out sets are evaluated.

    Strategies that change the model for inference do it here; AdaBN, for one, re-estimates
    BatchNorm statistics on the target data.

    :param trainer: the trainer; ``trainer.model`` is about to be evaluated -- or, with
        ``ema=``, ``trainer.ema.module`` (a strategy that changes the model should change both).
    :return: nothing. Every implementation is called (not firstresult).
    """


@hookspec
def tlkit_target_scores(
    trainer: TrainerView, logits: torch.Tensor, features: torch.Tensor
) -> dict[str, float] | None:
    """Unsupervised model-selection scores on the unlabelled target training set, each epoch.

    Only called when the task has a target and some active strategy implements it. Each score
    joins the epoch's history row in the ``score_`` namespace (a key ``entropy`` is stored as
    ``score_entropy``; ``score_entropy`` stays as it is), so ``monitor="score_entropy"`` can pick
    the checkpoint without target labels. A key that collides with another column is refused.

    :param trainer: the trainer.
    :param logits: model outputs on every target training sample, ``(N_t, K)``, on CPU.
    :param features: backbone features of the same samples, ``(N_t, D)``, on CPU.
    :return: ``{name: number}`` where higher is better, or ``None``. All results are used
        (not firstresult).
    """


# -- annotation (active learning) ------------------------------------------------------------
@hookspec(firstresult=True)
def tlkit_query_scores(
    probs: torch.Tensor,
    features: torch.Tensor,
    labelled_features: torch.Tensor,
    budget: int,
    model: nn.Module,
    pool: Any,
) -> torch.Tensor | None:
    """How much a person's label for each unlabelled sample would help; the annotation assistant
    asks about the highest-scoring samples first.

    Called by :mod:`tlkit.notebook.annotate` (not by the training loop) with the current model's
    predictions on the unlabelled pool. Uncertainty sampling needs only ``probs``; BALD runs the
    ``model`` on the ``pool`` with dropout on; core-set / k-center needs ``labelled_features``;
    BADGE picks ``budget`` samples at once. A strategy that chooses a set rather than ranking
    gives its picks the highest scores, in the order it picked them (e.g. ``budget - i`` for the
    ``i``-th pick, 0 for the rest).

    :param probs: class probabilities ``(N, K)`` on CPU.
    :param features: backbone features of the pool ``(N, D)`` on CPU.
    :param labelled_features: backbone features of the samples labelled so far ``(L, D)``.
    :param budget: how many samples the assistant will ask about next.
    :param model: the current :class:`~tlkit.backbones.TransferModel`, in eval mode.
    :param pool: the unlabelled samples as a :class:`~tlkit.datasets.Domain` (row ``i`` of
        ``probs`` is ``pool`` sample ``i``).
    :return: scores ``(N,)``, higher = ask first. firstresult: one query strategy answers.
    """


# -- observers --------------------------------------------------------------------------------
@hookspec
def tlkit_on_fit_start(trainer: TrainerView) -> None:
    """Called once before training starts (after :func:`tlkit_setup`), also when resuming.

    :param trainer: the trainer; ``trainer.state`` says where a resumed run starts.
    :return: nothing. Every implementation is called (not firstresult).
    """


@hookspec
def tlkit_on_step_end(trainer: TrainerView, step: Step, logs: dict[str, float]) -> None:
    """Called after each optimiser step.

    To end training early (a Stop button, an early-stopping rule), call
    ``trainer.request_stop()``: training ends at the next step boundary, the checkpoint is
    written and the run is returned as it is.

    :param trainer: the trainer; ``trainer.state.step`` counts the steps done.
    :param step: the :class:`tlkit.Step` just taken (with its outputs).
    :param logs: the step's scalars (``loss``, each loss term, ``lr``...). They are synchronised
        from the device every ``config.log_every`` steps; between syncs ``logs`` is empty, so
        observers that draw should draw when it is not.
    :return: nothing. Every implementation is called (not firstresult).
    """


@hookspec
def tlkit_on_epoch_end(trainer: TrainerView, epoch: int, metrics: dict[str, Any]) -> None:
    """Called after each epoch's evaluation with that epoch's row of the history.

    The epoch's checkpoint is written when this hook returns -- also when it raises, so an error
    here loses nothing that was trained (and state the hook changes is in the checkpoint).

    :param trainer: the trainer; ``trainer.eval_results`` holds the full metrics of each
        held-out set (confusion matrix included).
    :param epoch: the epoch just finished, counting from 1.
    :param metrics: ``epoch``, ``train_loss``, every loss term and diagnostic,
        ``source_accuracy`` / ``target_accuracy`` (or ``*_mae`` / ``*_rmse`` for regression),
        ``score_*`` and ``lr``.
    :return: nothing. Every implementation is called (not firstresult).
    """


@hookspec
def tlkit_on_fit_end(trainer: TrainerView, history: list[dict[str, Any]]) -> None:
    """Called once when training ends: normally, by a stop request, or by an error.

    :param trainer: the trainer; ``trainer.state.stopped_early`` tells a stop from an end.
    :param history: the per-epoch rows recorded so far.
    :return: nothing. Every implementation is called (not firstresult).
    """


HOOK_NAMES = [name for name in dir() if name.startswith("tlkit_")]

__all__ = [
    "hookimpl",
    "hookspec",
    "HOOK_NAMES",
    "OwnOptimizer",
    "PROJECT",
    "SourcePreview",
    "TrainerView",
] + HOOK_NAMES
