"""The training loop. It knows no strategy: losses, pseudo-labels and extra terms come from hooks.

One step:  source batch (+ target batch when a strategy asks) -> one forward pass ->
``tlkit_supervised_loss`` + ``tlkit_pseudo_labels`` + ``tlkit_extra_losses`` -> one backward /
optimiser step (autocast on CUDA, gradient clipping, EMA) -> ``tlkit_on_step_end``.
Each epoch: evaluation on the held-out sets -> history row -> ``tlkit_on_epoch_end`` ->
checkpoints (``last.pt`` always, ``best.pt`` when the monitored metric improves).

Reproducibility and resuming: the data order of epoch ``e`` and the random state of step ``s`` are
pure functions of ``(seed, e)`` and ``(seed, s)``, so a run resumed from a checkpoint written after
any step replays exactly what the uninterrupted run would have done.
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tlkit import registry
from tlkit.backbones import create_model
from tlkit.backbones.base import TransferModel
from tlkit.datasets.domain import DataError, Domain, DomainPair
from tlkit.engine import distributed
from tlkit.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from tlkit.engine.config import ConfigError, FitConfig
from tlkit.engine.ema import EMA
from tlkit.engine.evaluate import (
    autocast_for,
    metrics_from_outputs,
    predict_features,
    predict_outputs,
    restore_training_modes,
    training_modes,
)
from tlkit.engine.schedules import lr_multiplier

#: Keep the whole dataset on the accelerator when it is smaller than this (bytes).
ON_DEVICE_DATA_LIMIT = 2 * 1024**3


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss diverged); the message says where and what to do."""


@dataclass
class PseudoLabels:
    """What a pseudo-labelling strategy returns for a target batch of ``B_t`` samples.

    Attributes:
        targets: class ids ``(B_t,)`` int64, or class probabilities ``(B_t, K)`` float (soft
            targets; the first-party losses accept both).
        weights: per-sample weights ``(B_t,)``; 0 masks a sample out.
        logits: the outputs the loss is applied to, ``(B_t, K)``; ``None`` means
            ``step.target_logits``. FixMatch passes the logits of a strongly augmented view.
    """

    targets: torch.Tensor
    weights: torch.Tensor
    logits: torch.Tensor | None = None


@dataclass
class TrainState:
    """Where training is: the only state besides weights that a checkpoint must restore."""

    epoch: int = 0
    step: int = 0
    step_in_epoch: int = 0
    total_steps: int = 1
    stopped_early: bool = False

    @property
    def progress(self) -> float:
        return min(1.0, self.step / max(1, self.total_steps))


@dataclass
class Step:
    """One optimisation step as the hooks see it (see :mod:`tlkit.hookspecs`)."""

    trainer: Trainer
    index: int
    epoch: int
    progress: float
    x: torch.Tensor | None
    y: torch.Tensor
    x_target: torch.Tensor | None = None
    y_target_true: torch.Tensor | None = None
    features: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    target_features: torch.Tensor | None = None
    target_logits: torch.Tensor | None = None
    stats: dict[str, torch.Tensor] = field(default_factory=dict)
    stat_weights: dict[str, torch.Tensor | float] = field(default_factory=dict)

    @property
    def model(self) -> TransferModel:
        return self.trainer.model

    def log(self, name: str, value: torch.Tensor, weight: torch.Tensor | float = 1.0) -> None:
        """Record a diagnostic scalar (logged every ``log_every`` steps and averaged per epoch
        into the history). Averages are weighted: pass ``weight`` = how many samples ``value``
        was measured on when that changes from step to step -- e.g. the pseudo-labels a
        threshold admits -- so a step that measured nothing does not pull the mean down."""
        self.stats[name] = value
        self.stat_weights[name] = weight

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features, logits)`` of extra images (e.g. a strongly augmented view) through the
        same network and precision as the step's own forward pass, with gradients."""
        t = self.trainer
        inputs = t.model.prepare(images)
        if t._channels_last():
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with autocast_for(t.device, t.precision):
            return t.forward(inputs)


class _Network(nn.Module):
    """What one forward pass runs (and DDP wraps): backbone (unless features are cached) + head."""

    def __init__(self, model: TransferModel) -> None:
        super().__init__()
        self.model = model
        self.cached = False
        self.backbone_trainable = True

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cached:
            features = inputs
        else:
            with torch.set_grad_enabled(self.backbone_trainable and torch.is_grad_enabled()):
                features = self.model.backbone(inputs)
        return features, self.model.head(features)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pick_device(name: str, info: distributed.DistInfo) -> torch.device:
    if name != "auto":
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError("device='cuda' was asked for but no CUDA GPU is visible; use 'cpu'.")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda", info.local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def as_pair(data: DomainPair | Domain) -> DomainPair:
    if isinstance(data, DomainPair):
        return data
    if isinstance(data, Domain):
        return DomainPair(source=data, name=data.name)
    raise DataError(
        f"fit() needs a tlkit.datasets.Domain or DomainPair, got {type(data).__name__}. Build one "
        "with tlkit.datasets.load(name), from_arrays(images, labels) or from_folder(path)."
    )


