"""The training loop. It knows no strategy: losses, pseudo-labels and extra terms come from hooks.

The run's state lives in objects that own it: :class:`~tlkit.engine.optim.Optimisation` (the
optimisers, phases and their steps), :class:`~tlkit.engine.step_services.NetworkServices` (what a
:class:`~tlkit.step.Step` offers strategies), :class:`~tlkit.engine.feeding.Feeder` (the batches),
:class:`~tlkit.engine.logs.StepLog`; checkpoints are :mod:`tlkit.engine.resume`'s. This module is
the run: set-up, the epoch loop, :meth:`Trainer._train_step` (one step, on one screen) and the end
of each epoch (evaluate, record, checkpoint). Randomness is a function of the seed and the step or
epoch (:mod:`tlkit.rng`), so a run resumed after any step replays the uninterrupted one.
"""

from __future__ import annotations

import contextlib
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
    epoch_eval,
    hooks,
    optim,
    resume,
    selection,
    stopping,
)
from tlkit.engine.checkpoint import FolderLock, check_writable, remove_stale_temporaries
from tlkit.engine.config import FitConfig
from tlkit.engine.device import (
    autocast_for,
    compile_hook_guards,
    pick_device,
    pick_precision,
    use_channels_last,
)
from tlkit.engine.evaluate import freeze_batchnorm, predict_outputs
from tlkit.engine.feature_cache import FeatureCache
from tlkit.engine.feeding import Batch, Feeder, as_pair, image_size
from tlkit.engine.logs import NonFiniteLoss, StepLog
from tlkit.engine.network import Network, build_model
from tlkit.engine.optim import Optimisation
from tlkit.engine.step_services import NetworkServices, without_labels
from tlkit.errors import ConfigError, TrainingError
from tlkit.rng import GLOBAL_RNG_LOCK, STRATEGY_INIT, STRATEGY_SETUP, step_seed
from tlkit.step import Step, TrainState
from tlkit.strategy_tools import EMA


