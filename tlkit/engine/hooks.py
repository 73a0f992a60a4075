"""Calling strategies: every hook call of a run goes through here.

Each implementation is called the way pluggy would (last registered first, ``tryfirst`` /
``trylast`` respected, *firstresult* hooks stop at the first non-``None`` answer), but one at a
time, so that

* an exception inside a hook becomes a :class:`tlkit.PluginError` naming the strategy and the hook;
* every result is checked (type, shape, names) and a bad one is a ``PluginError`` naming the
  strategy and the hook and saying what was expected -- not a raw autograd error three calls later.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable
from typing import Any

import pluggy
import torch
from torch import nn

from tlkit.backbones.target_scale import standardised
from tlkit.engine.class_balance import weighted_mean
from tlkit.errors import PluginError
from tlkit.step import OwnOptimizer, PseudoLabels, Step

# -- dispatch ---------------------------------------------------------------------------------


def _who(impl: Any) -> str:
    """Who an implementation belongs to, for messages (its :class:`tlkit.registry.PluginName`)."""
    return impl.plugin_name.describe()


def _run(impl: Any, hook: str, kwargs: dict[str, Any]) -> Any:
    args = [kwargs[a] for a in impl.argnames]
    extra = {a: kwargs[a] for a in getattr(impl, "kwargnames", ()) if a in kwargs}
    try:
        return impl.function(*args, **extra)
    except PluginError:
        raise
    except Exception as exc:
        raise PluginError(
            f"{_who(impl)} failed in hook {hook}: {type(exc).__name__}: {exc}"
        ) from exc


def implementations(pm: pluggy.PluginManager, hook: str) -> list[Any]:
    """The hook's implementations in call order."""
    return list(reversed(getattr(pm.hook, hook).get_hookimpls()))


def call_all(pm: pluggy.PluginManager, hook: str, **kwargs: Any) -> list[tuple[Any, Any]]:
    """``[(impl, result)]`` for every implementation that returned something other than None."""
    out = []
    for impl in implementations(pm, hook):
        result = _run(impl, hook, kwargs)
        if result is not None:
            out.append((impl, result))
    return out


def call_first(pm: pluggy.PluginManager, hook: str, **kwargs: Any) -> tuple[Any, Any]:
    """``(impl, result)`` of the first implementation that answers, or ``(None, None)``."""
    for impl in implementations(pm, hook):
        result = _run(impl, hook, kwargs)
        if result is not None:
            return impl, result
    return None, None


def notify(pm: pluggy.PluginManager, hook: str, **kwargs: Any) -> None:
    """Call an event hook (results are ignored)."""
    for impl in implementations(pm, hook):
        _run(impl, hook, kwargs)


def _bad(impl: Any, hook: str, problem: str) -> PluginError:
    return PluginError(f"{_who(impl)} returned a bad result from {hook}: {problem}")


def _shape(x: Any) -> str:
    return str(tuple(x.shape)) if isinstance(x, torch.Tensor) else type(x).__name__


# -- checked hooks ----------------------------------------------------------------------------


def setup(pm: pluggy.PluginManager, trainer: Any) -> dict[str, nn.Module]:
    """``tlkit_setup``: the modules strategies train alongside the model, by strategy name --
    each with parameters of its own (not the model's, not another strategy's)."""
    hook = "tlkit_setup"
    modules: dict[str, nn.Module] = {}
    owner = {id(p): "the model" for p in trainer.model.parameters()}
    for impl, module in call_all(pm, hook, trainer=trainer):
        if not isinstance(module, nn.Module):
            raise _bad(impl, hook, f"it must return an nn.Module or None, got {_shape(module)}.")
        for p in module.parameters():
            if id(p) in owner:
                raise _bad(
                    impl,
                    hook,
                    f"its module shares parameters with {owner[id(p)]}; return only modules of "
                    "the strategy's own (the model's parameters are trained already).",
                )
            owner[id(p)] = _who(impl)
        modules[impl.plugin_name.label] = module  # a plain str: checkpoints keep these names
    for name, module in modules.items():  # own_optimizer declarations, checked now
        for path, m in module.named_modules():
            own_settings(m, f"strategy '{name}', module '{f'{name}.{path}' if path else name}'")
    for impl in implementations(pm, "tlkit_adversary_losses"):
        mine = modules.get(impl.plugin_name.label)
        if mine is None or not any(_trains_on_adversary(m) for m in mine.modules()):
            raise PluginError(
                f"{_who(impl)} implements tlkit_adversary_losses but returned no module marked "
                "own_optimizer = True (or an OwnOptimizer with loss='adversary') from "
                "tlkit_setup, so the second optimiser would have nothing to train and the hook "
                "would never run."
            )
    return modules


