"""``%tlkit``: one-line notebook shortcuts for the things people do most.

Why magics: in a notebook the shortest path from an idea to a curve wins. ``%load_ext tlkit``
registers one line magic with sub-commands::

    %tlkit strategies [FAMILY]          # installed strategies as a table
    %tlkit fit --data synth-digits->digits --adapt dann --epochs 5
    %tlkit dashboard [--dataset NAME]   # the training widget
    %tlkit annotate --data digits -k 1  # the annotation assistant
    %tlkit datasets | backbones         # what can be passed to --data / --backbone

``fit`` draws live curves in the cell (one image, updated in place, so an executed notebook keeps
the final curves as a plain image), returns the :class:`tlkit.Run` and stores it in the user
namespace (``--as NAME``, default ``run``). Options the form does not name go through
``--set key=value`` (any :class:`tlkit.FitConfig` field). Mistakes in the options (an unknown
strategy, a bad value) are reported as a ``UsageError`` -- one message, no traceback.

The extension also shows a :class:`tlkit.Run` with its learning curves (see
:mod:`tlkit.notebook.display`).
"""

from __future__ import annotations

import argparse
import ast
import shlex
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class

from tlkit.backbones import BackboneError
from tlkit.datasets.domain import DataError
from tlkit.engine.config import ConfigError
from tlkit.registry import FAMILIES, PluginError

#: tlkit errors caused by what the user typed: shown as a message, not a traceback.
USER_ERRORS = (ConfigError, PluginError, DataError, BackboneError)


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of exiting the kernel."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message}\n\n{self.format_usage()}")

    def exit(self, status: int = 0, message: str | None = None) -> None:  # type: ignore[override]
        raise UsageError(message or self.format_help())


def _learning_rate(text: str) -> float | str:
    """``--lr`` takes a number or ``find`` (``tlkit.fit(lr="find")``)."""
    if text.strip().lower() == "find":
        return "find"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'find', got {text!r}") from None


def _value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _names(values: list[str] | None) -> list[str] | None:
    """``["dann,coral", "mcc"]`` -> ``["dann", "coral", "mcc"]`` (None when empty)."""
    out = [n.strip() for v in values or [] for n in v.split(",") if n.strip()]
    return out or None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="%tlkit", description="tlkit notebook shortcuts")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    s = sub.add_parser("strategies", help="installed strategies as a table")
    s.add_argument("family", nargs="?", choices=sorted(FAMILIES))
    sub.add_parser("datasets", help="bundled dataset names for --data")
    sub.add_parser("backbones", help="backbone names for --backbone")
    f = sub.add_parser("fit", help="train with live curves; the Run is stored in the namespace")
    f.add_argument("--data", required=True, help="a bundled name, or a DomainPair variable")
    f.add_argument("--backbone", default=None, help="default: tlkit.fit's default")
    f.add_argument("--epochs", type=int, default=5)
    f.add_argument("--lr", type=_learning_rate, help="a number, or 'find' for the lr finder")
    f.add_argument("--batch-size", type=int)
    f.add_argument("--image-size", type=int)
    f.add_argument("--mode")
    f.add_argument("--loss")
    f.add_argument("--pseudo-label")
    for name in ("adapt", "regularize", "validate"):
        f.add_argument(f"--{name}", action="append", help="name, comma list, or repeated")
    f.add_argument("--seed", type=int)
    f.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    f.add_argument("--as", dest="name", default="run", help="variable to store the Run in")
    f.add_argument("--no-live", action="store_true", help="no live curves")
    f.add_argument("--quiet", action="store_true", help="no progress bar")
    d = sub.add_parser("dashboard", help="the training dashboard widget")
    d.add_argument("--dataset")
    d.add_argument("--backbone", default="small_cnn")
    a = sub.add_parser("annotate", help="the annotation assistant widget")
    a.add_argument("--data", required=True)
    a.add_argument("-k", type=int, default=1, help="initial labels per class")
    a.add_argument("--backbone", default="small_cnn")
    a.add_argument("--query", default="margin")
    return parser


def fit_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``tlkit.fit`` keyword options a parsed ``%tlkit fit`` line asks for."""
    options: dict[str, Any] = {}
    for key in ("lr", "batch_size", "image_size", "mode", "loss", "pseudo_label", "seed"):
        value = getattr(args, key)
        if value is not None:
            options[key] = value
    for key in ("adapt", "regularize", "validate"):
        names = _names(getattr(args, key))
        if names:
            options[key] = names
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--set takes KEY=VALUE, got {item!r}.")
        options[key.strip().replace("-", "_")] = _value(value.strip())
    if args.quiet:
        options["progress"] = False
    return options


@magics_class
class TlkitMagics(Magics):
    """The ``%tlkit`` line magic (see the module docstring)."""

    @line_magic
    def tlkit(self, line: str) -> Any:
        """tlkit shortcuts: strategies, fit, dashboard, annotate, datasets, backbones."""
        parser = build_parser()
        args = parser.parse_args(shlex.split(line))
        if args.command is None:
            raise UsageError(parser.format_help())
        try:
            return getattr(self, f"_{args.command}")(args)
        except USER_ERRORS as exc:
            raise UsageError(f"{type(exc).__name__}: {exc}") from exc

    def _strategies(self, args: argparse.Namespace) -> Any:
        from tlkit.registry import strategies

        return strategies(args.family)

    def _datasets(self, args: argparse.Namespace) -> list[str]:
        from tlkit.datasets import names

        return names()

    def _backbones(self, args: argparse.Namespace) -> list[str]:
        from tlkit.backbones import list_backbones

        return list_backbones()

    def _data(self, name: str) -> Any:
        """A bundled dataset name, or the name of a task variable in the user namespace."""
        from tlkit.datasets import Domain, DomainPair

        value = self.shell.user_ns.get(name) if self.shell is not None else None
        return value if isinstance(value, (Domain, DomainPair)) else name

    def _fit(self, args: argparse.Namespace) -> Any:
        from tlkit.api import fit
        from tlkit.notebook.live import DisplaySink, LiveCurves

        options = fit_options(args)
        observers = [] if args.no_live else [LiveCurves(DisplaySink())]
        if args.backbone is not None:
            options["backbone"] = args.backbone
        run = fit(self._data(args.data), epochs=args.epochs, observers=observers, **options)
        if self.shell is not None:
            self.shell.user_ns[args.name] = run
        return run

    def _dashboard(self, args: argparse.Namespace) -> Any:
        from tlkit.notebook.dashboard import Dashboard

        return Dashboard(dataset=args.dataset, backbone=args.backbone)

    def _annotate(self, args: argparse.Namespace) -> Any:
        from tlkit.datasets import few_labels, load
        from tlkit.notebook.annotate import annotate

        data = self._data(args.data)
        task = load(data) if isinstance(data, str) else data
        return annotate(few_labels(task, args.k), backbone=args.backbone, query=args.query)


def register_run_display(ipython: Any) -> None:
    """Show :class:`tlkit.Run` objects with their curves (``text/html``) in this shell."""
    from tlkit.notebook.display import run_html
    from tlkit.run import Run

    ipython.display_formatter.formatters["text/html"].for_type(Run, run_html)


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext tlkit``: register ``%tlkit`` and the rich display of runs."""
    ipython.register_magics(TlkitMagics)
    register_run_display(ipython)


__all__ = ["TlkitMagics", "build_parser", "fit_options", "load_ipython_extension"]
