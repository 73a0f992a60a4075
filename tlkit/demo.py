"""The offline demo: what an ImageNet-pretrained network is worth when labels are few.

The task is ``digits-m`` (handwritten digits blended into photo patches, bundled) with only
``labels_per_class`` labelled images per class; accuracy is measured on its 359-image test split.
Three ways to get a classifier from those few labels, on the same data and seed:

* **from scratch** -- ``small_cnn``, every weight learned from the labelled images alone;
* **linear probe** -- the ImageNet ``efficientnet_lite0`` frozen, its features computed once,
  a linear head trained on them (``mode="feature_extraction"``);
* **fine-tune** -- the same pretrained network, head first, then every layer with
  discriminative learning rates (``mode="fine_tune"``).

Learning rates come from the grid in ``benchmarks/transfer_digits_m.py`` (tuned on a validation
split, never the test set); its results file has the 3-seed numbers. Everything is built from
installed packages; nothing is downloaded.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

DEMO_TASK = "digits-m"

#: (label, backbone, fit options): the benchmark's tuned recipes.
RECIPES: list[tuple[str, str, dict[str, Any]]] = [
    (
        "from scratch (small_cnn)",
        "small_cnn",
        dict(mode="full", epochs=30, lr=3e-2, lr_spread=1.0, image_size=32),
    ),
    (
        "linear probe (ImageNet, frozen)",
        "efficientnet_lite0",
        dict(mode="feature_extraction", epochs=100, lr=3e-3),
    ),
    (
        "fine-tune (ImageNet)",
        "efficientnet_lite0",
        dict(mode="fine_tune", epochs=25, freeze_epochs=5, lr=1e-2, lr_spread=10.0),
    ),
]


def run_demo(
    out_dir: str | Path = "demo_output",
    *,
    task: str = DEMO_TASK,
    labels_per_class: int = 10,
    image_size: int = 96,
    seed: int = 0,
    quick: bool = False,
) -> list[dict[str, Any]]:
    """Run the demo, print the results table, save ``learning_curves.png``; returns the rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import tlkit

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pair = tlkit.datasets.few_labels(tlkit.datasets.load(task), labels_per_class, seed=seed)
    data = replace(pair, target=None, target_test=None)  # the unlabelled rest is not used here
    if quick:  # a smoke-sized run for tests: 2 epochs each on a small test split, tiny images
        data = replace(data, source_test=_stratified_head(data.source_test, 100))
        image_size = 32
    n = data.source.num_labelled
    print(
        f"tlkit demo: {task} with {labels_per_class} labels per class ({n} labelled images), "
        f"accuracy on {len(data.source_test)} test images; ImageNet weights offline"
    )
    rows, runs = [], []
    for label, backbone, recipe in RECIPES:
        options = {"image_size": image_size, **recipe}
        if quick:
            options.update(epochs=2, freeze_epochs=1)
        start = time.perf_counter()
        run = tlkit.fit(data, backbone, batch_size=20, seed=seed, **options)
        seconds = time.perf_counter() - start
        runs.append((label, run))
        rows.append(
            {
                "method": label,
                "epochs": options["epochs"],
                "test_acc": run.last["source_accuracy"],
                "best_epoch_acc": max(r["source_accuracy"] for r in run.history),
                "seconds": seconds,
            }
        )
    print()
    print(format_table(rows))
    scratch, fine_tune = rows[0]["test_acc"], rows[-1]["test_acc"]
    print(
        f"\nfine-tuning the ImageNet network: {fine_tune - scratch:+.1%} over training from "
        f"scratch with the same {n} labels"
    )
    plot_path = out / "learning_curves.png"
    _plot(plt, runs, rows, f"{task}, {n} labelled images", plot_path)
    print(f"learning curves saved to {plot_path}")
    return rows


def _plot(plt, runs, rows, title: str, path: Path) -> None:
    fig, (curves, bars) = plt.subplots(
        1, 2, figsize=(10.5, 3.6), gridspec_kw={"width_ratios": [1.6, 1]}
    )
    for label, run in runs:  # x: optimisation steps, so different epoch counts compare
        steps = [r["step"] for r in run.history]
        curves.plot(steps, [r["source_accuracy"] for r in run.history], label=label)
    curves.set(xlabel="training step", ylabel="test accuracy", ylim=(0, 1), title="learning curves")
    curves.grid(alpha=0.3)
    curves.legend(fontsize=8, loc="lower right")
    names = [r["method"] for r in rows][::-1]
    accs = [r["test_acc"] for r in rows][::-1]
    bars.barh(names, accs, color=["tab:green", "tab:orange", "tab:blue"][-len(rows) :])
    for y, acc in enumerate(accs):
        bars.text(acc + 0.01, y, f"{acc:.1%}", va="center", fontsize=8)
    bars.set(xlim=(0, 1), xlabel="test accuracy after the last epoch", title="result")
    bars.tick_params(axis="y", labelsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def format_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table; floats in [0, 1] named *acc* shown as percentages."""
    if not rows:
        return "(no rows)"
    cols = list(rows[0])

    def fmt(key: str, value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.1%}" if "acc" in key else f"{value:.1f}"
        return str(value)

    cells = [[fmt(c, r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def _stratified_head(domain, n: int):
    if domain is None or len(domain) <= n:
        return domain
    return domain.split(test_fraction=1 - n / len(domain), seed=0)[0]
