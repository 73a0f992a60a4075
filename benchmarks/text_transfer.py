"""Does pretraining an LSTM on the bundled docstrings pay with a few labels?

Target task: ``docstrings`` -- which library (numpy, scikit-learn, matplotlib, scikit-image) a
docstring comes from -- with 5, 10 or 50 labelled docstrings per library
(``tlkit.datasets.few_labels``), evaluated once after training on the 317-docstring test split.
Source task: ``docstrings-pretrain`` -- which of 36 sub-packages of the same libraries a docstring
comes from, drawn from a disjoint half of their source files. Both are encoded by the same
hashed tokenizer (``tlkit.Tokenizer()``), so a word has one embedding row in both.

Arms, all with the same LSTM (``text_lstm``: a 32-d embedding of 2**15 hashed ids, a
bidirectional LSTM of 32 units per direction, max-pooling over time; 64 features), the first
``MAX_LENGTH`` tokens of each docstring, AdamW, tlkit's cosine schedule, the same target budget
(``TARGET_EPOCHS`` epochs at batch 16, lr 1e-2: fixed beforehand, not tuned on the test split):

* ``target only``: a random init trained on the few labels (``mode="full"``).
* ``pretrain -> fine-tune``: ``tlkit.fit_two_stage(pretrained_run, few, ...)`` -- the stage-1
  embedding and LSTM, a fresh head, ``mode="auto"`` = one head-only epoch, then every layer with
  discriminative learning rates (``lr / 10`` for the embedding .. ``lr``).
* ``pretrain -> linear probe`` (diagnostic): the same pretrained backbone frozen
  (``mode="feature_extraction"``): what the pretrained features alone are worth.

Stage 1 trains ``PRETRAIN_EPOCHS`` epochs (batch 64, lr 1e-2) once per seed and is shared by the
three label counts of that seed. Seeds 0, 1, 2 pick the labelled subset, the initialisations and
the batch order; the table gives mean +- std of test accuracy.

    .venv/bin/python benchmarks/text_transfer.py --threads 1   # full run (~6 min at 1 thread)
    .venv/bin/python benchmarks/text_transfer.py --quick       # smoke run, well under a minute
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import tlkit
from tlkit.backbones import create_backbone
from tlkit.datasets import DomainPair, few_labels, from_tensors
from tlkit.datasets.text import VOCAB_SIZE

try:
    from benchmarks import _common as common
except ImportError:  # run as a script: benchmarks/ is on sys.path
    import _common as common

SEEDS = (0, 1, 2)
LABELS_PER_CLASS = (5, 10, 50)
MAX_LENGTH = 48
PRETRAIN_EPOCHS = 24
TARGET_EPOCHS = 20
LR = 1e-2
ARMS = ("target only", "pretrain -> fine-tune", "pretrain -> linear probe")
TITLE = "Text transfer: pretrain an LSTM on docstrings-pretrain, fine-tune on docstrings"


def lstm() -> Any:
    return create_backbone("text_lstm", vocab_size=VOCAB_SIZE, embed_dim=32, hidden=32)


def truncated(domain: Any, length: int) -> Any:
    """The domain with its first ``length`` ids (the same tokenizer, a shorter max_length)."""
    info = dict(domain.info)
    info["tokenizer"] = {**info["tokenizer"], "max_length": length}
    info["max_length"] = length
    return from_tensors(domain.inputs[:, :length].clone(), domain.labels, classes=domain.classes,
                        name=domain.name, info=info)  # fmt: skip


def load(name: str, length: int) -> DomainPair:
    pair = tlkit.datasets.load(name)
    return DomainPair(truncated(pair.source, length), truncated(pair.source_test, length),
                      name=name)  # fmt: skip


def run_seed(seed: int, ks: tuple[int, ...], budget: dict[str, int]) -> dict[str, Any]:
    common_opts = dict(progress=False, seed=seed)
    pre, docs = load("docstrings-pretrain", budget["length"]), load("docstrings", budget["length"])
    t0 = time.perf_counter()
    first = tlkit.fit(pre, lstm(), epochs=budget["pretrain"], mode="full", lr=LR, batch_size=64,
                      **common_opts)  # fmt: skip
    out: dict[str, Any] = {
        "pretrain_accuracy": first.last["source_accuracy"],
        "pretrain_seconds": time.perf_counter() - t0,
    }
    for k in ks:
        few = DomainPair(source=few_labels(docs, k, seed=seed).source, name=f"docstrings-{k}")
        opts = dict(lr=LR, batch_size=16, **common_opts)
        for arm in ARMS:
            t = time.perf_counter()
            if arm == "target only":
                run = tlkit.fit(few, lstm(), epochs=budget["target"], mode="full", **opts)
            elif arm == "pretrain -> fine-tune":
                run = tlkit.fit_two_stage(first, few, target_epochs=budget["target"], **opts)
            else:
                run = tlkit.fit_two_stage(first, few, target_epochs=budget["target"],
                                          mode="feature_extraction", **opts)  # fmt: skip
            acc = run.evaluate(docs.source_test)["accuracy"]
            out[(k, arm)] = (acc, time.perf_counter() - t)
            print(f"seed {seed} k={k:<3} {arm:<26} accuracy {acc:.3f} "
                  f"({time.perf_counter() - t:.0f} s)")  # fmt: skip
    print(f"seed {seed}: pretraining test accuracy {out['pretrain_accuracy']:.3f} "
          f"(36 classes, {out['pretrain_seconds']:.0f} s)")  # fmt: skip
    return out


def table(results: list[dict[str, Any]], ks: tuple[int, ...]) -> str:
    rows = []
    for k in ks:
        row: list[Any] = [f"{k} ({4 * k} labels)"]
        for arm in ARMS:
            m, s = common.mean_std([r[(k, arm)][0] for r in results])
            row.append(f"{m:.3f} +- {s:.3f}")
        gain = [r[(k, ARMS[1])][0] - r[(k, ARMS[0])][0] for r in results]
        gm, gs = common.mean_std(gain)
        row.append(f"{gm:+.3f} +- {gs:.3f}")
        rows.append(row)
    headers = ["labels per class", *ARMS, "fine-tune - target only"]
    return common.markdown_table(headers, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke-sized run")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--pretrain-epochs", type=int, default=PRETRAIN_EPOCHS,
                        help="stage 1's epochs; other than the default, the run is written as "
                        "its own section (a diagnostic: does a better-trained encoder pay?)")  # fmt: skip
    parser.add_argument("--results", default=None, help="markdown file to write (a full run "
                        "writes benchmarks/results/text_transfer.md)")  # fmt: skip
    args = parser.parse_args()
    common.setup_torch("cpu", args.threads)
    seeds = SEEDS[:1] if args.quick else SEEDS
    ks = LABELS_PER_CLASS[:1] if args.quick else LABELS_PER_CLASS
    budget = dict(pretrain=1 if args.quick else args.pretrain_epochs,
                  target=2 if args.quick else TARGET_EPOCHS, length=MAX_LENGTH)  # fmt: skip
    t0 = time.perf_counter()
    results = [run_seed(seed, ks, budget) for seed in seeds]
    wall = time.perf_counter() - t0
    pre_m, pre_s = common.mean_std([r["pretrain_accuracy"] for r in results])
    body = "\n\n".join([
        f"Budget: stage 1 {budget['pretrain']} epochs on docstrings-pretrain (1627 docstrings, "
        f"36 classes, batch 64); every target arm {budget['target']} epochs at batch 16; lr "
        f"{LR}; first {budget['length']} tokens; seeds {list(seeds)}. Test accuracy on the "
        f"317 docstrings of the test split (4 classes, chance 0.25), mean +- std over seeds.",
        table(results, ks),
        f"Stage 1's own test accuracy (36 sub-packages, chance 0.03): {pre_m:.3f} +- {pre_s:.3f}."
        f" Whole run: {wall / 60:.1f} min.",
        common.machine_block(common.machine_info("cpu"), common.command_line()),
    ])  # fmt: skip
    print("\n" + body)
    path = common.results_path(args.results, "text_transfer", args.quick)
    if path is not None and not args.quick and args.pretrain_epochs != PRETRAIN_EPOCHS:
        n = args.pretrain_epochs
        common.update_results(path, f"pretrain-{n}", f"Diagnostic: stage 1 trained {n} epochs",
                              body, file_title=TITLE)  # fmt: skip
    elif path is not None:
        common.write_run(path, body, quick=args.quick, file_title=TITLE)


if __name__ == "__main__":
    main()
