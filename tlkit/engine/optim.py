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

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from tlkit.engine import distributed, hooks
from tlkit.engine.config import FitConfig
from tlkit.engine.schedules import lr_multiplier
from tlkit.errors import CheckpointError, ConfigError
from tlkit.step import OwnOptimizer

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


def make_optimizer(groups: list[dict[str, Any]], config: FitConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=0.9, nesterov=True)
    return torch.optim.AdamW(groups, lr=config.lr)


def restore_optimizer(
    optimizer: torch.optim.Optimizer, state: dict[str, Any], fresh_groups: list[dict[str, Any]]
) -> None:
    """Load a saved optimiser state (moments, step counts) into ``optimizer``, keeping the
    learning rates, weight decay (and Adam betas) of ``fresh_groups``: the hyper-parameters are
    this run's (a resume may lower ``lr``), the moments are the checkpoint's."""
    optimizer.load_state_dict(state)
    for group, fresh in zip(optimizer.param_groups, fresh_groups):
        for key in ("lr", "base_lr", "weight_decay", "betas"):
            if key in fresh:
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


# -- the optimisation of a run ---------------------------------------------------------------
@dataclass
class Owned:
    """A strategy module trained apart from the model, and its optimiser. ``settings`` is
    ``None`` for ``own_optimizer = True`` (the run's optimiser, rate and schedule)."""

    name: str
    settings: OwnOptimizer | None
    params: list[nn.Parameter]
    optimizer: torch.optim.Optimizer

    @property
    def loss(self) -> str:
        return self.settings.loss if self.settings is not None else "adversary"

    @property
    def steps(self) -> int:
        return self.settings.steps if self.settings is not None else 1


def owned_modules(
    extra_modules: dict[str, nn.Module],
) -> list[tuple[str, OwnOptimizer | None, list[nn.Parameter]]]:
    """``(name, settings, parameters)`` of each strategy (sub-)module declaring
    ``own_optimizer`` (the outermost declaration claims a parameter). The ``True`` ones come
    first as one entry: they share one optimiser."""
    shared: list[nn.Parameter] = []
    own: list[tuple[str, OwnOptimizer | None, list[nn.Parameter]]] = []
    seen: set[int] = set()
    for strategy, module in extra_modules.items():
        for path, m in module.named_modules():
            name = f"{strategy}.{path}" if path else strategy
            settings = hooks.own_settings(m, f"strategy '{strategy}', module '{name}'")
            if settings is False:
                continue
            params = [p for p in m.parameters() if id(p) not in seen]
            seen.update(id(p) for p in params)
            if settings is None:
                shared += params
            elif params:
                own.append((name, settings, params))
    return ([("adversary", None, shared)] if shared else []) + own


def own_optimizer_params(extra_modules: dict[str, nn.Module]) -> list[nn.Parameter]:
    """Parameters of strategy modules declaring ``own_optimizer``: never in the main
    optimiser."""
    return [p for _, _, params in owned_modules(extra_modules) for p in params]


