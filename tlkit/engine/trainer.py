"""The training loop. It knows no strategy: losses, pseudo-labels and extra terms come from hooks.

Where things are (each file one responsibility):

* :mod:`tlkit.step` -- what strategies see: ``Step``, ``PseudoLabels``, ``TrainState``;
* :mod:`tlkit.engine.hooks` -- calling strategies, checking what they return;
* :mod:`tlkit.engine.feeding` -- the batches of each epoch and the frozen-feature cache;
* :mod:`tlkit.engine.optim` -- phases (frozen / unfrozen), parameter groups, learning rates;
* :mod:`tlkit.engine.logs` -- log windows, epoch means, the non-finite check;
* :mod:`tlkit.engine.resume` / :mod:`tlkit.engine.checkpoint` -- checkpoints and resuming;
* this module -- the run: set-up, the epoch loop, :meth:`Trainer._train_step` (one step, on one
  screen) and the end of each epoch (evaluate, record, checkpoint).

Reproducibility: the data order of epoch ``e`` and the randomness of step ``s`` are pure functions
of ``(seed, e)`` and ``(seed, s)``, so a run resumed from a checkpoint written after any step
replays exactly what the uninterrupted run would have done. Randomness that only PyTorch's global
generator can give (dropout, a strategy's ``torch.rand``) is drawn while the step holds the
process-wide :data:`GLOBAL_RNG_LOCK`, seeded for that step: two seeded runs in two threads (the
dashboard's and the notebook's) give the same results as when run one after the other.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tlkit import registry
from tlkit.backbones.base import TransferModel
from tlkit.datasets.domain import UNLABELLED, Domain, DomainPair
from tlkit.engine import (
    class_balance,
    distributed,
    domain_stats,
    feature_store,
    hooks,
    optim,
    resume,
    selection,
    stopping,
)
from tlkit.engine.checkpoint import (
    FolderLock,
    check_writable,
    remove_stale_temporaries,
)
from tlkit.engine.config import FitConfig
from tlkit.engine.device import (
    autocast_for,
    compile_hook_guards,
    pick_device,
    pick_precision,
    use_channels_last,
)
from tlkit.engine.evaluate import freeze_batchnorm, metrics_from_outputs, predict, predict_outputs
from tlkit.engine.feeding import Batch, Feeder, as_pair, image_size
from tlkit.engine.logs import NonFiniteLoss, StepLog
from tlkit.engine.network import Network, build_model
from tlkit.errors import CheckpointError, ConfigError, PluginError, TrainingError
from tlkit.rng import GLOBAL_RNG_LOCK
from tlkit.step import Step, TrainState, domain_context
from tlkit.strategy_tools import EMA


#: Held while a step draws from PyTorch's global random generator (see the module docstring).
def step_seed(seed: int, step: int, rank: int = 0) -> int:
    """The seed of step ``step`` on process ``rank`` (ranks draw different dropout masks and
    augmentations, as different data does)."""
    return (seed * 1_000_003 + step + rank * 7_777_777_777) % (2**63)


class Trainer:
    """The training loop of one run: ``Trainer(data, config).train()``. Use :class:`tlkit.Trainer`
    (its ``fit()`` returns a :class:`tlkit.Run`) or :func:`tlkit.fit`; this class is the engine
    layer, which knows nothing of the result object.

    What can be checked before training is checked in the constructor: options, strategies and
    their options, the monitored metric (validators' scores by name where they declare them), the
    checkpoint folder. The folder's lock, a foreign ``last.pt`` and strategies refusing a model in
    ``tlkit_setup`` are checked when training starts.

    Args:
        data: a :class:`DomainPair` (or a single labelled :class:`Domain`).
        config: a :class:`FitConfig`; or pass its fields as keyword arguments.
        model: a ready :class:`TransferModel` (else one is built from ``config.backbone``); it is
            trained in place.
        classes: class names for a source-free run's target when it has none (the model's).
        observers: extra plugin objects for this run only (progress widgets, loggers...).
        train_transform: a per-sample ``transforms.v2`` pipeline for training images
            (``augment="custom"``).
    """

    def __init__(
        self,
        data: DomainPair | Domain,
        config: FitConfig | None = None,
        *,
        model: TransferModel | nn.Module | None = None,
        classes: list[str] | None = None,
        observers: tuple[Any, ...] | list[Any] = (),
        train_transform: Any = None,
        **options: Any,
    ) -> None:
        if config is None:
            config = FitConfig(**options)
        elif options:
            raise ConfigError("pass either config= or keyword options, not both.")
        if classes is None and isinstance(model, TransferModel) and config.source_free:
            classes = [str(i) for i in range(model.out_features)]
        self.data = as_pair(data, source_free=config.source_free, classes=classes)
        self.dist = distributed.from_env()
        self.is_main = self.dist.is_main
        self.device = pick_device(config.device, self.dist.local_rank)
        self.task = self.data.task
        self.num_classes = self.data.num_classes
        self.classes = tuple(self.data.classes)
        self.config = config
        self.precision = pick_precision(config.precision, self.device)
        self.channels_last = use_channels_last(config.channels_last, self.device)
        with GLOBAL_RNG_LOCK:  # the model's initialisation is a function of the seed
            torch.manual_seed(config.seed)
            self.model = build_model(model, config, self.data)
        if config.mode == "auto":  # freezing only makes sense for weights worth keeping
            pretrained = bool(getattr(self.model.backbone, "pretrained", False))
            frozen_first = pretrained and not config.source_free  # source-free: nothing to warm
            self.config = config = dataclasses.replace(
                config, mode="fine_tune" if frozen_first else "full"
            )
        selected = selection.select(config, self.data)
        with GLOBAL_RNG_LOCK:  # a strategy's constructor may draw random numbers
            torch.manual_seed(step_seed(config.seed, -2))
            self.pm = registry.make_plugin_manager(selected, self._observers(observers))
        names = {registry.run_name(info): info for info, _ in selected}
        self.strategies = {name: self.pm.get_plugin(name) for name in names}
        selection.check_fit(self.strategies, {n: i.family for n, i in names.items()}, self.data)
        if config.domain_bn == "auto":
            self.config = config = dataclasses.replace(
                config, domain_bn=selection.resolve_domain_bn(self.strategies)
            )
        self.monitor_name, self.monitor_mode = selection.resolve_monitor(
            config, self.data, self.strategies
        )
        self.stopping = stopping.EarlyStopping(config, self.data, self.monitor_name)
        self.class_weights = class_balance.setup(config, self.data, self.device)
        if config.checkpoint_dir and self.is_main:
            check_writable(config.checkpoint_dir)
        self.state = TrainState()
        self.history: list[dict[str, Any]] = []
        self.logs = StepLog()
        self.best: dict[str, Any] = {"value": None, "epoch": None}
        self.eval_results: dict[str, dict[str, Any]] = {}
        self.extra_modules: dict[str, nn.Module] = {}
        self.ema: EMA | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.scaler: torch.amp.GradScaler | None = None
        self.adversary_optimizer: torch.optim.Optimizer | None = None
        self.domain_stats: domain_stats.DomainStatistics | None = None  # the source's BatchNorm
        self.feeder: Feeder | None = None
        self.train_transform = (
            train_transform  # a user's own per-sample pipeline (augment="custom")
        )
        self.image_size = image_size(config, self.data, self.model.backbone)
        self.net = Network(self.model, separate_domains=config.domain_bn == "separate")
        self.forward: Any = self.net  # the net, wrapped by DDP / torch.compile when asked
        self.phase: str | None = None
        self.phase_span = (0, 1)
        self.generator: torch.Generator | None = None
        self.needs_target = any(getattr(p, "needs_target", False) for p in self.strategies.values())
        self._stop_requested = False
        self.last_checkpoint: Path | None = None  # the last good last.pt, for error messages
        self._target_truth: torch.Tensor | None = None  # for diagnostics; never on a Step
        self._pending_optimizer: tuple[str | None, Any] | None = None  # (phase, state) to restore
        self._unlabelled_target: Domain | None = None

    # -- construction ----------------------------------------------------------------------
    def _observers(self, observers: Any) -> list[Any]:
        extra = list(observers)
        if self.config.progress and self.is_main:
            from tlkit.engine.progress import ProgressBar

            extra.insert(0, ProgressBar())
        if self.config.log_dir and self.is_main:
            from tlkit.engine.csv_log import MetricsLog

            extra.append(MetricsLog(self.config.log_dir))
        return extra

    # -- what strategies and observers may use ---------------------------------------------
    @property
    def target(self) -> Domain | None:
        """The unlabelled target domain with its true labels removed (what strategies may use)."""
        if self._unlabelled_target is None and self.data.target is not None:
            t = self.data.target
            if t.task == "classification":
                hidden = torch.full_like(t.labels, UNLABELLED)
                self._unlabelled_target = dataclasses.replace(t, labels=hidden, clean_labels=hidden)
            else:  # regression has no "unlabelled" value: NaN, set past the Domain's own checks
                hidden = torch.full_like(t.labels, float("nan"))
                self._unlabelled_target = copy.copy(t)
                object.__setattr__(self._unlabelled_target, "labels", hidden)
                object.__setattr__(self._unlabelled_target, "clean_labels", hidden)
        return self._unlabelled_target

    def target_batches(self, batch_size: int | None = None) -> Any:
        """The unlabelled target, once, as ``(inputs, indices)`` batches on the device -- images
        through the evaluation transform (file-backed targets are decoded by the DataLoader), or a
        tensor domain's rows. For strategies that look at the whole target (AdaBN)."""
        feed = self.feeder.target if self.feeder is not None else None
        if feed is None:
            raise ConfigError("this run has no target data (needs_target strategies only).")
        return feed.eval_batches(batch_size or self.config.eval_batch_size)

    @property
    def step_logs(self) -> list[dict[str, float]]:
        """Losses and diagnostics averaged over every ``log_every`` steps."""
        return self.logs.windows

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast context of this run's precision (a no-op in fp32)."""
        return autocast_for(self.device, self.precision)

    def predict_outputs(
        self, images: torch.Tensor, *, batch_size: int | None = None
    ) -> torch.Tensor:
        """Outputs ``(N, K)`` of the model being trained for images ``(N, C, H, W)``, in eval mode
        and on CPU; the training mode is restored afterwards. For observers that follow
        predictions during training (e.g. how many noisy labels are memorised, epoch by epoch)."""
        return predict_outputs(
            self.model,
            images,
            batch_size=batch_size or self.config.eval_batch_size,
            precision=self.precision,
        )

    def request_stop(self) -> None:
        """End training at the next step boundary; thread-safe. The one way to stop a run early
        (the dashboard's Stop button, an early-stopping observer)."""
        self._stop_requested = True

    def model_spec(self) -> dict[str, Any]:
        resize = self.feeder.source.resize if self.feeder is not None else "crop"
        shape = self.data.source.input_shape if self.data.modality == "tensor" else None
        return resume.model_spec(
            self.model, self.config, self.classes, self.image_size, resize, shape
        )

    # -- the run ---------------------------------------------------------------------------
    def train(self, resume: str | Path | bool | None = None) -> Trainer:
        """Train; ``resume`` is a checkpoint path (or ``True`` for ``checkpoint_dir/last.pt``).
        Returns the trainer, trained (``tlkit.Trainer.fit`` wraps it in a Run)."""
        lock = (
            FolderLock(self.config.checkpoint_dir)
            if self.config.checkpoint_dir and self.is_main
            else None
        )
        with (
            torch.enable_grad(),
            lock or contextlib.nullcontext(),
            compile_hook_guards(self.config.compile),
        ):
            if lock is not None:
                remove_stale_temporaries(self.config.checkpoint_dir)
            try:
                self._start(resume)  # inside: strategies set up here are told the run ended
                epoch = self.state.epoch
                while epoch < self.config.epochs and not self.stopping.should_stop(self):
                    self._enter_phase(optim.phase_of(self.config, epoch))
                    if not self._train_epoch(epoch):
                        break
                    self._end_epoch(epoch)
                    epoch = self.state.epoch
                self.stopping.restore(self)  # restore_best: the best epoch's weights
            finally:
                if self.domain_stats is not None:  # the model keeps the target's statistics
                    self.domain_stats.remove()
                hooks.notify(self.pm, "tlkit_on_fit_end", trainer=self, history=self.history)
        return self

    def _start(self, resume_from: str | Path | bool | None) -> None:
        cfg = self.config
        distributed.setup(self.dist, self.device)
        self.model.to(self.device)
        if self.device.type == "cuda" and self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.feeder = Feeder(
            self.data,
            cfg,
            self.device,
            self.dist,
            size=self.image_size,
            strong_view=any(
                getattr(p, "needs_strong_view", False) for p in self.strategies.values()
            ),
            train_transform=self.train_transform,
        )
        truth = self.data.target.clean_labels if self.data.target is not None else None
        if (
            truth is not None
            and self.task == "classification"
            and bool((truth != UNLABELLED).any())
        ):
            self._target_truth = truth.to(self.device)
        self.generator = torch.Generator(self.device)
        with GLOBAL_RNG_LOCK:  # strategy modules' initialisation is a function of the seed
            torch.manual_seed(step_seed(cfg.seed, -1))
            modules = hooks.setup(self.pm, self)
        self.extra_modules = {k: m.to(self.device) for k, m in modules.items()}
        adversaries = optim.own_optimizer_params(self.extra_modules)
        if adversaries:
            groups = [{"params": adversaries, "lr": cfg.lr, "base_lr": cfg.lr, "weight_decay": 0.0}]
            self.adversary_optimizer = optim.make_optimizer(groups, cfg)
        if cfg.ema is not None:
            self.ema = EMA(self.model, cfg.ema)
        self.domain_stats = domain_stats.attach(self)  # after the strategies' setup and EMA
        if self.precision == "fp16":
            self.scaler = torch.amp.GradScaler("cuda")
        self.state.total_steps = cfg.epochs * self.feeder.steps_per_epoch
        if resume_from:
            self._pending_optimizer = resume.restore(self, resume_from)
        elif self.config.checkpoint_dir and self.is_main:
            resume.set_aside_earlier(self)
        hooks.notify(self.pm, "tlkit_on_fit_start", trainer=self)

    # -- phases: frozen backbone, then unfrozen -------------------------------------------
    def _enter_phase(self, phase: str) -> None:
        """Configure freezing, the feature cache and a fresh optimiser when the phase changes
        (and restore the checkpoint's optimiser state when it was saved in this phase)."""
        if phase == self.phase:
            return
        self.phase = phase
        trainable = phase == optim.UNFROZEN
        for p in self.model.backbone.parameters():
            p.requires_grad_(trainable)
        self.net.backbone_trainable = trainable
        self.net.cached = not trainable and not self._needs_inputs()
        if self.net.cached:
            self.feeder.cache_features(self._features, target=self.needs_target)
        self.phase_span = optim.phase_span(self.config, phase, self.feeder.steps_per_epoch)
        replaced = any(getattr(p, "replaces_weight_decay", False) for p in self.strategies.values())
        groups = optim.param_groups(
            self.model,
            self.extra_modules,
            self.config,
            backbone_trainable=trainable,
            model_weight_decay=0.0 if replaced else self.config.weight_decay,
        )
        if not groups:
            raise ConfigError(
                f"nothing would train in the {phase} phase: the backbone is frozen (mode="
                f"'{self.config.mode}') and the head and strategy modules have no trainable "
                "parameter (a strategy froze the head?). Use mode='full'."
            )
        fresh = [{k: v for k, v in g.items() if k != "params"} for g in groups]
        self.optimizer = optim.make_optimizer(groups, self.config)
        if self._pending_optimizer is not None:
            saved_phase, state = self._pending_optimizer
            self._pending_optimizer = None
            if saved_phase == phase and state is not None:
                try:
                    optim.restore_optimizer(self.optimizer, state, fresh)
                except (ValueError, KeyError) as exc:
                    raise CheckpointError(
                        f"the optimizer state in the checkpoint does not fit this run ({exc}); "
                        "resume with the strategies and mode it was written with."
                    ) from None
        net: nn.Module = self.net
        if self.dist.enabled:
            net = nn.parallel.DistributedDataParallel(
                self.net, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        if self.config.compile:
            net = torch.compile(net)
        self.forward = net

    def _needs_inputs(self) -> bool:
        """Inputs must go through the backbone each step (no feature cache): augmentation was
        asked for explicitly (``augment="auto"`` trains a frozen backbone's head on cached
        features), or a strategy looks at the inputs."""
        explicit = self.config.augment not in (False, "none", "auto")
        return explicit or any(
            getattr(p, "needs_images", False) or hasattr(p, "tlkit_transform_source")
            for p in self.strategies.values()
        )

    def _features(self, batches: Any, key: str, domain: Domain) -> tuple[Any, torch.Tensor]:
        """Frozen-backbone features of one set for the feature cache."""
        return feature_store.features(
            self.model, batches, domain, key, self.image_size, self.config, self.precision
        )

    # -- one epoch / one step --------------------------------------------------------------
    def _train_epoch(self, epoch: int) -> bool:
        """Train the rest of ``epoch``; ``False`` when stopped early (stop request, max_steps)."""
        self._train_mode()
        if self.state.step_in_epoch == 0:
            self.logs.start_epoch()
        batches = self.feeder.batches(
            epoch, self.state.step_in_epoch, with_target=self.needs_target, cached=self.net.cached
        )
        for batch in batches:
            if self._stop_requested or (
                self.config.max_steps is not None and self.state.step >= self.config.max_steps
            ):
                self._flush_logs()
                self.state.stopped_early = True
                self._save("last.pt")
                return False
            if batch.empty:  # every file of the batch was unreadable (each warned about)
                self.state.step += 1
                self.state.step_in_epoch += 1
                continue
            self._train_step(epoch, batch)
        self._flush_logs()
        return True

    def _train_mode(self) -> None:
        """Training mode, with BatchNorm kept in eval mode in a frozen (or ``freeze_bn``)
        backbone."""
        self.model.train()
        if not self.net.backbone_trainable or self.config.freeze_bn:
            freeze_batchnorm(self.model.backbone)

    def _train_step(self, epoch: int, batch: Batch) -> None:
        cfg, state = self.config, self.state
        with GLOBAL_RNG_LOCK:
            seed = step_seed(cfg.seed, state.step, self.dist.rank)
            torch.manual_seed(seed)  # dropout & co. draw from the global generator
            self.generator.manual_seed(seed)
            step = self._make_step(epoch, batch)
            inputs, n = self._network_inputs(step, batch)
            with self.autocast():
                features, logits = self.forward(inputs, n)
            step.features, step.logits = features[:n], logits[:n]
            if len(features) > n:
                step.target_features, step.target_logits = features[n:], logits[n:]
            terms = self._losses(step)
            loss = torch.stack(list(terms.values())).sum()
            optim.step(self, loss)
            optim.adversary_step(self, step, taken=terms)
        state.step += 1
        state.step_in_epoch += 1
        self._record(step, loss, terms)

    def _losses(self, step: Step) -> dict[str, torch.Tensor]:
        terms: dict[str, torch.Tensor] = {}
        if not self.data.source_free:  # source-free runs have no labelled batch
            per_sample = hooks.supervised_loss(self.pm, step.logits, step.y, step, "source")
            terms["supervised"] = class_balance.weighted_mean(
                per_sample, step.y, self.class_weights
            )
        if step.target_logits is not None:
            pl = hooks.pseudo_labels(self.pm, step)
            if pl is not None:
                logits = pl.logits if pl.logits is not None else step.target_logits
                losses = hooks.supervised_loss(self.pm, logits, pl.targets, step, "target")
                w = pl.weights.float()
                terms["pseudo_label"] = (losses.float() * w).sum() / max(1, len(w))
                step.log("mask_rate", (w > 0).float().mean())
                if pl.targets.ndim == 1 and step._judge_targets is not None:
                    self._judge_target_predictions(step, pl.targets, w > 0)
        terms.update(hooks.extra_losses(self.pm, step, taken=terms))
        if not terms:
            raise PluginError(
                "no strategy gave this step a loss (a source-free run needs a strategy that "
                "trains on the target, such as adapt='shot')."
            )
        return terms

    # -- pieces of a step ------------------------------------------------------------------
    def _make_step(self, epoch: int, batch: Batch) -> Step:
        x, x_t = batch.x, batch.x_target
        augment = self.feeder.source.augment  # batch-wise (digit-safe) views on the device
        if x is not None and augment is not None:
            x = augment(x, self.generator)
        step = Step(
            trainer=self,
            index=self.state.step,
            epoch=epoch + 1,
            progress=self.state.progress,
            x=x,
            y=batch.y,
            indices=batch.indices,
            x_target=x_t,
            target_indices=batch.target_indices,
            generator=self.generator,
            _forward=self._extra_forward,
        )
        if batch.target_indices is not None and self.task == "classification":
            step._judge_targets = lambda pred, mask: self._judge_target_predictions(
                step, pred, mask
            )
        if batch.target_indices is not None and not self.net.cached:
            step._target_views = lambda kind: self.feeder.target.view(kind, batch, self.generator)
        if x is not None:  # e.g. FDA's or PixelDA's target-style source images
            step.x = hooks.transform_source(self.pm, step)
        return step

    def _network_inputs(self, step: Step, batch: Batch) -> tuple[torch.Tensor, int]:
        """The source (and target) inputs of one forward call, and the source batch size."""
        if self.net.cached:
            parts = [batch.cached] + (
                [batch.target_cached] if batch.target_cached is not None else []
            )
        else:
            parts = [self.model.prepare(step.x)]
            if step.x_target is not None:
                parts.append(self.model.prepare(step.x_target))
        inputs = torch.cat(parts) if len(parts) > 1 else parts[0]
        if not self.net.cached and self.channels_last and inputs.ndim == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        return inputs, len(step.y)

    def _extra_forward(
        self, images: torch.Tensor, domain: str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``Step.forward``: extra views through the same network and precision, with gradients."""
        inputs = self.model.prepare(images)
        if self.channels_last and inputs.ndim == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with self.autocast(), domain_context(domain):
            return self.forward(inputs)

    def _judge_target_predictions(
        self, step: Step, predicted: torch.Tensor, mask: torch.Tensor
    ) -> None:
        """Log the share of (masked-in) target predictions that are right, where the engine
        knows the truth; strategies never see it."""
        if self._target_truth is None:
            return  # the truth of this target is unknown: nothing to measure
        truth = self._target_truth[step.target_indices.to(self._target_truth.device)]
        known = mask.bool() & (truth != UNLABELLED)
        n = known.sum()
        right = (predicted.to(truth.device) == truth) & known
        step.log("pseudo_label_accuracy", right.sum() / n.clamp(min=1), weight=n)

    def _record(self, step: Step, loss: torch.Tensor, terms: dict[str, torch.Tensor]) -> None:
        """Log the step's scalars, tell observers, write the periodic checkpoint."""
        cfg, state = self.config, self.state
        scalars = {"loss": loss.detach(), **{k: v.detach() for k, v in terms.items()}}
        clash = sorted(set(step.stats) & set(scalars))
        if clash:
            raise PluginError(
                f"a strategy logged {clash} with step.log, which would hide the loss term of that "
                "name; log diagnostics under names of their own."
            )
        scalars.update(step.stats)
        weights = {k: step.stat_weights.get(k, 1.0) for k in scalars}
        self.logs.add(state.step, scalars, weights)
        logs: dict[str, float] = {}
        if state.step % cfg.log_every == 0:
            logs = self._flush_logs()
            logs["lr"] = self.optimizer.param_groups[-1]["lr"]
        hooks.notify(self.pm, "tlkit_on_step_end", trainer=self, step=step, logs=logs)
        if cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0:
            self._flush_logs()
            self._save("last.pt")

    def _flush_logs(self) -> dict[str, float]:
        """Bring pending step scalars to the host; fail at the first non-finite loss."""
        try:
            return self.logs.flush(self.state.epoch + 1)
        except NonFiniteLoss as bad:
            detail = ", ".join(f"{k}={v:.4g}" for k, v in bad.scalars.items())
            raise TrainingError(
                f"the loss became {bad.value} at step {bad.step} (epoch {self.state.epoch + 1}; "
                f"{detail}). {resume.note(self)} Try a lower lr (now {self.config.lr}), "
                "grad_clip=1.0, or precision='fp32'."
            ) from None

    # -- end of epoch: evaluate, record, checkpoint ----------------------------------------
    def _end_epoch(self, epoch: int) -> None:
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "step": self.state.step,
            **self.logs.epoch_means(),
        }
        row.update(self.evaluate_epoch(taken=row))
        row["lr"] = self.optimizer.param_groups[-1]["lr"]
        if self.feeder.skipped:  # files that could not be decoded so far (each warned about once)
            row["skipped_files"] = self.feeder.skipped
        self.history.append(row)
        self.state.epoch += 1
        self.state.step_in_epoch = 0
        improved = False
        try:
            improved = self._update_best(row)
            self.stopping.epoch_end(self, improved)
            hooks.notify(self.pm, "tlkit_on_epoch_end", trainer=self, epoch=epoch + 1, metrics=row)
        finally:  # the epoch's checkpoint survives a failing observer (or monitor)
            if self.config.checkpoint_dir:
                self._save("last.pt")
                if improved:
                    self._save("best.pt")

    def evaluate_epoch(self, taken: dict[str, Any] | None = None) -> dict[str, float]:
        """Scalar metrics on each held-out set (``source_`` / ``target_``) and validator scores;
        the full metrics of each set are kept in :attr:`eval_results`."""
        out: dict[str, float] = {}
        self.eval_results = {}
        hooks.notify(self.pm, "tlkit_before_evaluate", trainer=self)
        model = self.ema.module if self.ema is not None else self.model
        for name, domain in self.data.eval_sets().items():
            batches, from_features = self.feeder.eval_batches(f"eval_{name}", self.net.cached)
            statistics = (  # the EMA model has no hooks: it gets the source copy by hand
                self.domain_stats.evaluating(model, name)
                if self.domain_stats is not None
                else contextlib.nullcontext()
            )
            with domain_context(name), statistics:
                p = predict(model, batches, from_features=from_features, precision=self.precision)
            metrics = metrics_from_outputs(p.outputs, domain, self.num_classes, p.indices)
            self.eval_results[name] = metrics
            for key in ("accuracy", "mae", "rmse"):
                if key in metrics:
                    out[f"{name}_{key}"] = metrics[key]
        if self.data.target is not None and hooks.implementations(self.pm, "tlkit_target_scores"):
            if self.net.cached:
                self.feeder.cache_features(self._features, target=True)
            batches, from_features = self.feeder.eval_batches("target", self.net.cached)
            with domain_context("target"):
                p = predict(model, batches, from_features=from_features, precision=self.precision)
            out.update(
                hooks.target_scores(
                    self.pm,
                    [*(taken or {}), *out],
                    trainer=self,
                    logits=p.outputs,
                    features=p.features,
                )
            )
        self._train_mode()
        return out

    def _update_best(self, row: dict[str, Any]) -> bool:
        name, mode = self.monitor_name, self.monitor_mode
        if name not in row:
            raise ConfigError(
                f"monitor='{name}' is not among this run's metrics {sorted(row)}; no validator "
                "reported it."
            )
        value, best = row[name], self.best["value"]
        better = best is None or (value > best if mode == "max" else value < best)
        if better:
            self.best = {"value": value, "epoch": row["epoch"], "metric": name}
        return better

    # -- checkpoints (see tlkit.engine.resume) ---------------------------------------------
    def _save(self, name: str) -> None:
        if self.config.checkpoint_dir and self.is_main:
            path = resume.save(self, name)
            if name == "last.pt" and path is not None:
                self.last_checkpoint = path

    def checkpoint_payload(self, *, training_state: bool = True) -> dict[str, Any]:
        """Everything needed to rebuild the model and, with ``training_state``, to resume."""
        return resume.payload(self, training_state=training_state)