class Trainer:
    """Runs one fit: ``Trainer(data, config).fit()`` returns a :class:`tlkit.Run`.

    Args:
        data: a :class:`DomainPair` (or a single labelled :class:`Domain`).
        config: a :class:`FitConfig`; or pass its fields as keyword arguments.
        model: a ready :class:`TransferModel` (else one is built from ``config.backbone``).
        observers: extra plugin objects for this run only (progress widgets, loggers...).
    """

    def __init__(
        self,
        data: DomainPair | Domain,
        config: FitConfig | None = None,
        *,
        model: TransferModel | nn.Module | None = None,
        observers: tuple[Any, ...] | list[Any] = (),
        **options: Any,
    ) -> None:
        if config is None:
            config = FitConfig(**options)
        elif options:
            raise ConfigError("pass either config= or keyword options, not both.")
        self.config = config
        self.data = as_pair(data)
        self.dist = distributed.from_env()
        self.device = pick_device(config.device, self.dist)
        self.task = self.data.task
        self.num_classes = self.data.num_classes
        self.precision = self._pick_precision()
        self.is_main = self.dist.is_main
        seed_everything(config.seed)
        self.model = self._build_model(model)
        if config.mode == "auto":  # freezing only makes sense for weights worth keeping
            pretrained = bool(getattr(self.model.backbone, "pretrained", False))
            mode = "fine_tune" if pretrained else "full"
            self.config = config = dataclasses.replace(config, mode=mode)
        self.pm = registry.make_plugin_manager(
            self._selected_strategies(), self._observers(observers)
        )
        self.state = TrainState()
        self.history: list[dict[str, Any]] = []
        self.step_logs: list[dict[str, float]] = []
        self.best: dict[str, Any] = {"value": None, "epoch": None}
        self.extra_modules: dict[str, nn.Module] = {}
        self.ema: EMA | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.scaler: torch.amp.GradScaler | None = None
        self._stop_requested = False

    # -- construction ----------------------------------------------------------------------
    def _pick_precision(self) -> str:
        p = self.config.precision
        if p == "auto":
            if self.device.type == "cuda" and torch.cuda.is_bf16_supported():
                return "bf16"
            return "fp32"
        if p == "fp16" and self.device.type != "cuda":
            raise ConfigError("precision='fp16' needs a CUDA GPU; on CPU use 'fp32' or 'bf16'.")
        return p

    def _build_model(self, model: TransferModel | nn.Module | None) -> TransferModel:
        cfg = self.config
        out = self.num_classes
        if model is None or not isinstance(model, TransferModel):
            model = create_model(
                model if model is not None else cfg.backbone,
                out,
                task=self.task,
                pretrained=cfg.pretrained,
                dropout=cfg.dropout,
                weights=cfg.backbone_weights,
                input_size=cfg.image_size,
            )
        if model.out_features != out:
            what = "classes" if self.task == "classification" else "regression outputs"
            raise DataError(
                f"the model's head has {model.out_features} outputs but the data has {out} "
                f"{what}. Build the model for {out} outputs (tlkit.backbones.create_model(..., "
                f"num_classes={out})) or let fit() build it."
            )
        if model.task != self.task:
            raise DataError(
                f"the model is built for {model.task} but the data is a {self.task} task."
            )
        return model

    def _selected_strategies(self) -> list[tuple[registry.StrategyInfo, dict[str, Any]]]:
        cfg = self.config
        loss = cfg.loss
        if loss == "auto":
            loss = "cross_entropy" if self.task == "classification" else "mse"
        losses = registry.normalize_selection(loss)
        if len(losses) != 1:
            raise ConfigError(
                f"loss= takes exactly one supervised loss, got {[n for n, _ in losses]}. "
                "Two supervised losses cannot both answer; pick one."
            )
        pseudo = registry.normalize_selection(cfg.pseudo_label)
        if len(pseudo) > 1:
            raise ConfigError(
                f"pseudo_label= takes one strategy at a time, got {[n for n, _ in pseudo]}."
            )
        if (pseudo or cfg.adapt or cfg.validate) and self.data.target is None:
            raise ConfigError(
                "pseudo_label=, adapt= and validate= use unlabelled target data, but this task has "
                "no target. Use a pair such as tlkit.datasets.load('synth-digits->digits') or "
                "tlkit.datasets.few_labels(task, k)."
            )
        picked: list[tuple[registry.StrategyInfo, dict[str, Any]]] = []
        for family, selection in (
            ("loss", losses),
            ("pseudo_label", pseudo),
            ("adapt", registry.normalize_selection(cfg.adapt)),
            ("regularizer", registry.normalize_selection(cfg.regularize)),
            ("validator", registry.normalize_selection(cfg.validate)),
        ):
            for name, opts in selection:
                info = registry.get(name, family)
                if any(p.name == info.name for p, _ in picked):
                    raise ConfigError(f"strategy '{name}' is selected twice.")
                picked.append((info, opts))
        return picked

    def _observers(self, observers: Any) -> list[Any]:
        extra = list(observers)
        if self.config.progress and self.is_main:
            from tlkit.engine.progress import ProgressBar

            extra.insert(0, ProgressBar())
        return extra

    def predict_outputs(
        self, images: torch.Tensor, *, batch_size: int | None = None
    ) -> torch.Tensor:
        """Outputs ``(N, K)`` of the model being trained for uint8 images ``(N, C, H, W)``, in
        eval mode and on CPU; the training mode is restored afterwards. For observers that follow
        predictions during training (e.g. how many noisy labels are memorised, epoch by epoch)."""
        return predict_outputs(
            self.model,
            images,
            batch_size=batch_size or self.config.eval_batch_size,
            precision=self.precision,
        )

    def request_stop(self) -> None:
        """Ask training to end at the next step boundary (thread-safe; used by Stop buttons)."""
        self._stop_requested = True

    # -- the run ---------------------------------------------------------------------------
    def fit(self, resume: str | Path | bool | None = None):
        """Train; ``resume`` is a checkpoint path (or ``True`` for ``checkpoint_dir/last.pt``)."""
        with torch.enable_grad():  # also when called under torch.no_grad() / inference code
            return self._fit(resume)

    def _fit(self, resume: str | Path | bool | None):
        from tlkit.run import Run

        cfg = self.config
        distributed.setup(self.dist, self.device)
        self.model.to(self.device)
        if self.device.type == "cuda" and self._channels_last():
            self.model.to(memory_format=torch.channels_last)
        self.net = _Network(self.model)
        self._prepare_data()
        self._call_setup()
        if cfg.ema is not None:
            self.ema = EMA(self.model, cfg.ema)
        if self.precision == "fp16":
            self.scaler = torch.amp.GradScaler("cuda")
        self.steps_per_epoch = self._steps_per_epoch()
        self.state.total_steps = cfg.epochs * self.steps_per_epoch
        checkpoint = self._load_resume(resume) if resume else None
        registry.call_hook(self.pm, "tlkit_on_fit_start", trainer=self)
        phase = None
        try:
            while self.state.epoch < cfg.epochs:
                epoch = self.state.epoch
                if self._phase(epoch) != phase:
                    phase = self._phase(epoch)
                    self._configure_phase(phase)
                    if checkpoint is not None:
                        self._restore_optimizer(checkpoint)
                        checkpoint = None
                if not self._train_epoch(epoch):
                    break
                self._end_epoch(epoch)
        finally:
            registry.call_hook(self.pm, "tlkit_on_fit_end", trainer=self, history=self.history)
        return Run.from_trainer(self)

    # -- data ------------------------------------------------------------------------------
    def _prepare_data(self) -> None:
        src = self.data.source
        labelled = src.labelled_mask.nonzero().flatten()
        if len(labelled) == 0:
            raise DataError("the source has no labelled samples to train on.")
        self.source_images = self._to_device(src.images[labelled])
        self.source_labels = src.labels[labelled].to(self.device)
        tgt = self.data.target
        self.target_images = self._to_device(tgt.images) if tgt is not None else None
        self.target_true = tgt.clean_labels.to(self.device) if tgt is not None else None
        self.feature_cache: dict[str, torch.Tensor] = {}

    def _to_device(self, images: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cpu":
            return images
        if images.numel() < ON_DEVICE_DATA_LIMIT:
            return images.to(self.device)
        return images.pin_memory()

    def _batch(self, images: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        batch = images[idx.to(images.device)]
        return batch.to(self.device, non_blocking=True).float().div_(255)

    def _steps_per_epoch(self) -> int:
        n = len(self.source_labels)
        per_rank = math.ceil(n / self.dist.world_size)
        return max(1, per_rank // self.config.batch_size)

    def _epoch_order(self, epoch: int) -> torch.Tensor:
        """Source indices for this rank and epoch: a DistributedSampler's order, or a seeded
        permutation in a single process."""
        n = len(self.source_labels)
        if self.dist.enabled:
            sampler = torch.utils.data.DistributedSampler(
                range(n),
                num_replicas=self.dist.world_size,
                rank=self.dist.rank,
                shuffle=True,
                seed=self.config.seed,
            )
            sampler.set_epoch(epoch)
            return torch.tensor(list(sampler))
        g = torch.Generator().manual_seed(self.config.seed * 7919 + epoch)
        return torch.randperm(n, generator=g)

    @property
    def target_batch_size(self) -> int:
        """Unlabelled target images per step: ``target_batch_ratio * batch_size`` (FixMatch's
        mu; the paper uses 7)."""
        return max(1, round(self.config.target_batch_ratio * self.config.batch_size))

    def _target_order(self, epoch: int, count: int) -> torch.Tensor:
        n = len(self.target_images)
        g = torch.Generator().manual_seed(self.config.seed * 104729 + epoch + 1)
        reps = math.ceil(count / n)
        return torch.cat([torch.randperm(n, generator=g) for _ in range(reps)])[:count]

    # -- phases: frozen backbone, then unfrozen -------------------------------------------
    def _phase(self, epoch: int) -> str:
        mode = self.config.mode
        if mode == "feature_extraction":
            return "frozen"
        if mode == "fine_tune" and epoch < self.config.freeze_epochs:
            return "frozen"
        return "unfrozen"

    def _needs_images(self) -> bool:
        return self.config.augment or any(
            getattr(p, "needs_images", False) for p in self.pm.get_plugins()
        )

    def _configure_phase(self, phase: str) -> None:
        cfg = self.config
        trainable = phase == "unfrozen"
        for p in self.model.backbone.parameters():
            p.requires_grad_(trainable)
        self.net.backbone_trainable = trainable
        self.net.cached = not trainable and not self._needs_images()
        if self.net.cached and not self.feature_cache:
            self._cache_features()
        self.phase_start_step = self._phase_start(phase)
        self.phase_steps = self._phase_length(phase)
        groups = self._param_groups(trainable)
        if cfg.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True)
        else:
            self.optimizer = torch.optim.AdamW(groups, lr=cfg.lr)
        net: nn.Module = self.net
        if self.dist.enabled:
            net = nn.parallel.DistributedDataParallel(
                self.net, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        if cfg.compile:
            net = torch.compile(net)
        self.forward = net

    def _phase_start(self, phase: str) -> int:
        if phase == "unfrozen" and self.config.mode == "fine_tune":
            return min(self.config.freeze_epochs, self.config.epochs) * self.steps_per_epoch
        return 0

    def _phase_length(self, phase: str) -> int:
        cfg = self.config
        if cfg.mode == "fine_tune":
            frozen = min(cfg.freeze_epochs, cfg.epochs)
            epochs = frozen if phase == "frozen" else cfg.epochs - frozen
        else:
            epochs = cfg.epochs
        return max(1, epochs * self.steps_per_epoch)

    def _param_groups(self, backbone_trainable: bool) -> list[dict[str, Any]]:
        """Discriminative learning rates: backbone groups get rates spaced geometrically from
        ``lr / lr_spread`` (earliest layers) up to ``lr`` (the head). No decay on 1-d params,
        and none on the model at all when a strategy says it ``replaces_weight_decay`` (L2-SP:
        its own penalty takes the place of the optimiser's pull towards 0)."""
        cfg = self.config
        replaced = any(getattr(p, "replaces_weight_decay", False) for p in self.pm.get_plugins())
        model_decay = 0.0 if replaced else cfg.weight_decay
        blocks: list[tuple[list[nn.Parameter], float, float]] = []
        if backbone_trainable:
            groups = self.model.backbone.layer_groups()
            lrs = np.geomspace(cfg.lr / cfg.lr_spread, cfg.lr, len(groups) + 1)[:-1]
            blocks += [(g, lr, model_decay) for g, lr in zip(groups, lrs)]
        blocks.append((list(self.model.head.parameters()), cfg.lr, model_decay))
        for module in self.extra_modules.values():  # e.g. a domain discriminator
            blocks.append((list(module.parameters()), cfg.lr, cfg.weight_decay))
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

    @torch.no_grad()
    def _cache_features(self) -> None:
        """Run the frozen backbone once over every set; later epochs only train the head. The
        unlabelled target is featurised only when a strategy trains on it (see
        :meth:`_target_features`), not for a plain supervised run."""
        self.feature_cache["source"] = self._features(self.source_images)
        for name, domain in self.data.eval_sets().items():
            self.feature_cache[f"eval_{name}"] = self._features(domain.images)

    def _target_features(self) -> torch.Tensor:
        if "target" not in self.feature_cache:
            self.feature_cache["target"] = self._features(self.target_images)
        return self.feature_cache["target"]

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone features of uint8 ``images``, in eval mode, kept on the training device."""
        return predict_features(
            self.model,
            images,
            batch_size=self.config.eval_batch_size,
            precision=self.precision,
            to_cpu=False,
        )

    def _call_setup(self) -> None:
        for plugin in self.pm.get_plugins():  # a strategy may declare the task it works on
            needed = getattr(plugin, "requires_task", None)
            if needed is not None and needed != self.task:
                name = self.pm.get_name(plugin)
                raise registry.PluginError(
                    f"strategy '{name}' needs a {needed} task; this one is {self.task}. "
                    f"Drop it, or see tlkit.strategies() for ones that fit."
                )
        caller = self.pm.hook.tlkit_setup
        for impl in caller.get_hookimpls():
            kwargs = {"trainer": self} if "trainer" in impl.argnames else {}
            try:
                module = impl.function(**kwargs)
            except Exception as exc:
                raise registry.PluginError(
                    f"strategy '{impl.plugin_name}' failed in hook tlkit_setup: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            if module is not None:
                if not isinstance(module, nn.Module):
                    raise registry.PluginError(
                        f"strategy '{impl.plugin_name}': tlkit_setup must return an nn.Module or "
                        f"None, got {type(module).__name__}."
                    )
                self.extra_modules[impl.plugin_name] = module.to(self.device)

    def _channels_last(self) -> bool:
        cl = self.config.channels_last
        return self.device.type == "cuda" if cl == "auto" else bool(cl)

    # -- one epoch / one step --------------------------------------------------------------
    def _train_epoch(self, epoch: int) -> bool:
        """Train the rest of ``epoch``; ``False`` when stopped early (stop request, max_steps)."""
        cfg = self.config
        bs = cfg.batch_size
        order = self._epoch_order(epoch)
        want_target = bool(
            self.target_images is not None
            and registry.call_hook(self.pm, "tlkit_wants_target", trainer=self)
        )
        bt = self.target_batch_size
        t_order = self._target_order(epoch, self.steps_per_epoch * bt) if want_target else None
        self.model.train()
        if not self.net.backbone_trainable or cfg.freeze_bn:
            _set_bn_eval(self.model.backbone)
        if self.state.step_in_epoch == 0:
            self._epoch_sums: dict[str, torch.Tensor | float] = {}
            self._epoch_weights: dict[str, torch.Tensor | float] = {}
        self._pending: list[tuple[int, dict[str, torch.Tensor], dict[str, Any]]] = []
        for i in range(self.state.step_in_epoch, self.steps_per_epoch):
            if self._should_stop():
                self._stop(epoch)
                return False
            idx = order[i * bs : (i + 1) * bs]
            t_idx = t_order[i * bt : (i + 1) * bt] if t_order is not None else None
            self._train_step(epoch, idx, t_idx)
        self._flush_logs()
        return True

    def _should_stop(self) -> bool:
        if self._stop_requested:
            return True
        if self.config.max_steps is not None and self.state.step >= self.config.max_steps:
            return True
        return bool(registry.call_hook(self.pm, "tlkit_should_stop", trainer=self))

    def _stop(self, epoch: int) -> None:
        self._flush_logs()
        self.state.stopped_early = True
        self._save("last.pt")

    def _train_step(self, epoch: int, idx: torch.Tensor, t_idx: torch.Tensor | None) -> None:
        cfg, state = self.config, self.state
        torch.manual_seed(cfg.seed * 1_000_003 + state.step)  # step randomness = f(seed, step)
        cached = self.net.cached
        y = self.source_labels[idx.to(self.source_labels.device)]
        if cached:
            x, inputs = None, self.feature_cache["source"][idx.to(self.device)]
        else:
            x = self._batch(self.source_images, idx)
            if cfg.augment:
                from tlkit.datasets.augment import weak_augment

                x = weak_augment(x)
            inputs = self.model.prepare(x)
        x_t = y_t = None
        if t_idx is not None:
            y_t = self.target_true[t_idx.to(self.target_true.device)]
            if cached:
                t_inputs = self._target_features()[t_idx.to(self.device)]
            else:
                x_t = self._batch(self.target_images, t_idx)
                t_inputs = self.model.prepare(x_t)
            inputs = torch.cat([inputs, t_inputs])
        if not cached and self._channels_last() and inputs.ndim == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        step = Step(self, state.step, epoch, state.progress, x, y, x_t, y_t)
        with autocast_for(self.device, self.precision):
            features, logits = self.forward(inputs)
        n = len(y)
        step.features, step.logits = features[:n], logits[:n]
        if t_idx is not None:
            step.target_features, step.target_logits = features[n:], logits[n:]
        terms = self._losses(step)
        loss = sum(terms.values())
        self.optimizer.zero_grad(set_to_none=True)
        lr_mult = lr_multiplier(
            cfg.schedule, state.step - self.phase_start_step, self.phase_steps, cfg.warmup
        )
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * lr_mult
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        self._sync_extra_grads()
        if cfg.grad_clip is not None:
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model)
        state.step += 1
        state.step_in_epoch += 1
        scalars = {"loss": loss.detach(), **{k: v.detach() for k, v in terms.items()}}
        scalars.update({k: v.detach().float() for k, v in step.stats.items()})
        weights = {k: step.stat_weights.get(k, 1.0) for k in scalars}
        for k, v in scalars.items():
            self._epoch_sums[k] = self._epoch_sums.get(k, 0.0) + v * weights[k]
            self._epoch_weights[k] = self._epoch_weights.get(k, 0.0) + weights[k]
        self._pending.append((state.step, scalars, weights))
        logs: dict[str, float] = {}
        if state.step % cfg.log_every == 0:
            logs = self._flush_logs()
            logs["lr"] = self.optimizer.param_groups[-1]["lr"]
        registry.call_hook(self.pm, "tlkit_on_step_end", trainer=self, step=step, logs=logs)
        if cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0:
            self._flush_logs()
            self._save("last.pt")

    def _losses(self, step: Step) -> dict[str, torch.Tensor]:
        per_sample = registry.call_hook(
            self.pm, "tlkit_supervised_loss", logits=step.logits, targets=step.y, step=step
        )
        if per_sample is None:
            raise registry.PluginError("no active strategy answered tlkit_supervised_loss.")
        terms = {"supervised": per_sample.float().mean()}
        if step.target_logits is not None:
            pl = registry.call_hook(self.pm, "tlkit_pseudo_labels", step=step)
            if pl is not None:
                logits = pl.logits if pl.logits is not None else step.target_logits
                losses = registry.call_hook(
                    self.pm, "tlkit_supervised_loss", logits=logits, targets=pl.targets, step=step
                )
                w = pl.weights.float()
                terms["pseudo_label"] = (losses.float() * w).sum() / max(1, len(w))
                admitted = w > 0
                step.log("mask_rate", admitted.float().mean())
                if step.y_target_true is not None and pl.targets.ndim == 1:
                    # of the admitted pseudo-labels, the share that is right (sample-weighted)
                    right = (pl.targets == step.y_target_true) & admitted
                    n = admitted.sum()
                    step.log("pseudo_label_accuracy", right.sum() / n.clamp(min=1), weight=n)
        for extra in registry.call_hook(self.pm, "tlkit_extra_losses", step=step):
            for name, value in extra.items():
                if name in terms:
                    raise registry.PluginError(
                        f"two strategies log a loss term named '{name}'; give them distinct names."
                    )
                terms[name] = value.float()
        return terms

    def _sync_extra_grads(self) -> None:
        """Strategy modules live outside DDP: average their gradients across ranks by hand."""
        if not self.dist.enabled:
            return
        for module in self.extra_modules.values():
            for p in module.parameters():
                if p.grad is not None:
                    p.grad.copy_(distributed.all_reduce_mean(p.grad, self.dist))

    def _flush_logs(self) -> dict[str, float]:
        """Bring pending step scalars to the host; fail at the first non-finite loss."""
        if not getattr(self, "_pending", None):
            return {}
        pending, self._pending = self._pending, []
        losses = torch.stack([s["loss"].float() for _, s, _ in pending]).cpu()
        bad = (~torch.isfinite(losses)).nonzero().flatten()
        if len(bad):
            step_no, scalars, _ = pending[int(bad[0])]
            detail = ", ".join(f"{k}={float(v):.4g}" for k, v in scalars.items())
            saved = self._checkpoint_path("last.pt")
            kept = (
                f"The last good checkpoint is kept at {saved}."
                if saved is not None and saved.exists()
                else "No checkpoint was written (set checkpoint_dir= to keep one)."
            )
            raise TrainingError(
                f"the loss became {float(losses[bad[0]])} at step {step_no} (epoch "
                f"{self.state.epoch + 1}; {detail}). {kept} Try a lower lr (now "
                f"{self.config.lr}), grad_clip=1.0, or precision='fp32'."
            )
        window = {}
        keys = dict.fromkeys(k for _, s, _ in pending for k in s)  # every key, first-seen order
        for key in keys:
            total = sum(float(w[key]) for _, s, w in pending if key in s)
            if total > 0:  # weighted mean over the steps of the window that measured it
                window[key] = sum(float(s[key]) * float(w[key]) for _, s, w in pending if key in s)
                window[key] /= total
        self.step_logs.append({"step": pending[-1][0], "epoch": self.state.epoch + 1, **window})
        return window

    # -- end of epoch: evaluate, record, checkpoint ----------------------------------------
    def _end_epoch(self, epoch: int) -> None:
        cfg = self.config
        row: dict[str, Any] = {"epoch": epoch + 1, "step": self.state.step}
        for k, v in self._epoch_sums.items():
            key = "train_loss" if k == "loss" else k
            weight = float(self._epoch_weights[k])
            row[key] = float(v) / weight if weight > 0 else float("nan")  # nan: never measured
        row.update(self.evaluate_epoch())
        row["lr"] = self.optimizer.param_groups[-1]["lr"]
        self.history.append(row)
        self.state.epoch += 1
        self.state.step_in_epoch = 0
        improved = self._update_best(row)
        registry.call_hook(
            self.pm, "tlkit_on_epoch_end", trainer=self, epoch=epoch + 1, metrics=row
        )
        if cfg.checkpoint_dir:
            self._save("last.pt")
            if improved:
                self._save("best.pt")

    def evaluate_epoch(self) -> dict[str, float]:
        """Scalar metrics on each held-out set, prefixed ``source_`` / ``target_``."""
        out: dict[str, float] = {}
        self.eval_results: dict[str, dict[str, Any]] = {}
        registry.call_hook(self.pm, "tlkit_before_evaluate", trainer=self)
        for name, domain in self.data.eval_sets().items():
            _, outputs = self._eval_outputs(domain.images, f"eval_{name}")
            metrics = metrics_from_outputs(outputs, domain, self.num_classes)
            self.eval_results[name] = metrics  # full metrics (confusion matrix) for observers
            for key in ("accuracy", "mae", "rmse"):
                if key in metrics:
                    out[f"{name}_{key}"] = metrics[key]
        if self.data.target is not None and self.pm.hook.tlkit_target_scores.get_hookimpls():
            if self.net.cached:
                self._target_features()  # featurise the unlabelled target once, not per epoch
            features, logits = self._eval_outputs(self.data.target.images, "target")
            for scores in registry.call_hook(
                self.pm, "tlkit_target_scores", trainer=self, logits=logits, features=features
            ):
                out.update({k: float(v) for k, v in scores.items()})
        self.model.train()
        if not self.net.backbone_trainable or self.config.freeze_bn:
            _set_bn_eval(self.model.backbone)
        return out

    @torch.no_grad()
    def _eval_outputs(
        self, images: torch.Tensor, cache_key: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features, outputs)`` in eval mode on CPU; the EMA model when EMA is on; from the
        feature cache while the backbone is frozen and cached."""
        model = self.ema.module if self.ema is not None else self.model
        modes = training_modes(model)
        model.eval()
        feats, outs = [], []
        bs = self.config.eval_batch_size
        try:
            if self.net.cached and cache_key in self.feature_cache:
                cached = self.feature_cache[cache_key]
                chunks = [cached[i : i + bs] for i in range(0, len(cached), bs)]
            else:
                chunks = [
                    images[i : i + bs].to(self.device).float().div_(255)
                    for i in range(0, len(images), bs)
                ]
            for chunk in chunks:
                with autocast_for(self.device, self.precision):
                    f = (
                        chunk
                        if self.net.cached and cache_key in self.feature_cache
                        else (model.features(chunk))
                    )
                    feats.append(f.float().cpu())
                    outs.append(model.head(f).float().cpu())
        finally:
            restore_training_modes(modes)
        return torch.cat(feats), torch.cat(outs)

    def monitor(self) -> tuple[str, str]:
        """The metric that picks the best checkpoint, and whether higher is better."""
        m = self.config.monitor
        if m == "auto":
            if self.data.source_test is not None:
                m = "source_accuracy" if self.task == "classification" else "source_mae"
            else:
                m = "train_loss"
        mode = "max" if m.endswith("accuracy") or m.startswith("score_") else "min"
        return m, mode

    def _update_best(self, row: dict[str, Any]) -> bool:
        name, mode = self.monitor()
        if name not in row:
            raise ConfigError(f"monitor='{name}' is not among the metrics {sorted(row)}.")
        value = row[name]
        best = self.best["value"]
        better = best is None or (value > best if mode == "max" else value < best)
        if better:
            self.best = {"value": value, "epoch": row["epoch"], "metric": name}
        return better

    # -- checkpoints -----------------------------------------------------------------------
    def _checkpoint_path(self, name: str) -> Path | None:
        return Path(self.config.checkpoint_dir) / name if self.config.checkpoint_dir else None

    def checkpoint_payload(self, *, training_state: bool = True) -> dict[str, Any]:
        """Everything needed to rebuild the model and, with ``training_state``, to resume."""
        payload: dict[str, Any] = {
            "config": self.config.to_dict(),
            "model_spec": model_spec(self.model, self.config, self.data),
            "model": self.model.state_dict(),
            "history": self.history,
            "step_logs": self.step_logs,
            "best": self.best,
            "extra_modules": {k: m.state_dict() for k, m in self.extra_modules.items()},
            "ema": self.ema.state_dict() if self.ema is not None else None,
        }
        if training_state:
            payload["state"] = {
                "epoch": self.state.epoch,
                "step": self.state.step,
                "step_in_epoch": self.state.step_in_epoch,
            }
            payload["optimizer"] = self.optimizer.state_dict() if self.optimizer else None
            payload["scaler"] = self.scaler.state_dict() if self.scaler else None
            payload["epoch_sums"] = {
                k: float(v) for k, v in getattr(self, "_epoch_sums", {}).items()
            }
            payload["epoch_weights"] = {
                k: float(v) for k, v in getattr(self, "_epoch_weights", {}).items()
            }
        return payload

    def _save(self, name: str) -> None:
        path = self._checkpoint_path(name)
        if path is None or not self.is_main:
            return
        save_checkpoint(self.checkpoint_payload(), path)

    def _load_resume(self, resume: str | Path | bool) -> dict[str, Any]:
        if resume is True:
            path = self._checkpoint_path("last.pt")
            if path is None:
                raise ConfigError("resume=True needs checkpoint_dir= (where last.pt lives).")
        else:
            path = Path(resume)
        ckpt = load_checkpoint(path, map_location=self.device)
        if "state" not in ckpt:
            raise CheckpointError(
                f"'{path}' holds a finished model (saved with run.save), not a training state; "
                "resume from checkpoint_dir/last.pt, or load it with tlkit.load()."
            )
        try:
            self.model.load_state_dict(ckpt["model"])
            for k, m in self.extra_modules.items():
                m.load_state_dict(ckpt["extra_modules"][k])
            if self.ema is not None and ckpt.get("ema") is not None:
                self.ema.load_state_dict(ckpt["ema"])
        except (RuntimeError, KeyError) as exc:
            raise CheckpointError(
                f"checkpoint '{path}' does not fit this run's model or strategies ({exc}). "
                "Resume with the same backbone, data and strategies it was written with."
            ) from exc
        s = ckpt["state"]
        self.state.epoch, self.state.step, self.state.step_in_epoch = (
            s["epoch"],
            s["step"],
            s["step_in_epoch"],
        )
        self.history = list(ckpt["history"])
        self.step_logs = list(ckpt["step_logs"])
        self.best = dict(ckpt["best"])
        self._epoch_sums = {
            k: torch.tensor(v, device=self.device) for k, v in ckpt.get("epoch_sums", {}).items()
        }
        count = ckpt.get("epoch_count", 0)  # checkpoints written before per-key weights
        self._epoch_weights = ckpt.get("epoch_weights") or {k: count for k in self._epoch_sums}
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        return ckpt

    def _restore_optimizer(self, ckpt: dict[str, Any]) -> None:
        if ckpt.get("optimizer") is not None:
            try:
                self.optimizer.load_state_dict(ckpt["optimizer"])
            except ValueError as exc:
                raise CheckpointError(
                    f"the optimizer state in the checkpoint does not fit this run ({exc})."
                ) from exc


def _set_bn_eval(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def model_spec(model: TransferModel, config: FitConfig, data: DomainPair) -> dict[str, Any]:
    """How to rebuild the model's architecture without its training code or data."""
    return {
        "backbone": model.backbone.name,
        "task": model.task,
        "out_features": model.out_features,
        "input_size": model.backbone.input_size,
        "dropout": config.dropout,
        "classes": list(data.classes),
    }