class Optimisation:
    """The optimisers of one run and their steps.

    It owns the main optimiser (built afresh for each phase, over :func:`param_groups`), the
    learning-rate span of the phase, the optimisers of strategy modules that declare
    ``own_optimizer``, the fp16 loss scaler, and the optimiser state a checkpoint brought until
    the run enters the phase it was saved in.

    Args:
        config: the run's options.
        model: the model being trained.
        extra_modules: the strategies' modules, by strategy name.
        dist: the process group (strategy modules' gradients are averaged across it).
        ema: the run's EMA, updated after each main step, or ``None``.
        fp16: scale the loss (fp16 training on CUDA).
    """

    def __init__(
        self,
        config: FitConfig,
        model: nn.Module,
        extra_modules: dict[str, nn.Module],
        dist: Any,
        *,
        ema: Any = None,
        fp16: bool = False,
    ) -> None:
        self.config, self.model, self.extra_modules = config, model, extra_modules
        self.dist, self.ema = dist, ema
        self.optimizer: torch.optim.Optimizer | None = None
        self.phase: str | None = None
        self.span = (0, 1)
        self.scaler = torch.amp.GradScaler("cuda") if fp16 else None
        self.owned = [
            Owned(name, s, params, _own_optimizer(params, s, config))
            for name, s, params in owned_modules(extra_modules)
        ]
        self._saved: tuple[str | None, Any] | None = None  # (phase, main optimiser state)

    @property
    def adversary_optimizer(self) -> torch.optim.Optimizer | None:
        """The shared optimiser of the ``own_optimizer = True`` modules, or ``None``."""
        shared = [o for o in self.owned if o.settings is None]
        return shared[0].optimizer if shared else None

    # -- phases ------------------------------------------------------------------------------
    def enter_phase(
        self,
        phase: str,
        *,
        backbone_trainable: bool,
        model_weight_decay: float,
        steps_per_epoch: int,
    ) -> None:
        """A fresh main optimiser for ``phase``; the checkpoint's state when saved in it."""
        cfg = self.config
        self.phase = phase
        self.span = phase_span(cfg, phase, steps_per_epoch)
        groups = param_groups(
            self.model,
            self.extra_modules,
            cfg,
            backbone_trainable=backbone_trainable,
            model_weight_decay=model_weight_decay,
        )
        if not groups:
            raise ConfigError(
                f"nothing would train in the {phase} phase: the backbone is frozen (mode="
                f"'{cfg.mode}') and the head and strategy modules have no trainable "
                "parameter (a strategy froze the head?). Use mode='full'."
            )
        fresh = [{k: v for k, v in g.items() if k != "params"} for g in groups]
        self.optimizer = make_optimizer(groups, cfg)
        saved, self._saved = self._saved, None
        if saved is not None and saved[0] == phase and saved[1] is not None:
            try:
                restore_optimizer(self.optimizer, saved[1], fresh)
            except (ValueError, KeyError) as exc:
                raise CheckpointError(
                    f"the optimizer state in the checkpoint does not fit this run ({exc}); "
                    "resume with the strategies and mode it was written with."
                ) from None

    # -- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The checkpoint's optimisation part: ``optimizer`` (with ``optimizer_phase``),
        ``adversary_optimizer``, ``own_optimizers`` (by module) and ``scaler``."""
        shared = self.adversary_optimizer
        own = {o.name: o.optimizer.state_dict() for o in self.owned if o.settings is not None}
        return {
            "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None,
            "optimizer_phase": self.phase,
            "adversary_optimizer": shared.state_dict() if shared is not None else None,
            "own_optimizers": own or None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
        }

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s parts. The strategy modules' optimisers and the scaler
        load now; the main optimiser's state when the run enters the phase it was saved in.
        Learning rates, betas and weight decay stay this run's: a resume may change them."""
        if self.scaler is not None and saved.get("scaler"):
            self.scaler.load_state_dict(saved["scaler"])
        own = saved.get("own_optimizers") or {}
        for o in self.owned:
            state = saved.get("adversary_optimizer") if o.settings is None else own.get(o.name)
            if state:
                fresh = [{k: v for k, v in g.items() if k != "params"} for g in o.optimizer.param_groups]
                restore_optimizer(o.optimizer, state, fresh)
        self.keep_for_phase(saved.get("optimizer_phase"), saved.get("optimizer"))

    def keep_for_phase(self, phase: str | None, state: Any) -> None:
        """Keep a checkpoint's main optimiser state until the run enters ``phase``."""
        self._saved = (phase, state)

    # -- the steps of a training step --------------------------------------------------------
    def step(self, loss: torch.Tensor, index: int) -> None:
        """Backward, gradient clipping and the main optimiser step (fp16 loss scaling on CUDA),
        the steps of modules trained on the main loss with their own optimiser, then the EMA
        update; strategy modules' gradients are averaged across processes."""
        cfg, optimizer, scaler = self.config, self.optimizer, self.scaler
        on_main = [o.optimizer for o in self.owned if o.loss == "main"]
        optimizer.zero_grad(set_to_none=True)
        for own in on_main:
            own.zero_grad(set_to_none=True)
        set_learning_rates(optimizer, cfg, index, self.span)
        if scaler is not None:
            scaler.scale(loss).backward()
            for opt in (optimizer, *on_main):
                scaler.unscale_(opt)
        else:
            loss.backward()
        self.sync_module_grads()
        if cfg.grad_clip is not None:
            params = [p for g in optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        for opt in (optimizer, *on_main):
            if scaler is not None:
                scaler.step(opt)
            else:
                opt.step()
        if scaler is not None:
            scaler.update()
        if self.ema is not None:
            self.ema.update(self.model)

    def adversary_step(self, pm: Any, step: Any, index: int, taken: Any = ()) -> None:
        """The steps of modules trained on ``tlkit_adversary_losses`` (a GAN's discriminator):
        as many rounds as the largest ``steps``, each asking the hook again."""
        adversaries = [o for o in self.owned if o.loss == "adversary"]
        for round_ in range(max((o.steps for o in adversaries), default=0)):
            losses = hooks.adversary_losses(pm, step, taken)
            if not losses:
                return
            active = [o for o in adversaries if o.steps > round_]
            for o in active:
                o.optimizer.zero_grad(set_to_none=True)  # drop what the main loss left there
                if o.settings is None:  # the run's schedule
                    set_learning_rates(o.optimizer, self.config, index, self.span)
            torch.stack(list(losses.values())).sum().backward()
            self.sync_module_grads()
            for o in active:
                o.optimizer.step()
            for name, value in losses.items():
                step.log(name, value.detach())

    def sync_module_grads(self) -> None:
        """Strategy modules live outside DDP: average their gradients across ranks by hand."""
        if not self.dist.enabled:
            return
        for module in self.extra_modules.values():
            for p in module.parameters():
                if p.grad is not None:
                    p.grad.copy_(distributed.all_reduce_mean(p.grad, self.dist))


def _own_optimizer(
    params: list[nn.Parameter], settings: OwnOptimizer | None, config: FitConfig
) -> torch.optim.Optimizer:
    if settings is None:  # the run's optimiser, rate and schedule
        group = {"params": params, "lr": config.lr, "base_lr": config.lr, "weight_decay": 0.0}
        return make_optimizer([group], config)
    group = {
        "params": params,
        "lr": settings.lr,
        "base_lr": settings.lr,
        "weight_decay": settings.weight_decay,
        "betas": settings.betas,
    }
    return torch.optim.AdamW([group], lr=settings.lr)