class Trainer:
    """The training loop of one run: ``Trainer(data, config).train()``; :class:`tlkit.Trainer`
    (whose ``fit()`` returns a :class:`tlkit.Run`) builds on it.

    The constructor checks what can be checked before training (options, strategies, the
    monitored metric, the checkpoint folder); the folder's lock, a foreign ``last.pt`` and
    strategies refusing a model in ``tlkit_setup`` are checked when training starts.

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
        self.channels_last = use_channels_last(config.channels_last, self.data.modality)
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
            torch.manual_seed(step_seed(config.seed, STRATEGY_INIT))
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
        self.optimisation: Optimisation | None = None  # made when training starts
        self.services: NetworkServices | None = None  # what the steps offer strategies
        self.domain_stats: domain_stats.DomainStatistics | None = None  # the source's BatchNorm
        self.feeder: Feeder | None = None
        self.feature_cache: FeatureCache | None = None  # the frozen backbone's, per train()
        self.train_transform = train_transform  # a user's own pipeline (augment="custom")
        self.image_size = image_size(config, self.data, self.model.backbone)
        self.net = Network(self.model, separate_domains=config.domain_bn == "separate")
        self.generator: torch.Generator | None = None
        self.needs_target = any(getattr(p, "needs_target", False) for p in self.strategies.values())
        self._stop_requested = False
        self.checkpoints = resume.RunCheckpoints(self)  # where they go, the last good one
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
            self._unlabelled_target = without_labels(self.data.target)
        return self._unlabelled_target

    # -- the optimisation's parts, read-only (checkpoints and observers read them) ---------
    @property
    def phase(self) -> str | None:
        """``"frozen"`` or ``"unfrozen"`` (``None`` before training)."""
        return self.optimisation.phase if self.optimisation is not None else None

    @property
    def optimizer(self) -> torch.optim.Optimizer | None:
        """The main optimiser of the current phase (``None`` before training)."""
        return self.optimisation.optimizer if self.optimisation is not None else None

    @property
    def adversary_optimizer(self) -> torch.optim.Optimizer | None:
        """The optimiser of the ``own_optimizer = True`` strategy modules, or ``None``."""
        return self.optimisation.adversary_optimizer if self.optimisation is not None else None

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
            self.model, images, batch_size=batch_size or self.config.eval_batch_size,
            precision=self.precision,
        )  # fmt: skip

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
                if self.feeder is not None:  # no worker processes outlive training
                    self.feeder.close()
                if self.domain_stats is not None:  # the model keeps the target's statistics
                    self.domain_stats.remove()
                hooks.notify(self.pm, "tlkit_on_fit_end", trainer=self, history=self.history)
        return self

    def _start(self, resume_from: str | Path | bool | None) -> None:
        self.checkpoints.adopt_defaults(resume_from)  # unset options follow the checkpoint
        cfg = self.config
        distributed.setup(self.dist, self.device)
        self.model.to(self.device)
        if self.channels_last:  # NHWC weights: convolutions skip a layout reorder each call
            self.model.to(memory_format=torch.channels_last)
        strong = any(getattr(p, "needs_strong_view", False) for p in self.strategies.values())
        self.feeder = Feeder(
            self.data, cfg, self.device, self.dist, size=self.image_size, strong_view=strong,
            train_transform=self.train_transform,
        )  # fmt: skip
        self.feature_cache = FeatureCache(self.model, self.image_size, cfg, self.precision)
        truth = self.data.target.clean_labels if self.data.target is not None else None
        known = truth is not None and self.task == "classification"
        self.generator = torch.Generator(self.device)
        self.services = NetworkServices(
            self.net,
            autocast=self.autocast,
            channels_last=self.channels_last,
            truth=truth.to(self.device) if known and bool((truth != UNLABELLED).any()) else None,
            target_feed=self.feeder.target,
            generator=self.generator,
        )
        with GLOBAL_RNG_LOCK:  # strategy modules' initialisation is a function of the seed
            torch.manual_seed(step_seed(cfg.seed, STRATEGY_SETUP))
            modules = hooks.setup(self.pm, self)
        self.extra_modules = {k: m.to(self.device) for k, m in modules.items()}
        if cfg.ema is not None:
            self.ema = EMA(self.model, cfg.ema)
        self.optimisation = Optimisation(
            cfg, self.model, self.extra_modules, self.dist, ema=self.ema,
            fp16=self.precision == "fp16",
        )  # fmt: skip
        self.domain_stats = domain_stats.attach(  # after the strategies' setup and EMA
            self.model, separate_domains=self.net.separate_domains,
            strategies=self.strategies.values(), previous=self.domain_stats,
        )  # fmt: skip
        self.state.total_steps = cfg.epochs * self.feeder.steps_per_epoch
        if resume_from:
            self.checkpoints.restore(resume_from)
        elif self.config.checkpoint_dir and self.is_main:
            self.checkpoints.set_aside_earlier()
        hooks.notify(self.pm, "tlkit_on_fit_start", trainer=self)

    # -- phases: frozen backbone, then unfrozen -------------------------------------------
    def _enter_phase(self, phase: str) -> None:
        """Configure freezing, the feature cache and a fresh optimiser when the phase changes
        (and restore the checkpoint's optimiser state when it was saved in this phase)."""
        if phase == self.phase:
            return
        trainable = phase == optim.UNFROZEN
        cached = not trainable and not self._needs_inputs()
        self.services.enter_phase(trainable, cached, self.dist, compile=self.config.compile)
        if cached:
            self.feature_cache.fill(self.feeder.feature_sets(target=self.needs_target))
        replaced = any(getattr(p, "replaces_weight_decay", False) for p in self.strategies.values())
        self.optimisation.enter_phase(
            phase,
            backbone_trainable=trainable,
            model_weight_decay=0.0 if replaced else self.config.weight_decay,
            steps_per_epoch=self.feeder.steps_per_epoch,
        )

    def _needs_inputs(self) -> bool:
        """Inputs must go through the backbone each step (no feature cache): augmentation was
        asked for explicitly (``augment="auto"`` trains a frozen backbone's head on cached
        features), or a strategy looks at the inputs."""
        explicit = self.config.augment not in (False, "none", "auto")
        return explicit or any(
            getattr(p, "needs_images", False) or hasattr(p, "tlkit_transform_source")
            for p in self.strategies.values()
        )

    # -- one epoch / one step --------------------------------------------------------------
    def _train_epoch(self, epoch: int) -> bool:
        """Train the rest of ``epoch``; ``False`` when stopped early (stop request, max_steps)."""
        self._train_mode()
        if self.state.step_in_epoch == 0:
            self.logs.start_epoch()
        batches = self.feeder.batches(
            epoch, self.state.step_in_epoch, with_target=self.needs_target,
            features=self.feature_cache if self.net.cached else None,
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
            inputs, n = self.services.inputs(step, batch)
            with self.autocast():
                features, logits = self.services.network(inputs, n)
            step.features, step.logits = features[:n], logits[:n]
            if len(features) > n:
                step.target_features, step.target_logits = features[n:], logits[n:]
            terms = hooks.loss_terms(self.pm, step, self.class_weights, self.data.source_free)
            loss = torch.stack(list(terms.values())).sum()
            self.optimisation.step(loss, state.step)
            self.optimisation.adversary_step(self.pm, step, state.step, taken=terms)
        state.step += 1
        state.step_in_epoch += 1
        self._record(step, loss, terms)

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
            services=self.services.for_batch(batch),
        )
        if x is not None:  # e.g. FDA's or PixelDA's target-style source images
            step.x = hooks.transform_source(self.pm, step)
        return step

    def _record(self, step: Step, loss: torch.Tensor, terms: dict[str, torch.Tensor]) -> None:
        """Log the step's scalars, tell observers, write the periodic checkpoint."""
        cfg, state = self.config, self.state
        self.logs.add(state.step, *hooks.step_scalars(step, loss, terms))
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
                f"{detail}). {self.checkpoints.note()} Try a lower lr (now {self.config.lr}), "
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
        improved = None
        try:
            improved = epoch_eval.improved(row, self.best, self.monitor_name, self.monitor_mode)
            self.best = improved or self.best
            self.stopping.epoch_end(self, improved is not None)
            hooks.notify(self.pm, "tlkit_on_epoch_end", trainer=self, epoch=epoch + 1, metrics=row)
        finally:  # the epoch's checkpoint survives a failing observer (or monitor)
            if self.config.checkpoint_dir:
                self._save("last.pt")
                if improved is not None:
                    self._save("best.pt")

    def evaluate_epoch(self, taken: dict[str, Any] | None = None) -> dict[str, float]:
        """Scalar metrics on each held-out set (``source_`` / ``target_``) and validator scores;
        the full metrics of each set are kept in :attr:`eval_results`."""
        self.eval_results = {}
        hooks.notify(self.pm, "tlkit_before_evaluate", trainer=self)
        model = self.ema.module if self.ema is not None else self.model
        features, precision = self.feature_cache if self.net.cached else None, self.precision
        out, self.eval_results = epoch_eval.held_out(
            model, self.data, self.feeder, features=features, domain_stats=self.domain_stats,
            precision=precision,
        )  # fmt: skip
        if self.data.target is not None and hooks.implementations(self.pm, "tlkit_target_scores"):
            if features is not None:
                features.fill(self.feeder.feature_sets(target=True))
            p = epoch_eval.target_predictions(
                model, self.feeder, features=features, precision=precision
            )
            seen = [*(taken or {}), *out]
            out.update(
                hooks.target_scores(
                    self.pm, seen, trainer=self, logits=p.outputs, features=p.features
                )
            )
        self._train_mode()
        return out

    # -- checkpoints (see tlkit.engine.resume) ---------------------------------------------
    def _save(self, name: str) -> None:
        if self.is_main:
            self.checkpoints.save(name)
