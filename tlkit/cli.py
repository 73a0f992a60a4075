"""The ``tlkit`` command: fit, demo, evaluate, and listings of datasets, backbones, strategies.

    tlkit demo
    tlkit fit --data synth-digits->digits --backbone small_cnn --epochs 5 --save run.pt
    tlkit fit --config experiment.yaml --set lr=3e-4 --set batch_size=32
    tlkit evaluate run.pt --data synth-digits->digits
    tlkit fit --data shop_photos/ --image-size 224 --save run.pt   # a folder of your own photos
    tlkit fit --data labels.csv --val-split 0.1 --save run.pt       # a CSV of path,label rows
    tlkit fit --data ages.csv --task regression --save run.pt       # a number per image
    tlkit fit --data ages/ --task regression --save run.pt          # ages/23/, ages/41.5/ ...
    tlkit fit --data photos/ --lr find --patience 3 --restore-best --log-dir logs/
    tlkit evaluate run.pt --data shop_photos/
    tlkit predict run.pt new_photos/ --out predictions.csv
    tlkit datasets pack photos/ shards/                            # WebDataset tar shards
    tlkit datasets | tlkit backbones | tlkit strategies

A config file (YAML or JSON) holds ``data``, ``backbone``, ``epochs`` and any ``tlkit.fit`` option;
command-line flags override it. On a folder or CSV, ``fit`` holds out a stratified, seeded share
(``--val-split``, 20% by default) and reports its metrics. Bad input prints one
``tlkit: error: ...`` line and exits 2; Ctrl-C prints where the last checkpoint is and exits 130.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import yaml

from tlkit.cli_inputs import (
    DEFAULT_VAL_SPLIT,
    data_task,
    evaluation_data,
    parse_flag,
    parse_set,
    remove_lock,
    training_data,
    val_split,
)
from tlkit.errors import ConfigError
from tlkit.prediction_table import flat_lists

#: Images per forward pass of ``tlkit evaluate`` and ``tlkit predict``: at 224 px a batch of 256
#: (``run.evaluate``'s default, sized for small in-memory images) takes about 1 GB more than 64
#: (benchmarks/results/cli_folder.md), for no gain on a CPU.
EVAL_BATCH_SIZE = 64


def _load_config(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file '{p}' does not exist.")
    try:
        values = json.loads(p.read_text()) if p.suffix == ".json" else yaml.safe_load(p.read_text())
    except (json.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(
            f"config file '{p}' is not valid YAML/JSON{line}: {problem}; fix it, or pass options "
            "with --set key=value."
        ) from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file '{p}' must hold a mapping of option: value.")
    return values


def _writable_output(path: str | None, what: str, suffixes: tuple[str, ...] = ()) -> None:
    """Fail before training when an output path cannot be written (the trained model would be
    lost after the run otherwise)."""
    if not path:
        return
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{what} '{p}' is a folder; give a file name, e.g. '{p / 'run.pt'}'.")
    if suffixes and p.suffix.lower().lstrip(".") not in suffixes:
        raise ConfigError(
            f"{what} '{p}' has an unknown file type; use one of {', '.join(suffixes)}."
        )
    folder = p.parent if str(p.parent) else Path(".")
    if not folder.is_dir():
        raise ConfigError(f"{what} '{p}': the folder '{folder}' does not exist; create it first.")
    if not os.access(folder, os.W_OK):
        raise ConfigError(f"{what} '{p}': the folder '{folder}' is not writable.")


def _plot_formats() -> tuple[str, ...]:
    from matplotlib.backend_bases import FigureCanvasBase

    return tuple(sorted(FigureCanvasBase.get_supported_filetypes()))


def _cmd_fit(args: argparse.Namespace) -> int:
    import tlkit
    from tlkit.demo import format_table

    options = _load_config(args.config)
    for flag in (
        "data",
        "backbone",
        "epochs",
        "mode",
        "lr",
        "batch_size",
        "image_size",
        "seed",
        "loss",
        "pseudo_label",
        "checkpoint_dir",
        "device",
        "patience",
        "restore_best",
        "sampler",
        "log_dir",
    ):
        value = getattr(args, flag)
        if value is not None:
            options[flag] = value
    if args.class_weight is not None:
        options["class_weight"] = parse_flag("--class-weight", args.class_weight)
    if args.adapt:
        options["adapt"] = args.adapt.split(",")
    for item in args.set or []:
        key, value = parse_set(item)
        options[key] = value
    args.checkpoint_dir = options.get("checkpoint_dir")  # for the line printed on Ctrl-C
    task = data_task(args.task if args.task is not None else options.pop("task", None))
    options.pop("task", None)
    data = options.pop("data", None)
    if not data:
        raise ConfigError(
            "say which data to train on: --data NAME (see `tlkit datasets`) "
            "or a 'data:' entry in --config."
        )
    _writable_output(args.save, "--save")
    _writable_output(args.plot, "--plot", _plot_formats())
    split = val_split(args.val_split)
    seed = tlkit.FitConfig(seed=options.get("seed", 0)).seed  # checked before any data is read
    data, held_out = training_data(data, split, seed, task=task)  # a folder or CSV, split
    if held_out:
        print(held_out)
    backbone = options.pop("backbone", "efficientnet_lite0")
    start = time.perf_counter()
    run = tlkit.fit(data, backbone, resume=True if args.resume else None, **options)
    seconds = time.perf_counter() - start
    row = {"epochs": len(run.history)}
    row.update(
        {k: v for k, v in run.last.items() if k.endswith(("loss", "accuracy", "mae", "rmse"))}
    )
    row["seconds"] = seconds
    print(format_table([row]))
    if args.save:
        print(f"saved {run.save(args.save)}")
    if args.plot:
        run.plot().savefig(args.plot, dpi=110)
        print(f"learning curves saved to {args.plot}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    import tlkit
    from tlkit.demo import run_demo

    seed = tlkit.FitConfig(seed=args.seed).seed  # the rule every run's seed follows
    run_demo(args.out, quick=args.quick, labels_per_class=args.labels_per_class, seed=seed)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import tlkit

    run = tlkit.load(args.checkpoint)
    data = evaluation_data(args.data, task=run.task)
    files = isinstance(data, tlkit.datasets.Domain) and not data.in_memory
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size {args.batch_size}: use a positive number, e.g. 64.")
    results = run.evaluate(data, batch_size=args.batch_size, num_workers=2 if files else 0)
    if "accuracy" in results or "mae" in results:  # one domain: a folder or CSV
        results = {data.name: results}
    for name, metrics in results.items():
        shown = {k: v for k, v in metrics.items() if isinstance(v, float)}
        print(name, "  ".join(f"{k}={v:.4f}" for k, v in shown.items()))
    return 0


def _cmd_datasets(args: argparse.Namespace) -> int:
    import tlkit

    if args.action == "pack":
        if not args.paths or len(args.paths) != 2:
            raise ConfigError("usage: tlkit datasets pack FOLDER OUT_DIR [--shard-size N]")
        source, out = args.paths
        pattern = tlkit.datasets.pack(source, out, shard_size=args.shard_size)
        print(f"wrote {pattern}; train from it with tlkit.datasets.from_shards('{pattern}')")
        return 0
    if args.action is not None or args.paths:
        raise ConfigError(f"unknown datasets action {args.action!r}; try `tlkit datasets pack`.")
    for name in tlkit.datasets.names():
        print(name)
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    import tlkit

    _writable_output(args.out, "--out", ("csv", "parquet"))
    run = tlkit.load(args.checkpoint)
    table = run.predict(
        args.data if len(args.data) > 1 else args.data[0],
        batch_size=args.batch_size,
        top_k=args.top_k,
        num_workers=args.workers,
    )
    failed = int((table["error"] != "").sum()) if "error" in table.columns else 0
    if args.out and args.out.endswith(".parquet"):
        try:
            table.to_parquet(args.out)
        except ImportError:
            raise ConfigError(
                "Parquet output needs pyarrow: pip install pyarrow, or use .csv."
            ) from None
    elif args.out:
        flat_lists(table).to_csv(args.out, index=False)
    else:
        print(table.drop(columns=[c for c in table.columns if c.startswith("top_")]).to_string())
    if args.out:
        print(f"{len(table) - failed} predictions written to {args.out}")
    if failed:
        s = "" if failed == 1 else "s"
        print(f"{failed} file{s} could not be read: listed with the reason in the 'error' column")
    return 0


def _cmd_backbones(args: argparse.Namespace) -> int:
    from tlkit.backbones.availability import format_backbones

    print(format_backbones())  # which names work offline, and what the others download
    return 0


def _cmd_strategies(args: argparse.Namespace) -> int:
    import tlkit

    print(tlkit.strategies())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tlkit", description="Transfer learning with tlkit.")
    sub = parser.add_subparsers(dest="command", required=True)

    fit = sub.add_parser("fit", help="train on a bundled dataset, a task pair or an image folder")
    fit.add_argument(
        "--data", help="dataset/pair name (`tlkit datasets`), an ImageFolder path or a CSV"
    )
    fit.add_argument("--backbone", help="backbone name (`tlkit backbones`)")
    fit.add_argument("--config", help="YAML/JSON file of fit options")
    fit.add_argument("--epochs", type=int)
    fit.add_argument("--mode", choices=["fine_tune", "full", "feature_extraction"])
    fit.add_argument("--lr", help="learning rate, or 'find' to pick one with the lr finder first")
    fit.add_argument("--batch-size", dest="batch_size", type=int)
    fit.add_argument("--image-size", dest="image_size", type=int)
    fit.add_argument("--seed", type=int)
    fit.add_argument("--loss")
    fit.add_argument("--pseudo-label", dest="pseudo_label")
    fit.add_argument("--adapt", help="comma-separated adaptation strategies")
    fit.add_argument("--device")
    fit.add_argument("--checkpoint-dir", dest="checkpoint_dir")
    fit.add_argument("--resume", action="store_true", help="continue from checkpoint-dir/last.pt")
    fit.add_argument(
        "--task",
        help="for a folder or CSV of your own: 'classification' (class folders, a class per "
        "row) or 'regression' (folders named by value, a number per row); bundled datasets "
        "know theirs",
    )
    fit.add_argument("--patience", help="stop after N epochs without a better --set monitor=")
    fit.add_argument(
        "--restore-best",
        dest="restore_best",
        action="store_true",
        default=None,
        help="return the weights of the monitor's best epoch, not the last",
    )
    fit.add_argument(
        "--class-weight",
        dest="class_weight",
        help="'balanced', one weight per class ('[1, 2, 0.5]') or by name ('{cat: 2}')",
    )
    fit.add_argument("--sampler", help="'balanced': draw every class equally often")
    fit.add_argument(
        "--log-dir", dest="log_dir", help="write metrics.csv (and TensorBoard scalars) here"
    )
    fit.add_argument("--set", action="append", metavar="KEY=VALUE", help="any other fit option")
    fit.add_argument("--save", help="write the trained run here (load with tlkit.load)")
    fit.add_argument("--plot", help="save learning curves to this image file")
    fit.add_argument(
        "--val-split",
        dest="val_split",
        default=DEFAULT_VAL_SPLIT,
        help="for a folder or CSV: the share held out (stratified, seeded) to report metrics "
        f"on (default {DEFAULT_VAL_SPLIT}; 0: none)",
    )
    fit.set_defaults(func=_cmd_fit)

    demo = sub.add_parser(
        "demo",
        help="offline demo: scratch vs linear probe vs fine-tuning the ImageNet network on "
        "digits-m with few labels (table + learning curves, ~2 min on 2 CPU cores)",
    )
    demo.add_argument("--out", default="demo_output", help="folder for the plot")
    demo.add_argument("--labels-per-class", type=int, default=10)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--quick", action="store_true", help="a tiny smoke-sized run")
    demo.set_defaults(func=_cmd_demo)

    ev = sub.add_parser("evaluate", help="evaluate a saved run on a dataset's test sets")
    ev.add_argument("checkpoint")
    ev.add_argument("--data", required=True, help="dataset name, image folder or CSV")
    ev.add_argument(
        "--batch-size",
        dest="batch_size",
        type=int,
        default=EVAL_BATCH_SIZE,
        help=f"images per forward pass (default {EVAL_BATCH_SIZE}: camera photos at 224 px fit a "
        "laptop's memory)",
    )
    ev.set_defaults(func=_cmd_evaluate)

    pr = sub.add_parser("predict", help="predict a folder or image files with a saved run")
    pr.add_argument("checkpoint", help="a file saved with run.save / --save")
    pr.add_argument("data", nargs="+", help="a folder of images, a CSV of paths, or image files")
    pr.add_argument("--out", help="write a table here (.csv, or .parquet with pyarrow)")
    pr.add_argument("--batch-size", dest="batch_size", type=int, default=EVAL_BATCH_SIZE)
    pr.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    pr.add_argument("--top-k", dest="top_k", type=int, default=3)
    pr.set_defaults(func=_cmd_predict)

    ds = sub.add_parser("datasets", help="list bundled datasets; `datasets pack` writes shards")
    ds.add_argument("action", nargs="?", choices=["pack"], help="pack FOLDER OUT_DIR")
    ds.add_argument("paths", nargs="*", help="for pack: the image folder and the output folder")
    ds.add_argument("--shard-size", dest="shard_size", type=int, default=1000)
    ds.set_defaults(func=_cmd_datasets)

    for name, func, text in (
        ("backbones", _cmd_backbones, "list backbones and which work offline"),
        ("strategies", _cmd_strategies, "list installed strategies"),
    ):
        sub.add_parser(name, help=text).set_defaults(func=func)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command; a problem the user can fix prints ``tlkit: error: ...`` and returns 2;
    Ctrl-C prints one line (where the last checkpoint is) and returns 130."""
    args = build_parser().parse_args(argv)
    from tlkit.backbones import BackboneError
    from tlkit.datasets import DataError
    from tlkit.errors import CheckpointError, PluginError, TrainingError

    console = argv is None  # the `tlkit` command itself, not a call from Python
    try:
        with warnings.catch_warnings():
            if console:  # one line per warning, without the library file that raised it
                warnings.showwarning = _show_warning
            return args.func(args)
    except (
        DataError,
        BackboneError,
        ConfigError,
        CheckpointError,
        PluginError,
        TrainingError,
    ) as exc:
        print(f"tlkit: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tlkit: {_interrupted(args)}", file=sys.stderr)
        return 130


def _show_warning(message: Any, category: Any, *args: Any, **kwargs: Any) -> None:
    print(f"tlkit: warning: {message}", file=sys.stderr)


def _interrupted(args: argparse.Namespace) -> str:
    """The one line printed on Ctrl-C: where the work done so far is kept, if anywhere."""
    if args.func is not _cmd_fit:
        return "interrupted"
    folder = getattr(args, "checkpoint_dir", None)
    remove_lock(folder)
    last = Path(folder) / "last.pt" if folder else None
    if last is not None and last.is_file():
        return f"interrupted; last checkpoint at {last} (continue with --resume)"
    if folder:
        return f"interrupted before the first checkpoint in {folder}; nothing was kept"
    return "interrupted; nothing was kept (pass --checkpoint-dir DIR to keep progress)"


if __name__ == "__main__":
    sys.exit(main())
