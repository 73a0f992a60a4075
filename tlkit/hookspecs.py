"""The plugin contract: every hook a tlkit strategy or observer may implement.

A *strategy* is any object -- a class, an instance or a module -- with a ``name``, a ``family`` and
one or more functions marked ``@tlkit.hookimpl`` whose names are the hooks below. The engine never
names a strategy: for each run it registers the strategies the user asked for (plus the observers,
e.g. the progress bar) in a fresh, run-scoped :class:`pluggy.PluginManager`, and calls these hooks
at fixed points of the training step.

Conventions, as in pytest's hook module:

* Hooks are called with keyword arguments only; an implementation may accept any subset of a
  hook's arguments (pluggy passes only the ones it names).
* *firstresult* hooks stop at the first implementation that returns something other than
  ``None``; the others collect every non-``None`` result in a list.
* Implementations registered later run first; ``@hookimpl(tryfirst=True)`` / ``trylast`` reorder.

The objects the hooks receive:

* ``trainer`` -- the :class:`tlkit.Trainer` running the fit: ``trainer.model``,
  ``trainer.config``, ``trainer.device``, ``trainer.num_classes``, ``trainer.state``
  (``epoch``, ``step``, ``total_steps``, ``progress`` in [0, 1]).
* ``step`` -- a :class:`tlkit.engine.Step` for one optimisation step: source images ``step.x``
  ``(B, C, H, W)`` and labels ``step.y`` ``(B,)``; target images ``step.x_target`` ``(B_t, C, H, W)``
  or ``None``; after the forward pass ``step.features`` ``(B, D)`` / ``step.logits`` ``(B, K)``
  and ``step.target_features`` / ``step.target_logits`` (``None`` without a target batch);
  ``step.index`` (global step), ``step.epoch``, ``step.progress`` in [0, 1].
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # pragma: no cover - imported for annotations only
    import torch
    from torch import nn

    from tlkit.engine.trainer import PseudoLabels, Step, Trainer

PROJECT = "tlkit"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# -- setup ------------------------------------------------------------------------------------
@hookspec
def tlkit_setup(trainer: Trainer) -> nn.Module | None:
    """Prepare a strategy for a run; called once, before the first step (also when resuming).

    It runs before a resumed run restores its checkpoint: the model then holds its starting
    weights (pretrained, or the seeded initialisation), and the returned module's weights are
    restored from the checkpoint afterwards. Keep state that must survive a resume in the module.

    Use it to build modules the strategy trains alongside the model, such as a domain
    discriminator. Return such a module (or ``None``): the engine moves it to the device, adds its
    parameters to the optimizer at the head's learning rate, wraps it for distributed training
    and saves/restores its weights in checkpoints under the strategy's name.

    :param trainer: the trainer; ``trainer.model`` and ``trainer.num_classes`` are ready.
    :return: an ``nn.Module`` to train, or ``None``. All results are used (not firstresult).
    """


@hookspec(firstresult=True)
def tlkit_wants_target(trainer: Trainer) -> bool | None:
    """Whether this strategy needs the unlabelled target batch in the forward pass.

    The engine feeds target images through the network (in the same forward call as the source,
    so BatchNorm sees both) only when some active strategy returns ``True``; source-only runs
    keep BatchNorm statistics clean of target data.

    :param trainer: the trainer, before the epoch starts (asked once per epoch).
    :return: ``True`` to request the target batch. firstresult: the first non-``None`` wins.
    """


# -- losses -----------------------------------------------------------------------------------
@hookspec(firstresult=True)
def tlkit_supervised_loss(
    logits: torch.Tensor, targets: torch.Tensor, step: Step
) -> torch.Tensor | None:
    """The per-sample loss on labelled data. firstresult: exactly one loss strategy answers.

    Also used for pseudo-labelled target samples, so it must accept any ``targets`` of the
    task's kind.

    :param logits: model outputs ``(B, K)`` (classification) or ``(B, D)`` (regression).
    :param targets: class ids ``(B,)`` (int64) or regression targets ``(B,)`` / ``(B, D)``.
    :param step: the current :class:`Step` (for schedules depending on ``step.progress``).
    :return: per-sample losses ``(B,)``; the engine averages them. firstresult.
    """


@hookspec(firstresult=True)
def tlkit_pseudo_labels(step: Step) -> PseudoLabels | None:
    """Targets for the unlabelled batch. firstresult: one pseudo-labelling strategy answers.

    Called after the forward pass when a target batch exists. The engine applies the supervised
    loss to ``PseudoLabels.logits`` (the target logits unless the strategy gives its own, e.g.
    of a strongly augmented view) against ``PseudoLabels.targets``, weighted per sample by
    ``PseudoLabels.weights``, and logs it as ``pseudo_label``; it also logs the mask rate
    (fraction of weights > 0) and, when the clean target labels are known, pseudo-label accuracy.

    :param step: the step, with ``step.target_logits`` ``(B_t, K)``.
    :return: a :class:`PseudoLabels` or ``None`` to skip this step. firstresult.
    """


@hookspec
def tlkit_extra_losses(step: Step) -> dict[str, torch.Tensor] | None:
    """Additional loss terms (domain alignment, regularisers...). Every result is used.

    :param step: the step after the forward pass.
    :return: a mapping ``{term name: scalar tensor}``, already weighted; the engine adds all terms
        to the loss and logs each under its name. ``None`` adds nothing. All results are used
        (not firstresult); two strategies may not use the same term name.
    """


# -- evaluation -------------------------------------------------------------------------------
@hookspec
def tlkit_before_evaluate(trainer: Trainer) -> None:
    """Called at the end of each epoch, just before the held-out sets are evaluated.

    Strategies that change the model for inference do it here; AdaBN, for one, re-estimates
    BatchNorm statistics on the target data.

    :param trainer: the trainer; ``trainer.model`` is the model about to be evaluated.
    :return: nothing. Every implementation is called (not firstresult).
    """


@hookspec
def tlkit_target_scores(
    trainer: Trainer, logits: torch.Tensor, features: torch.Tensor
) -> dict[str, float] | None:
    """Unsupervised model-selection scores on the unlabelled target training set, each epoch.

    Only called when the task has a target and some active strategy implements it. The scores
    join the epoch's history row under their names (e.g. ``score_entropy``), so
    ``monitor="score_entropy"`` can pick the checkpoint without target labels.

    :param trainer: the trainer.
    :param logits: model outputs on every target training sample, ``(N_t, K)``, on CPU.
    :param features: backbone features of the same samples, ``(N_t, D)``, on CPU.
    :return: ``{name: value}`` where higher is better, or ``None``. All results are used
        (not firstresult).
    """


# -- annotation (active learning) ------------------------------------------------------------
@hookspec(firstresult=True)
def tlkit_query_scores(probs: torch.Tensor, features: torch.Tensor) -> torch.Tensor | None:
    """How much a person's label for each unlabelled sample would help; the annotation assistant
    asks about the highest-scoring samples first.

    Called by :mod:`tlkit.notebook.annotate` (not by the training loop) with the current model's
    predictions on the unlabelled pool.

    :param probs: class probabilities ``(N, K)`` on CPU.
    :param features: backbone features ``(N, D)`` on CPU (for diversity-based strategies).
    :return: scores ``(N,)``, higher = ask first. firstresult: one query strategy answers.
    """


# -- observers --------------------------------------------------------------------------------
@hookspec
def tlkit_on_fit_start(trainer: Trainer) -> None:
    """Called once before training starts (after :func:`tlkit_setup`), also when resuming.

    :param trainer: the trainer; ``trainer.state`` says where a resumed run starts.
    :return: nothing. Every implementation is called (not firstresult).
    """


@hookspec
def tlkit_on_step_end(trainer: Trainer, step: Step, logs: dict[str, float]) -> None:
    """Called after each optimiser step.

    :param trainer: the trainer; ``trainer.state.step`` counts the steps done.
    :param step: the :class:`Step` just taken (with its outputs).
    :param logs: the step's scalars (``loss``, each loss term, ``lr``...). They are synchronised
        from the device every ``config.log_every`` steps; between syncs ``logs`` is empty, so
        observers that draw should draw when it is not.
    :return: nothing. Every implementation is called (not firstresult).
    """


@hookspec
def tlkit_on_epoch_end(trainer: Trainer, epoch: int, metrics: dict[str, Any]) -> None:
    """Called after each epoch's evaluation with that epoch's row of the history.

    :param trainer: the trainer.
    :param epoch: the epoch just finished, counting from 1.
    :param metrics: ``epoch``, ``train_loss``, every loss term, ``source_accuracy`` /
        ``target_accuracy`` (or ``*_mae`` / ``*_rmse`` for regression) and ``lr``.
    :return: nothing. Every implementation is called (not firstresult).
    """


@hookspec
def tlkit_on_fit_end(trainer: Trainer, history: list[dict[str, Any]]) -> None:
    """Called once when training ends: normally, by a stop request, or by an error.

    :param trainer: the trainer; ``trainer.state.stopped_early`` tells a stop from an end.
    :param history: the per-epoch rows recorded so far.
    :return: nothing. Every implementation is called (not firstresult).
    """


@hookspec(firstresult=True)
def tlkit_should_stop(trainer: Trainer) -> bool | None:
    """Polled at every step boundary; ``True`` ends training there (a Stop button).

    The engine saves a checkpoint when a checkpoint folder is set and returns the run as it is.

    :param trainer: the trainer, between two steps.
    :return: ``True`` to stop. firstresult: the first non-``None`` answer wins.
    """


HOOK_NAMES = [name for name in dir() if name.startswith("tlkit_")]

__all__ = ["hookimpl", "hookspec", "HOOK_NAMES", "PROJECT"] + HOOK_NAMES
