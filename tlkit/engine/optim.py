"""Optimisation: phases, parameter groups, learning rates, and the optimiser steps themselves.

A run has one or two *phases*: ``"frozen"`` (backbone fixed, only the head and strategy modules
train) and ``"unfrozen"`` (everything trains, with discriminative learning rates). ``fine_tune``
runs ``freeze_epochs`` frozen epochs then unfrozen ones; ``feature_extraction`` is frozen
throughout; ``full`` is unfrozen throughout. Each phase gets a fresh optimiser and its own
learning-rate schedule (warm-up, then decay over the phase), which is also what a resumed run
rebuilds: the phase is a function of the epoch. A checkpoint records which phase its optimiser
state belongs to, so that a run resumed in the next phase starts that phase's optimiser afresh.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from tlkit.engine import distributed, hooks
from tlkit.engine.config import FitConfig
from tlkit.engine.schedules import lr_multiplier

FROZEN, UNFROZEN = "frozen", "unfrozen"


def phase_of(config: FitConfig, epoch: int) -> str:
    """The phase of the epoch with 0-based index ``epoch``."""
    if config.mode == "feature_extraction":
        return FROZEN
    if config.mode == "fine_tune" and epoch < config.freeze_epochs:
        return FROZEN
    return UNFROZEN


def phase_span(config: FitConfig, phase: str, steps_per_epoch: int) -> tuple[int, int]:
    """``(first step, number of steps)`` of ``phase``: its schedule runs over that span."""
    if config.mode != "fine_tune":
        return 0, max(1, config.epochs * steps_per_epoch)
    frozen = min(config.freeze_epochs, config.epochs)
    if phase == FROZEN:
        return 0, max(1, frozen * steps_per_epoch)
    return frozen * steps_per_epoch, max(1, (config.epochs - frozen) * steps_per_epoch)


def param_groups(
    model: nn.Module,
    extra_modules: dict[str, nn.Module],
    config: FitConfig,
    *,
    backbone_trainable: bool,
    model_weight_decay: float,
) -> list[dict[str, Any]]:
    """Discriminative learning rates: backbone groups get rates spaced geometrically from
    ``lr / lr_spread`` (earliest layers) up to ``lr`` (the head). No decay on 1-d parameters
    (biases, norms). ``model_weight_decay`` is 0 when a strategy ``replaces_weight_decay``
    (L2-SP: its own penalty takes the place of the optimiser's pull towards 0)."""
    blocks: list[tuple[list[nn.Parameter], float, float]] = []
    if backbone_trainable:
        groups = model.backbone.layer_groups()
        lrs = np.geomspace(config.lr / config.lr_spread, config.lr, len(groups) + 1)[:-1]
        blocks += [(g, lr, model_weight_decay) for g, lr in zip(groups, lrs)]
    blocks.append((list(model.head.parameters()), config.lr, model_weight_decay))
    own = {id(p) for p in own_optimizer_params(extra_modules)}
    for module in extra_modules.values():  # e.g. a domain discriminator
        params = [p for p in module.parameters() if id(p) not in own]
        blocks.append((params, config.lr, config.weight_decay))
    out = []
    for params, lr, weight_decay in blocks:
        params = [p for p in params if p.requires_grad]
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]
        for ps, wd in ((decay, weight_decay), (no_decay, 0.0)):
            if ps:
                out.append(
                    {"params": ps, "lr": float(lr), "base_lr": float(lr), "weight_decay": wd}
                )
    return out


def own_optimizer_params(extra_modules: dict[str, nn.Module]) -> list[nn.Parameter]:
    """Parameters of strategy (sub-)modules marked ``own_optimizer = True``: trained by a second
    optimiser on ``tlkit_adversary_losses``, never by the main one."""
    out, seen = [], set()
    for module in extra_modules.values():
        for m in module.modules():
            if getattr(m, "own_optimizer", False):
                for p in m.parameters():
                    if id(p) not in seen:
                        seen.add(id(p))
                        out.append(p)
    return out


def make_optimizer(groups: list[dict[str, Any]], config: FitConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=0.9, nesterov=True)
    return torch.optim.AdamW(groups, lr=config.lr)


def restore_optimizer(
    optimizer: torch.optim.Optimizer, state: dict[str, Any], fresh_groups: list[dict[str, Any]]
) -> None:
    """Load a saved optimiser state (moments, step counts) into ``optimizer``, keeping the
    learning rates and weight decay of ``fresh_groups``: the hyper-parameters are this run's
    config (a resume may lower ``lr``), the moments are the checkpoint's."""
    optimizer.load_state_dict(state)
    for group, fresh in zip(optimizer.param_groups, fresh_groups):
        for key in ("lr", "base_lr", "weight_decay"):
            group[key] = fresh[key]


def set_learning_rates(
    optimizer: torch.optim.Optimizer, config: FitConfig, step: int, span: tuple[int, int]
) -> None:
    """Each group's rate for global step ``step``: ``base_lr`` times the schedule's multiplier
    within the current phase's span."""
    start, length = span
    mult = lr_multiplier(config.schedule, step - start, length, config.warmup)
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * mult


# -- the optimiser steps of a training step ----------------------------------------------------
def step(trainer: Any, loss: torch.Tensor) -> None:
    """Backward, gradient clipping and the optimiser step (fp16 loss scaling on CUDA), then the
    EMA update; strategy modules' gradients are averaged across processes."""
    cfg, optimizer, scaler = trainer.config, trainer.optimizer, trainer.scaler
    optimizer.zero_grad(set_to_none=True)
    set_learning_rates(optimizer, cfg, trainer.state.step, trainer.phase_span)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    sync_module_grads(trainer)
    if cfg.grad_clip is not None:
        params = [p for g in optimizer.param_groups for p in g["params"]]
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    if trainer.ema is not None:
        trainer.ema.update(trainer.model)


def adversary_step(trainer: Any, step: Any, taken: Any = ()) -> None:
    """A second optimiser step for strategy modules marked ``own_optimizer`` (a GAN's
    discriminator) on the losses their strategy returns from ``tlkit_adversary_losses``."""
    optimizer = trainer.adversary_optimizer
    if optimizer is None:
        return
    losses = hooks.adversary_losses(trainer.pm, step, taken)
    if not losses:
        return
    optimizer.zero_grad(set_to_none=True)  # drop the gradients the main loss left there
    set_learning_rates(optimizer, trainer.config, trainer.state.step, trainer.phase_span)
    torch.stack(list(losses.values())).sum().backward()
    sync_module_grads(trainer)
    optimizer.step()
    for name, value in losses.items():
        step.log(name, value.detach())


def sync_module_grads(trainer: Any) -> None:
    """Strategy modules live outside DDP: average their gradients across ranks by hand."""
    if not trainer.dist.enabled:
        return
    for module in trainer.extra_modules.values():
        for p in module.parameters():
            if p.grad is not None:
                p.grad.copy_(distributed.all_reduce_mean(p.grad, trainer.dist))