def _trains_on_adversary(module: nn.Module) -> bool:
    """The module declares an optimiser of its own that steps on the adversary losses."""
    settings = own_settings(module, "")
    return settings is None or (settings is not False and settings.loss == "adversary")


def own_settings(module: nn.Module, where: str) -> OwnOptimizer | None | bool:
    """A module's ``own_optimizer`` declaration: ``False`` (none), ``None`` (``True``: the run's
    optimiser) or its :class:`OwnOptimizer` settings; anything else is explained."""
    value = getattr(module, "own_optimizer", False)
    if value is False or value is None:
        return False
    if value is True:
        return None
    if isinstance(value, OwnOptimizer):
        return value
    if isinstance(value, dict):
        try:
            return OwnOptimizer(**value)
        except (TypeError, ValueError) as exc:
            raise PluginError(f"{where}: own_optimizer={value!r} is not valid ({exc}).") from None
    raise PluginError(
        f"{where}: own_optimizer must be True, a tlkit.OwnOptimizer(lr=..., betas=...) or a dict "
        f"of its fields; got {type(value).__name__}."
    )


def loss_terms(
    pm: pluggy.PluginManager,
    step: Step,
    class_weights: torch.Tensor | None,
    source_free: bool,
) -> dict[str, torch.Tensor]:
    """The loss terms of a step after its forward pass: ``supervised`` (the source batch,
    class-weighted), ``pseudo_label`` (the target batch, weighted per sample; its mask rate and,
    where the engine knows the truth, accuracy are logged) and the strategies' extra terms."""
    terms: dict[str, torch.Tensor] = {}
    if not source_free:  # source-free runs have no labelled batch
        per_sample = supervised_loss(pm, step.logits, step.y, step, "source")
        terms["supervised"] = weighted_mean(per_sample, step.y, class_weights)
    if step.target_logits is not None:
        pl = pseudo_labels(pm, step)
        if pl is not None:
            logits = pl.logits if pl.logits is not None else step.target_logits
            losses = supervised_loss(pm, logits, pl.targets, step, "target")
            w = pl.weights.float()
            terms["pseudo_label"] = (losses.float() * w).sum() / max(1, len(w))
            step.log("mask_rate", (w > 0).float().mean())
            judge = step.services is not None and step.trainer.task == "classification"
            if pl.targets.ndim == 1 and judge:
                step.services.judge_targets(step, pl.targets, w > 0)
    terms.update(extra_losses(pm, step, taken=terms))
    if not terms:
        raise PluginError(
            "no strategy gave this step a loss (a source-free run needs a strategy that "
            "trains on the target, such as adapt='shot')."
        )
    return terms


