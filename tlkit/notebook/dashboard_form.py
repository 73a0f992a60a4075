"""The dashboard's form: the fields that describe a run, filled from the plugin registry.

:class:`Form` builds the fields (named after :func:`tlkit.fit`'s options), refreshes their choices
from the registry and turns its values into :func:`tlkit.fit` options. It judges nothing itself:
the values go to :class:`tlkit.FitConfig` and the engine's rules (:mod:`tlkit.engine.rules`), so
a bad value gets the message the API and the CLI give. Numbers are typed as text, so that
``abc`` in ``lr`` reaches that check and comes back as an error naming ``lr`` (a numeric widget
would silently put the old number back). :class:`CheckList` is the checkbox list used for the
strategy families.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

from tlkit import registry
from tlkit.engine.config import MODES, SAMPLERS, ConfigError

#: Strategy families shown as checkbox lists: (form field, registry family).
CHECK_FAMILIES = (("adapt", "adapt"), ("regularize", "regularizer"), ("validate", "validator"))
#: Fields typed as text and read as numbers (empty: the option's "not set").
NUMBER_FIELDS = ("epochs", "lr", "batch_size", "image_size", "seed", "patience")
#: Every field a Dashboard exposes as an attribute of its own (``dash.lr.value = "3e-4"``).
FIELDS = (
    "dataset", "backbone", "loss", "pseudo_label", "mode", "monitor", "adapt", "regularize",
    "validate", *NUMBER_FIELDS, "restore_best", "class_weight", "sampler", "log_dir",
    "runs_folder", "runs_note",
)  # fmt: skip


def strategy_names(family: str) -> list[str]:
    """Names of the installed strategies of one family, sorted."""
    return [s.name for s in registry.strategies(family)]


def backbone_names() -> list[str]:
    """Backbone names the form offers (``timm:<name>`` needs typing, so it is left out)."""
    from tlkit.backbones import list_backbones

    return [b for b in list_backbones() if "<" not in b]


def read_number(text: Any) -> Any:
    """A field's text as fit() gets it: ``"3"`` -> 3, ``"3e-4"`` -> 0.0003, ``""`` -> None, any
    other text unchanged (``"auto"``, ``"find"``, or a mistake that FitConfig names)."""
    if not isinstance(text, str):
        return text
    text = text.strip()
    if not text:
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def number_field(description: str, tooltip: str = "") -> Any:
    """A text field for a number; assigning a number from code (``field.value = 3``) works."""
    import ipywidgets as w
    import traitlets

    class NumberTrait(traitlets.Unicode):
        def validate(self, obj: Any, value: Any) -> str:
            if value is None:
                value = ""
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                value = str(value)
            return super().validate(obj, value)

    class NumberText(w.Text):
        value = NumberTrait(help="the number, as text").tag(sync=True)

    return NumberText(
        description=description,
        tooltip=tooltip,
        style={"description_width": "6.5em"},
        layout=w.Layout(width="13em"),
    )


class CheckList:
    """A list of checkboxes with a selector's API (``options``, ``value`` as a tuple), laid out
    in ``columns`` columns.

    Why: ``SelectMultiple`` needs Ctrl-click to deselect; a checkbox is one click each way.
    """

    def __init__(self, description: str, columns: int = 1) -> None:
        import ipywidgets as w

        self.description = description
        self.boxes: dict[str, Any] = {}
        self._callbacks: list[Any] = []
        self.label = w.HTML(f"<b>{escape(description)}</b>")
        self.empty = w.HTML("<i style='color:#777'>none installed</i>")
        self.list = w.GridBox(
            layout=w.Layout(
                width="auto", grid_template_columns=f"repeat({columns}, auto)", grid_gap="0 10px"
            )
        )
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
                description=name, indent=False, layout=w.Layout(width="auto", height="24px")
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


class Form:
    """The dashboard's fields, laid out in a collapsible section.

    Args:
        data_names: the user's own tasks, listed before the bundled datasets.
        fit_options: fixed :class:`tlkit.FitConfig` options added to every run.
        temp_root: the temporary runs folder (the note beside the runs folder says so), if any.
    """

    def __init__(
        self, data_names: Sequence[str], fit_options: Mapping[str, Any], temp_root: Path | None
    ) -> None:
        import ipywidgets as w

        self.data_names, self.fit_options, self.temp_root = list(data_names), fit_options, temp_root
        desc = {"description_width": "6.5em"}

        def dropdown(name: str, **kw: Any) -> Any:
            return w.Dropdown(description=name, style=desc, layout=w.Layout(width="17em"), **kw)

        self.dataset = dropdown("dataset")
        self.backbone = dropdown("backbone")
        self.loss = dropdown("loss")
        self.pseudo_label = dropdown("pseudo_label")
        self.mode = dropdown("mode", options=list(MODES))
        self.monitor = dropdown("monitor", tooltip="the metric that picks best.pt")
        self.adapt = CheckList("adapt", columns=3)
        self.regularize = CheckList("regularize", columns=2)
        self.validate = CheckList("validate", columns=3)
        self.epochs = number_field("epochs")
        self.lr = number_field("lr")
        self.batch_size = number_field("batch_size", "a number, or auto")
        self.image_size = number_field("image_size", "empty or 0: the backbone's default")
        self.seed = number_field("seed")
        self.patience = number_field("patience", "stop after this many epochs without progress")
        self.restore_best = w.Checkbox(
            description="restore_best",
            indent=False,
            tooltip="return the weights of the monitor's best epoch",
            layout=w.Layout(width="auto"),
        )
        self.class_weight = dropdown(
            "class_weight", options=[("none", ""), ("balanced", "balanced")]
        )
        self.sampler = dropdown("sampler", options=list(SAMPLERS))
        self.log_dir = w.Text(
            description="log_dir",
            placeholder="a folder for metrics.csv",
            style=desc,
            layout=w.Layout(width="17em"),
        )
        self.runs_folder = w.Text(
            description="runs folder",
            style=desc,
            layout=w.Layout(width="38em", max_width="100%"),
            tooltip="each run is saved in its own run-N folder here (best.pt, last.pt)",
        )
        self.runs_note = w.HTML()
        self.validate.observe(self.update_monitor)
        self.runs_folder.observe(lambda _: self.note_runs_folder(), names="value")

        def column(*children: Any) -> Any:
            return w.VBox(list(children), layout=w.Layout(width="auto", flex="0 0 auto"))

        # one flex row that wraps: in a narrow column the groups stack instead of scrolling
        fields = w.Box(
            [
                column(self.dataset, self.backbone, self.loss, self.pseudo_label, self.mode),
                column(self.epochs, self.lr, self.batch_size, self.image_size, self.seed),
                column(self.adapt.widget, self.regularize.widget, self.validate.widget),
                column(
                    self.monitor,
                    self.patience,
                    self.restore_best,
                    self.class_weight,
                    self.sampler,
                    self.log_dir,
                ),
            ],
            layout=w.Layout(
                display="flex", flex_flow="row wrap", grid_gap="4px 18px", width="100%"
            ),
        )
        self.fields = fields
        self.section = w.Accordion(
            children=[w.VBox([fields, w.VBox([self.runs_folder, self.runs_note])])],
            titles=("options",),
            selected_index=0,
        )
        self.section.add_class("tlkit-form")
        for name in FIELDS:  # stable hooks for CSS and tests: .tlkit-field-lr
            widget = getattr(self, name)
            getattr(widget, "widget", widget).add_class(f"tlkit-field-{name}")

    # -- showing and hiding ----------------------------------------------------------------------
    def collapse(self, summary: str) -> None:
        """Fold the fields away (so the curves fit the screen), with ``summary`` as the title."""
        self.section.set_title(0, f"options: {summary} (click to change)")
        self.section.selected_index = None

    def expand(self) -> None:
        self.section.set_title(0, "options")
        self.section.selected_index = 0

    # -- values ------------------------------------------------------------------------------------
    def set_initial(self, name: str, value: Any) -> None:
        """Set a field; a name the field does not offer is a ConfigError naming the choices
        (a backbone the list leaves out, e.g. ``timm:...``, is added to it instead)."""
        widget = getattr(self, name)
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

    def note_runs_folder(self) -> None:
        path = self.runs_folder.value.strip()
        if self.temp_root is not None and Path(path) == self.temp_root:
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

        self._set_options(self.dataset, [*self.data_names, *names()])
        self._set_options(self.backbone, backbone_names())
        self._set_options(self.loss, ["auto", *strategy_names("loss")])
        self._set_options(
            self.pseudo_label, [("none", ""), *((n, n) for n in strategy_names("pseudo_label"))]
        )
        for name, family in CHECK_FAMILIES:
            getattr(self, name).options = strategy_names(family)
        self.update_monitor()

    def update_monitor(self) -> None:
        """Offer the held-out metrics and the ticked validators' scores. Ticking a validator
        never selects its score: which metric keeps ``best.pt`` is the user's choice (a
        validator's favourite epoch can be the worst one, as chapter 6 shows for SND)."""
        scores = [f"score_{v}" for v in self.validate.value]
        options = ["auto", "source_accuracy", "target_accuracy", "train_loss", *scores]
        old = self.monitor.value
        self.monitor.options = options
        self.monitor.value = old if old in options else "auto"

    def options(self) -> dict[str, Any]:
        """The fit() options the form currently describes (plus the constructor's extras);
        numbers are read from their text, anything else is passed on for FitConfig to judge."""
        size = read_number(self.image_size.value)
        return {
            **self.fit_options,
            "backbone": self.backbone.value,
            "epochs": read_number(self.epochs.value),
            "lr": read_number(self.lr.value),
            "batch_size": read_number(self.batch_size.value),
            "image_size": None if size == 0 else size,
            "mode": self.mode.value,
            "loss": self.loss.value,
            "pseudo_label": self.pseudo_label.value or None,
            "adapt": list(self.adapt.value) or None,
            "regularize": list(self.regularize.value) or None,
            "validate": list(self.validate.value) or None,
            "monitor": self.monitor.value,
            "patience": read_number(self.patience.value),
            "restore_best": self.restore_best.value,
            "class_weight": self.class_weight.value or None,
            "sampler": self.sampler.value,
            "log_dir": self.log_dir.value.strip() or None,
            "seed": read_number(self.seed.value),
        }
