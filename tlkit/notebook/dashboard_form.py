"""The dashboard's form: the fields that describe a run, filled from the plugin registry.

:class:`Dashboard <tlkit.notebook.dashboard.Dashboard>` inherits :class:`_Form`, which builds the
fields (named after :func:`tlkit.fit`'s options), refreshes their choices from the registry and
refuses impossible combinations in the form's words; :class:`CheckList` is the checkbox list used
for the strategy families. It is a module of its own so that :mod:`tlkit.notebook.dashboard`
reads as the dashboard's layout and training loop; the public names stay importable from there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

from tlkit import registry
from tlkit.datasets.domain import DomainPair
from tlkit.engine.config import MODES, ConfigError

#: Strategy families shown as checkbox lists: (form field, registry family).
_CHECK_FAMILIES = (("adapt", "adapt"), ("regularize", "regularizer"), ("validate", "validator"))
#: Form fields that use the unlabelled target images (the engine refuses them without a target).
_NEEDS_TARGET = ("pseudo_label", "adapt", "validate")


def strategy_names(family: str) -> list[str]:
    """Names of the installed strategies of one family, sorted."""
    return [s.name for s in registry.strategies(family)]


def backbone_names() -> list[str]:
    """Backbone names the form offers (``timm:<name>`` needs typing, so it is left out)."""
    from tlkit.backbones import list_backbones

    return [b for b in list_backbones() if "<" not in b]


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


class CheckList:
    """A list of checkboxes with a selector's API (``options``, ``value`` as a tuple).

    Why: ``SelectMultiple`` needs Ctrl-click to deselect; a checkbox is one click each way.
    """

    def __init__(self, description: str) -> None:
        import ipywidgets as w

        self.description = description
        self.boxes: dict[str, Any] = {}
        self._callbacks: list[Any] = []
        self.label = w.HTML(f"<b>{escape(description)}</b>")
        self.empty = w.HTML("<i style='color:#777'>none installed</i>")
        self.list = w.VBox(layout=w.Layout(width="auto"))
        self.widget = w.VBox([self.label, self.list], layout=w.Layout(width="auto"))
        self.widget.add_class(f"tlkit-{description}")

    @property
    def options(self) -> tuple[str, ...]:
        return tuple(self.boxes)

    @options.setter
    def options(self, names: Sequence[str]) -> None:
        import ipywidgets as w

        old = self.value
        boxes = {}
        for name in names:
            box = self.boxes.get(name) or w.Checkbox(
                description=name, indent=False, layout=w.Layout(width="auto")
            )
            if name not in self.boxes:
                box.observe(self._changed, names="value")
            box.value = name in old
            boxes[name] = box
        self.boxes = boxes
        self.list.children = list(boxes.values()) or [self.empty]

    @property
    def value(self) -> tuple[str, ...]:
        return tuple(name for name, box in self.boxes.items() if box.value)

    @value.setter
    def value(self, names: Sequence[str]) -> None:
        missing = [n for n in names if n not in self.boxes]
        if missing:
            raise ConfigError(
                f"{self.description}={missing} is not offered; choose from {list(self.boxes)}."
            )
        for name, box in self.boxes.items():
            box.value = name in names

    def observe(self, callback: Any) -> None:
        """Call ``callback()`` whenever a box is ticked or unticked."""
        self._callbacks.append(callback)

    def _changed(self, _change: dict) -> None:
        for callback in self._callbacks:
            callback()


class _Form:
    """The form half of :class:`~tlkit.notebook.dashboard.Dashboard` (a mixin): its fields, their
    choices, and :meth:`options` / :meth:`check_form`. Reads the dashboard's ``data``,
    ``fit_options`` and ``_temp_root``."""

    def _build_form(self) -> Any:
        """Create the form's fields and the runs folder; the fields laid out as one wrapping row."""
        import ipywidgets as w

        desc = {"description_width": "7.5em"}
        field = w.Layout(width="19em")

        def dropdown(name: str, **kw: Any) -> Any:
            return w.Dropdown(description=name, style=desc, layout=field, **kw)

        def number(kind: Any, name: str, **kw: Any) -> Any:
            return kind(description=name, style=desc, layout=w.Layout(width="14em"), **kw)

        self.dataset = dropdown("dataset")
        self.backbone = dropdown("backbone")
        self.loss = dropdown("loss")
        self.pseudo_label = dropdown("pseudo_label")
        self.mode = dropdown("mode", options=list(MODES))
        self.monitor = dropdown("monitor", tooltip="the metric that picks best.pt")
        self.adapt = CheckList("adapt")
        self.regularize = CheckList("regularize")
        self.validate = CheckList("validate")
        self.epochs = number(w.IntText, "epochs")
        self.lr = number(w.FloatText, "lr")
        self.batch_size = number(w.IntText, "batch_size")
        self.image_size = number(w.IntText, "image_size", tooltip="0 = the backbone's default")
        self.seed = number(w.IntText, "seed")
        self.runs_folder = w.Text(
            description="runs folder",
            style=desc,
            layout=w.Layout(width="38em", max_width="100%"),
            tooltip="each run is saved in its own run-N folder here (best.pt, last.pt)",
        )
        self.runs_note = w.HTML()
        self.validate.observe(self._update_monitor)
        self.runs_folder.observe(lambda _: self._note_runs_folder(), names="value")

        def column(*children: Any) -> Any:
            return w.VBox(list(children), layout=w.Layout(width="auto", flex="0 0 auto"))

        # One flex row that wraps: at 1100 px with the file browser open the columns stack
        # instead of each getting its own scrollbar.
        form = w.Box(
            [
                column(self.dataset, self.backbone, self.loss, self.pseudo_label, self.mode),
                column(self.adapt.widget, self.regularize.widget, self.validate.widget),
                column(self.epochs, self.lr, self.batch_size, self.image_size, self.seed),
                column(self.monitor),
            ],
            layout=w.Layout(
                display="flex", flex_flow="row wrap", grid_gap="4px 18px", width="100%"
            ),
        )
        return form

    def _initial(self, widget: Any, name: str, value: Any) -> None:
        """Set a form value; a name the form does not offer is a ConfigError naming the choices
        (a backbone the list leaves out, e.g. ``timm:...``, is added to it instead)."""
        offered = getattr(widget, "options", None)
        if offered is not None:
            values = [o[1] if isinstance(o, tuple) else o for o in offered]
            missing = [
                v for v in (value if isinstance(value, tuple) else (value,)) if v not in values
            ]
            if missing and name == "backbone":
                widget.options = [*offered, value]
            elif missing:
                raise ConfigError(f"{name}={missing} is not offered; choose from {values}.")
        widget.value = value

    def _note_runs_folder(self) -> None:
        path = self.runs_folder.value.strip()
        if self._temp_root is not None and Path(path) == self._temp_root:
            text = "a temporary folder, deleted with this dashboard: type a folder to keep runs"
        else:
            text = "runs are kept here (run-1, run-2...; load one with tlkit.load)"
        self.runs_note.value = f"<span style='color:#555;font-size:90%'>{escape(text)}</span>"

    @property
    def checkpoint_root(self) -> Path:
        """The runs folder the form currently names."""
        return Path(self.runs_folder.value.strip() or ".").expanduser()

    @staticmethod
    def _set_options(widget: Any, options: list[Any]) -> None:
        """Replace a selector's options, keeping the current selection where still offered."""
        old = widget.value
        values = [o[1] if isinstance(o, tuple) else o for o in options]
        widget.options = options
        if isinstance(old, tuple):
            widget.value = tuple(v for v in old if v in values)
        elif old in values:
            widget.value = old

    def refresh(self) -> None:
        """Re-read datasets, backbones and strategies (e.g. after ``tlkit.register`` in a cell)."""
        from tlkit.datasets import names

        self._set_options(self.dataset, [*self.data, *names()])
        self._set_options(self.backbone, backbone_names())
        self._set_options(self.loss, ["auto", *strategy_names("loss")])
        self._set_options(
            self.pseudo_label, [("none", ""), *((n, n) for n in strategy_names("pseudo_label"))]
        )
        for name, family in _CHECK_FAMILIES:
            getattr(self, name).options = strategy_names(family)
        self._update_monitor()

    def _update_monitor(self) -> None:
        """Offer the held-out metrics and the ticked validators' scores. Ticking a validator
        never selects its score: which metric keeps ``best.pt`` is the user's choice (a
        validator's favourite epoch can be the worst one, as chapter 6 shows for SND)."""
        scores = [f"score_{v}" for v in self.validate.value]
        options = ["auto", "source_accuracy", "target_accuracy", "train_loss", *scores]
        old = self.monitor.value
        self.monitor.options = options
        self.monitor.value = old if old in options else "auto"

    def options(self) -> dict[str, Any]:
        """The FitConfig options the form currently describes (plus the constructor's extras)."""
        return {
            **self.fit_options,
            "backbone": self.backbone.value,
            "epochs": self.epochs.value,
            "lr": self.lr.value,
            "batch_size": self.batch_size.value,
            "image_size": self.image_size.value or None,
            "mode": self.mode.value,
            "loss": self.loss.value,
            "pseudo_label": self.pseudo_label.value or None,
            "adapt": list(self.adapt.value) or None,
            "regularize": list(self.regularize.value) or None,
            "validate": list(self.validate.value) or None,
            "monitor": self.monitor.value,
            "seed": self.seed.value,
        }

    def check_form(self, task: DomainPair, options: Mapping[str, Any]) -> None:
        """Refuse combinations the engine would refuse, in the form's words: which field, which
        choice, and what to change in the form (not code advice)."""
        dataset = self.dataset.value
        if task.target is None:
            picked = [
                f"{name}={_as_list(options.get(name))}"
                for name in _NEEDS_TARGET
                if _as_list(options.get(name))
            ]
            if picked:
                raise ConfigError(
                    f"{', '.join(picked)} need unlabelled target images, but dataset "
                    f"'{dataset}' has no target. Pick a pair in dataset (a name with '->', such "
                    f"as 'synth-digits->digits'), or untick {' and '.join(picked)}."
                )
        monitor = options.get("monitor", "auto")
        if monitor.startswith("target_") and task.target_test is None:
            raise ConfigError(
                f"monitor={monitor!r} needs a labelled target test set, which dataset "
                f"'{dataset}' does not have; pick another monitor."
            )
        if monitor.startswith("score_") and monitor[6:] not in _as_list(options.get("validate")):
            raise ConfigError(
                f"monitor={monitor!r} is computed by the validator '{monitor[6:]}': tick it "
                "under validate, or pick another monitor."
            )