def step_scalars(
    step: Step, loss: torch.Tensor, terms: dict[str, torch.Tensor]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(scalars, weights)`` a step logs: the loss, its terms and what strategies logged with
    ``step.log`` (which may not reuse a term's name)."""
    scalars = {"loss": loss.detach(), **{k: v.detach() for k, v in terms.items()}}
    clash = sorted(set(step.stats) & set(scalars))
    if clash:
        raise PluginError(
            f"a strategy logged {clash} with step.log, which would hide the loss term of that "
            "name; log diagnostics under names of their own."
        )
    scalars.update(step.stats)
    return scalars, {k: step.stat_weights.get(k, 1.0) for k in scalars}


def supervised_loss(
    pm: pluggy.PluginManager,
    logits: torch.Tensor,
    targets: torch.Tensor,
    step: Step,
    domain: str,
) -> torch.Tensor:
    """``tlkit_supervised_loss``: per-sample losses ``(B,)`` (regression: of standardised values,
    see :mod:`tlkit.backbones.target_scale`)."""
    if step.trainer.task == "regression":
        logits, targets = standardised(step.trainer.model, logits, targets)
    hook = "tlkit_supervised_loss"
    impl, loss = call_first(pm, hook, logits=logits, targets=targets, step=step, domain=domain)
    if impl is None:
        raise PluginError(f"no active strategy answered {hook}; select a loss= strategy.")
    n = len(logits)
    if isinstance(loss, torch.Tensor) and logits.requires_grad and not loss.requires_grad:
        raise _bad(
            impl,
            hook,
            "the losses carry no gradient (computed from detached logits, or through .item() / "
            "numpy?); compute them from the logits with torch operations.",
        )
    if not isinstance(loss, torch.Tensor) or not loss.is_floating_point():
        raise _bad(
            impl, hook, f"it must return a float tensor of shape ({n},), got {_shape(loss)}."
        )
    if tuple(loss.shape) != (n,):
        hint = (
            "a single number: return the loss of each sample (reduction='none'); the engine "
            "averages them"
            if loss.ndim == 0
            else "reduce over the other dimensions, not over samples"
        )
        raise _bad(
            impl,
            hook,
            f"per-sample losses must have shape ({n},), got {tuple(loss.shape)}: {hint}.",
        )
    return loss


def pseudo_labels(pm: pluggy.PluginManager, step: Step) -> PseudoLabels | None:
    """``tlkit_pseudo_labels``: a checked :class:`PseudoLabels` for the target batch, or None."""
    hook = "tlkit_pseudo_labels"
    impl, pl = call_first(pm, hook, step=step)
    if impl is None:
        return None
    n, k = step.target_logits.shape[0], step.target_logits.shape[-1]
    if not isinstance(pl, PseudoLabels):
        raise _bad(impl, hook, f"it must return tlkit.PseudoLabels or None, got {_shape(pl)}.")
    t, w = pl.targets, pl.weights
    ok_hard = isinstance(t, torch.Tensor) and tuple(t.shape) == (n,) and not t.is_floating_point()
    ok_soft = isinstance(t, torch.Tensor) and tuple(t.shape) == (n, k) and t.is_floating_point()
    if step.trainer.task == "regression":
        ok_hard = isinstance(t, torch.Tensor) and t.ndim >= 1 and len(t) == n
    checked = step.index < 3  # the range check syncs with the device: the first steps tell
    if (
        checked
        and ok_hard
        and step.trainer.task == "classification"
        and len(t)
        and (int(t.min()) < 0 or int(t.max()) >= k)
    ):
        raise _bad(
            impl,
            hook,
            f"targets must be class ids in [0, {k}), got values from {int(t.min())} to "
            f"{int(t.max())}.",
        )
    if not (ok_hard or ok_soft):
        raise _bad(
            impl,
            hook,
            f"targets must be class ids of shape ({n},) int64 or probabilities ({n}, {k}) float, "
            f"got {_shape(t)}{' ' + str(t.dtype) if isinstance(t, torch.Tensor) else ''}.",
        )
    if not isinstance(w, torch.Tensor) or tuple(w.shape) != (n,):
        raise _bad(impl, hook, f"weights must have shape ({n},), got {_shape(w)}.")
    if pl.logits is not None and (
        not isinstance(pl.logits, torch.Tensor) or tuple(pl.logits.shape) != (n, k)
    ):
        raise _bad(
            impl, hook, f"logits must have shape ({n}, {k}) or be None, got {_shape(pl.logits)}."
        )
    return pl


def composition_order(pm: pluggy.PluginManager, hook: str) -> list[Any]:
    """The hook's implementations in the order their strategies were selected (``adapt=[a, b]``:
    ``a`` first), ``tryfirst`` ones before and ``trylast`` ones after the rest."""
    impls = getattr(pm.hook, hook).get_hookimpls()  # registration order within each group
    first = [i for i in impls if i.tryfirst]
    last = [i for i in impls if i.trylast]
    return first + [i for i in impls if not (i.tryfirst or i.trylast)] + last


#: How far outside [0, 1] transformed images may reach before they are refused (a generator may
#: overshoot a little; 0-255 pixel values or normalised inputs are far outside).
IMAGE_RANGE_SLACK = 0.5


def transform_source(pm: pluggy.PluginManager, step: Step) -> torch.Tensor:
    """``tlkit_transform_source``: the source images the step trains on. The strategies that
    implement it compose in selection order: each sees, as ``step.x``, what the previous one
    returned (``step.x`` is unchanged when none answers)."""
    hook = "tlkit_transform_source"
    for impl in composition_order(pm, hook):
        x = _run(impl, hook, {"step": step})
        if x is not None:
            check_images(impl, hook, x, step.x, checked=step.index < 3)
            step.x = x
    return step.x


def check_images(
    impl: Any, hook: str, x: Any, like: torch.Tensor, *, checked: bool = True
) -> None:
    """Refuse transformed images that are not float images shaped like ``like`` in [0, 1]
    (``checked``: also look at the values, which syncs with the device)."""
    want = f"float images of shape {tuple(like.shape)} in [0, 1], like step.x"
    if not isinstance(x, torch.Tensor):
        raise _bad(impl, hook, f"it must return {want}, got {type(x).__name__}.")
    if x.ndim == 0:
        raise _bad(
            impl, hook, f"it returned a single number (a 0-d tensor); return {want} (or None)."
        )
    if x.shape != like.shape:
        raise _bad(impl, hook, f"it must return {want}, got shape {tuple(x.shape)}.")
    if not x.is_floating_point():
        raise _bad(
            impl,
            hook,
            f"it returned images of dtype {x.dtype}; return {want} (e.g. x.float() / 255 for "
            "8-bit pixels).",
        )
    if checked and x.numel():
        low, high = (float(v) for v in x.detach().aminmax())
        if low < -IMAGE_RANGE_SLACK or high > 1 + IMAGE_RANGE_SLACK:
            raise _bad(
                impl,
                hook,
                f"its images range from {low:.3g} to {high:.3g}; step.x is float in [0, 1] (the "
                "model normalises inputs itself): return images in [0, 1] (divide 0-255 pixel "
                "values by 255, undo any normalisation).",
            )


def adversary_losses(
    pm: pluggy.PluginManager, step: Step, taken: Collection[str] = ()
) -> dict[str, torch.Tensor]:
    """``tlkit_adversary_losses``: named scalar losses for the ``own_optimizer`` modules (names
    may not repeat the main loss terms'); each must carry a gradient."""
    return _named_scalars(pm, "tlkit_adversary_losses", step, taken, needs_grad=True)


def extra_losses(
    pm: pluggy.PluginManager, step: Step, taken: Collection[str]
) -> dict[str, torch.Tensor]:
    """``tlkit_extra_losses``: named scalar loss terms; names may not repeat ``taken`` ones. While
    the backbone trains (the step's features carry a gradient), a term must carry one too."""
    trains = torch.is_grad_enabled() and any(
        isinstance(f, torch.Tensor) and f.requires_grad
        for f in (step.features, step.target_features)
    )
    return _named_scalars(pm, "tlkit_extra_losses", step, taken, needs_grad=trains)


def _named_scalars(
    pm: pluggy.PluginManager,
    hook: str,
    step: Step,
    taken: Collection[str],
    *,
    needs_grad: bool = False,
) -> dict[str, torch.Tensor]:
    terms: dict[str, torch.Tensor] = {}
    given_by: dict[str, Any] = {}  # term name -> the implementation that returned it
    for impl, result in call_all(pm, hook, step=step):
        if not isinstance(result, dict):
            raise _bad(
                impl,
                hook,
                f"it must return a dict {{name: scalar tensor}} or None, got {_shape(result)}.",
            )
        for name, value in result.items():
            if not isinstance(name, str) or not name:
                raise _bad(impl, hook, f"term names must be non-empty strings, got {name!r}.")
            if not isinstance(value, torch.Tensor):
                raise _bad(
                    impl,
                    hook,
                    f"term '{name}' is a {type(value).__name__}; return a tensor computed from the "
                    "step's outputs (a Python number carries no gradient).",
                )
            if value.numel() != 1 or not value.is_floating_point():
                raise _bad(
                    impl,
                    hook,
                    f"term '{name}' must be a float scalar tensor, got shape {tuple(value.shape)} "
                    f"{value.dtype}; reduce it (e.g. .mean()).",
                )
            if needs_grad and not value.requires_grad:
                raise _bad(
                    impl,
                    hook,
                    f"term '{name}' carries no gradient (computed under torch.no_grad(), from "
                    "detached outputs, or through .item() / numpy?), so it would train nothing; "
                    "compute it with torch operations from tensors that carry one.",
                )
            if name in terms:
                raise _term_clash(pm, hook, name, impl, given_by[name])
            if name in taken:
                raise _bad(
                    impl,
                    hook,
                    f"the loss term name '{name}' is already used; give it another name.",
                )
            terms[name] = value.reshape(()).float()
            given_by[name] = impl
    return terms


def _term_clash(pm: pluggy.PluginManager, hook: str, name: str, a: Any, b: Any) -> PluginError:
    """Two strategies return a term of one name: blame the one selected second (a strategy's
    terms are fixed by its author; the later addition to the run is the one to rename)."""
    order = [n for n, _ in pm.list_name_plugin()]
    first, second = sorted((a, b), key=lambda impl: order.index(impl.plugin_name))
    return _bad(
        second,
        hook,
        f"the loss term name '{name}' is already returned by {_who(first)}, selected before "
        "it; give this strategy's term another name.",
    )


def target_scores(
    pm: pluggy.PluginManager, taken: Iterable[str], **kwargs: Any
) -> dict[str, float]:
    """``tlkit_target_scores``: ``{score_<name>: value}``; keys are put in the ``score_``
    namespace and may not collide with other history columns."""
    hook = "tlkit_target_scores"
    taken = set(taken)
    scores: dict[str, float] = {}
    for impl, result in call_all(pm, hook, **kwargs):
        if not isinstance(result, dict):
            raise _bad(
                impl, hook, f"it must return a dict {{name: number}} or None, got {_shape(result)}."
            )
        for name, value in result.items():
            if not isinstance(name, str) or not name:
                raise _bad(impl, hook, f"score names must be non-empty strings, got {name!r}.")
            key = name if name.startswith("score_") else f"score_{name}"
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise _bad(
                    impl, hook, f"score '{name}' must be a number, got {_shape(value)}."
                ) from None
            if key in scores or key in taken:
                raise _bad(impl, hook, f"the score '{key}' is reported twice; rename one.")
            scores[key] = number if math.isfinite(number) else float("nan")
    return scores


def query_scores(pm: pluggy.PluginManager, n: int, **kwargs: Any) -> torch.Tensor | None:
    """``tlkit_query_scores``: a score per pool sample ``(N,)``, or None when nobody answers."""
    hook = "tlkit_query_scores"
    impl, scores = call_first(pm, hook, **kwargs)
    if impl is None:
        return None
    if not isinstance(scores, torch.Tensor) or tuple(scores.shape) != (n,):
        raise _bad(impl, hook, f"it must return scores of shape ({n},), got {_shape(scores)}.")
    return scores.float()
