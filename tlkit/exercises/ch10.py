"""Chapter 10 (your own data): an unreadable file, features on disk, photos in the dashboard."""

from __future__ import annotations

from typing import Any

from tlkit.exercises._core import exercise, last_dashboard_record, require, require_run


@exercise(
    "10.1",
    "A file that is not an image",
    solution="""
import warnings

broken = work / "broken"
shutil.copytree(work / "photos", broken, dirs_exist_ok=True)
(broken / "cat" / "005.jpg").write_bytes(b"this is not a jpeg")
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    answer = tlkit.fit(from_folder(broken), "small_cnn", epochs=1, image_size=32,
                       num_workers=0, progress=False)
print([str(w.message)[:100] for w in caught])
""",
)
def _broken(answer: Any) -> None:
    run = require_run(answer)
    require(run.history, "train one epoch on the copy")
    skipped = run.history[0].get("skipped_files")
    require(skipped is not None, "train on a photo folder (from_folder), where files are decoded")
    require(skipped == 1, "replace exactly one photo of the copy by a file that is not an image")


@exercise(
    "10.2",
    "Features on disk",
    solution="""
import os

os.environ["TLKIT_CACHE"] = str(work / "cache")
seen = []

def probe_model():
    model = tlkit.backbones.create_model("efficientnet_lite0", task.num_classes)
    model.backbone.register_forward_hook(lambda m, inp, out: seen.append(len(inp[0])))
    return model

answer = []
for _ in range(2):
    seen.clear()
    tlkit.fit(task, model=probe_model(), mode="feature_extraction", epochs=3, image_size=64,
              feature_ram_budget=0, num_workers=0, progress=False)
    answer.append(sum(seen))
print("photos through the backbone, first and second run:", answer)
""",
)
def _feature_cache(answer: Any) -> None:
    require(
        isinstance(answer, tuple | list) and len(answer) == 2,
        "answer with two counts: photos the backbone saw in the first run and in the second",
    )
    first, second = (int(v) for v in answer)
    require(first > 0, "the first run has no features on disk yet: its backbone sees the photos")
    require(
        second == 0,
        "the second run should read the features from disk: same model, data, image size and "
        "TLKIT_CACHE, with feature_ram_budget=0",
    )


@exercise(
    "10.3",
    "Photos in the dashboard",
    needs=("task",),
    solution="""
dash = tlkit.dashboard(data={"four photos": task}, backbone="small_cnn", epochs=1,
                       image_size=32, num_workers=0)
dash.train()
dash.wait()
answer = dash
""",
)
def _dashboard(answer: Any, *, task: Any) -> None:
    record = last_dashboard_record(answer)
    data = record.run.data
    require(
        data is not None and not data.source.in_memory,
        "train on the photo folder: give the dashboard data={'a name': task} and pick it",
    )
    require(
        list(data.source.paths) == list(task.source.paths),
        "train on the chapter's photo task (`task`)",
    )
