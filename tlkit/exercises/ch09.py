"""Chapter 9 (scaling): a log for files, resuming mid-epoch, dashboard runs that are kept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tlkit.exercises._core import exercise, require, require_run


@exercise(
    "9.1",
    "A log for files",
    solution="""
done = sh(tlkit_command, "fit", "--data", "digits", "--backbone", "small_cnn", "--mode", "full",
          "--epochs", "3", "--image-size", "16", "--lr", "3e-3")
answer = done.stdout + done.stderr
print(answer)
""",
)
def _log(answer: Any) -> None:
    require(isinstance(answer, str), "answer with the printed text (stdout + stderr) as a string")
    require("\r" not in answer, "the text has tqdm redraws (\\r): was the output a terminal?")
    epochs = [line for line in answer.splitlines() if line.startswith("epoch ")]
    require(epochs, "no 'epoch ...' lines: capture both stdout and stderr of tlkit fit")
    require(len(epochs) == 3, f"{len(epochs)} epoch lines: train three epochs")
    require(all("eta" in line for line in epochs), "each epoch line should carry its eta")


@exercise(
    "9.2",
    "Resume from the middle of an epoch",
    needs=("whole",),
    solution="""
other = work / "checkpoints-50"
cut_50 = tlkit.fit(task, checkpoint_dir=other, max_steps=50, **options)
answer = tlkit.fit(task, checkpoint_dir=other, resume=True, **options)
print(f"cut after {len(cut_50.history)} epoch(s) at step 50, resumed to "
      f"{answer.history[-1]['step']} steps")
""",
)
def _resume(answer: Any, *, whole: Any) -> None:
    import torch

    run = require_run(answer)
    require(not run.stopped_early, "resume the cut run to its end (resume=True, same options)")
    require(
        len(run.history) == len(whole.history),
        "the resumed run should end after as many epochs as `whole`: use the same options",
    )
    require(
        run.history == whole.history,
        "the histories differ: resume from the cut run's checkpoint folder with the same options",
    )
    same = all(
        torch.equal(a, b)
        for a, b in zip(whole.model.state_dict().values(), run.model.state_dict().values())
    )
    require(same, "the weights differ from `whole`'s: same seed, same options, same folder")


@exercise(
    "9.3",
    "Dashboard runs you keep",
    needs=("work",),
    solution="""
dash = tlkit.dashboard(dataset="digits", backbone="small_cnn", epochs=2, image_size=16, lr=3e-3,
                       checkpoint_root=work / "dashboard-runs")
record = dash.train()
dash.wait()
answer = tlkit.load(record.best_checkpoint)
dash.close()                 # the folder under `work` stays
print(record.best_checkpoint.relative_to(work), answer)
""",
)
def _kept(answer: Any, *, work: Any) -> None:
    import torch

    import tlkit

    run = require_run(answer, "answer (the run loaded with tlkit.load)")
    folder = Path(work).resolve()
    saved = sorted(folder.rglob("best.pt"))
    require(
        saved,
        "no best.pt under `work`: give the dashboard a runs folder there (checkpoint_root=...)",
    )
    state = run.model.state_dict()
    for path in saved:
        loaded = tlkit.load(path).model.state_dict()
        if loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state):
            return
    require(False, "load the dashboard run's best checkpoint with tlkit.load(...)")
