"""A user's own folder of photos through the engine: decoded lazily in DataLoader workers,
reproducible and exactly resumable whatever the number of workers, evaluated, predicted as a
table and exported; features of large sets cached on disk and reused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import tlkit
from tlkit.datasets import DomainPair, from_csv, from_folder, from_paths

LAZY = dict(backbone="small_cnn", image_size=32, batch_size=8, lr=3e-3, progress=False, seed=0)


@pytest.fixture(scope="module")
def photo_task(photo_folder):
    photos = from_folder(photo_folder)
    assert not photos.in_memory
    train, test = photos.split(0.25, seed=0)
    return DomainPair(train, test, name="photos")


def same(a, b):
    wa, wb = a.model.state_dict(), b.model.state_dict()
    return a.history == b.history and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_a_photo_folder_trains_evaluates_predicts_and_exports(photo_task, photo_folder, tmp_path):
    rocket = photo_folder / "rocket"
    run = tlkit.fit(photo_task, epochs=6, mode="full", num_workers=2, **LAZY)
    acc = run.last["source_accuracy"]
    assert acc > 0.9, run.history  # 4 classes: chance is 0.25
    assert run.evaluate(photo_task.source_test)["accuracy"] == pytest.approx(acc)
    table = run.predict(rocket, top_k=2)
    assert list(table.columns) == [
        "path",
        "label",
        "class_id",
        "probability",
        "top_labels",
        "top_probabilities",
        "error",
    ]
    assert len(table) == 24 and table["path"].str.endswith((".jpg", ".png")).all()
    assert (table["error"] == "").all()
    assert (table["label"] == "rocket").mean() > 0.9 and table["top_labels"].map(len).eq(2).all()
    again = tlkit.load(run.save(tmp_path / "run.pt"))
    assert (
        again.predict(rocket, progress=False)["label"].tolist()
        == table["label"].tolist()
    )
    # the exported program reproduces the run's outputs on preprocessed images
    from tlkit.datasets.transforms import eval_transform

    test_set = photo_task.source_test.dataset(eval_transform(32))
    x = torch.stack([test_set[i][0] for i in range(4)])
    expected = run.model(x)
    for suffix in (".pt2", ".onnx"):
        try:
            path = run.export(tmp_path / f"model{suffix}")
        except tlkit.ConfigError as error:
            assert suffix == ".onnx" and "[export]" in str(error)
            continue
        if suffix == ".pt2":
            extra = {"tlkit.json": ""}
            program = torch.export.load(path, extra_files=extra)
            got = program.module()(x)
            info = json.loads(extra["tlkit.json"])
        else:
            onnxruntime = pytest.importorskip("onnxruntime")
            session = onnxruntime.InferenceSession(str(path))
            got = torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
            info = json.loads((tmp_path / "model.onnx.json").read_text())
        assert torch.allclose(got, expected, atol=1e-4), suffix
        assert info["classes"] == ["astronaut", "chelsea", "coffee", "rocket"] and info["input"]["shape"][2:] == [32, 32]


def test_workers_do_not_change_results_and_resume_is_exact(photo_task, tmp_path):
    opts = dict(epochs=2, mode="full", **LAZY)  # augment="auto": crops and flips, per sample
    none = tlkit.fit(photo_task, num_workers=0, **opts)
    two = tlkit.fit(photo_task, num_workers=2, **opts)
    assert same(none, two)
    tlkit.fit(photo_task, num_workers=2, checkpoint_dir=str(tmp_path), max_steps=6, **opts)
    resumed = tlkit.fit(
        photo_task, num_workers=2, checkpoint_dir=str(tmp_path), resume=True, **opts
    )
    assert same(resumed, none)


def test_csv_and_path_lists_train_like_folders(photos, tmp_path):
    photo_folder = photos.root
    files = [photos.path(rel) for rel in photos.images]
    labels = [p.parent.name for p in files]
    csv = tmp_path / "photos.csv"
    csv.write_text(
        "file,kind\n"
        + "".join(f"{p.relative_to(photo_folder)},{y}\n" for p, y in zip(files, labels))
    )
    by_csv = from_csv(csv, path_column="file", label_column="kind", root=photo_folder)
    by_paths = from_paths(files, labels)
    assert by_csv.classes == by_paths.classes == tuple(sorted(photos.classes))
    for domain in (by_csv, by_paths):
        run = tlkit.fit(domain, epochs=1, mode="full", num_workers=0, **LAZY)
        assert run.history[0]["train_loss"] > 0


def test_an_unreadable_photo_is_skipped_counted_and_named(photos, tmp_path):
    folder = tmp_path / "photos"
    shutil.copytree(photos.root, folder)
    broken = photos.jpegs[3]
    (folder / broken).write_bytes(b"not a jpeg at all")
    domain = from_folder(folder)
    with pytest.warns(Warning, match=Path(broken).name):
        run = tlkit.fit(domain, epochs=1, mode="full", num_workers=0, **LAZY)
    assert run.history and run.history[0]["skipped_files"] == 1


def test_feature_extraction_writes_large_caches_to_disk_once(photo_task, tmp_path, monkeypatch):
    monkeypatch.setenv("TLKIT_CACHE", str(tmp_path / "cache"))
    opts = dict(epochs=2, mode="feature_extraction", feature_ram_budget=0, **LAZY)
    calls = {"images": 0}

    def counting_model():
        model = tlkit.backbones.create_model("small_cnn", 4, pretrained=False)
        model.backbone.pretrained = True
        torch.manual_seed(0)
        for p in model.parameters():
            torch.nn.init.normal_(p, std=0.05)
        model.backbone.register_forward_hook(
            lambda m, inp, out: calls.__setitem__("images", calls["images"] + len(inp[0]))
        )
        return model

    first = tlkit.fit(photo_task, model=counting_model(), num_workers=0, **opts)
    files = list((tmp_path / "cache" / "features").rglob("features.f16"))
    assert len(files) == 2  # the training set and the test set
    n = len(photo_task.source) + len(photo_task.source_test)
    assert calls["images"] == n  # once, not per epoch
    calls["images"] = 0
    second = tlkit.fit(photo_task, model=counting_model(), num_workers=0, **opts)
    assert calls["images"] == 0  # the same backbone and data: read from disk
    assert second.history == first.history


def test_fixmatch_gets_strong_views_of_photos_from_the_workers(
    photo_task, photo_folder, temp_strategy
):
    pool = from_folder(photo_folder, labels=False)
    task = DomainPair(photo_task.source, photo_task.source_test, pool, name="photos-semi")
    seen = []

    class Watch:
        @tlkit.hookimpl
        def tlkit_on_step_end(self, step):
            weak, strong = step.target_view("weak"), step.target_view("strong")
            seen.append((tuple(weak.shape), bool((weak - strong).abs().max() > 0)))

    run = tlkit.fit(
        task,
        epochs=1,
        mode="full",
        pseudo_label="fixmatch",
        num_workers=2,
        observers=[Watch()],
        **LAZY,
    )
    assert run.history and seen and all(s == ((8, 3, 32, 32), True) for s in seen)


def test_the_command_line_trains_on_a_folder_predicts_and_packs(photo_folder, tmp_path, capsys):
    from tlkit.cli import main

    saved, table = tmp_path / "run.pt", tmp_path / "predictions.csv"
    argv = ["fit", "--data", str(photo_folder), "--backbone", "small_cnn", "--image-size", "32",
            "--epochs", "6", "--batch-size", "8", "--lr", "3e-3", "--mode", "full",
            "--set", "progress=false", "--save", str(saved)]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    assert main(["predict", str(saved), str(photo_folder / "coffee"), "--out", str(table)]) == 0
    import pandas as pd

    predictions = pd.read_csv(table)
    assert len(predictions) == 24 and (predictions["label"] == "coffee").mean() > 0.9
    assert main(["datasets", "pack", str(photo_folder), str(tmp_path / "shards")]) == 0
    pattern = capsys.readouterr().out.split("wrote ", 1)[1].split(";")[0]
    assert len(tlkit.datasets.from_shards(pattern)) == 96
    assert main(["predict", str(saved), str(tmp_path / "missing"), "--out", str(table)]) == 2


def test_strategies_that_read_the_whole_target_read_lazy_targets(photo_task, photo_folder):
    pool = from_folder(photo_folder, labels=False)
    task = DomainPair(photo_task.source, photo_task.source_test, pool, name="photos-da")
    run = tlkit.fit(task, epochs=1, mode="full", adapt=["adabn", "dann"], num_workers=0, **LAZY)
    assert "dann" in run.history[0] and run.history[0]["source_accuracy"] > 0


def test_a_users_own_transform_pipeline_is_used(photo_task):
    from torchvision.transforms import v2

    seen = []
    pipeline = v2.Compose(
        [v2.Resize((32, 32), antialias=True), v2.ToDtype(torch.float32, scale=True)]
    )

    class Watch:
        @tlkit.hookimpl
        def tlkit_on_step_end(self, step):
            seen.append(tuple(step.x.shape[1:]))

    run = tlkit.fit(photo_task, epochs=1, mode="full", augment=pipeline, num_workers=0,
                    observers=[Watch()], **{**LAZY, "image_size": 48})  # fmt: skip
    assert run.config.augment == "custom" and set(seen) == {(3, 32, 32)}


def test_sigkill_mid_epoch_with_workers_resumes_exactly(photo_task, photo_folder, tmp_path):
    """A real kill (SIGKILL) of a run reading a folder with 2 workers, after its step-6
    checkpoint; the resumed run (2 workers again) equals the uninterrupted one."""
    import signal

    from test_resume import run_script

    opts = dict(epochs=2, mode="full", num_workers=2, checkpoint_every=6, **LAZY)
    whole = tlkit.fit(photo_task, **{k: v for k, v in opts.items() if k != "checkpoint_every"})
    killed = run_script(
        f"""
        import os, signal
        import tlkit
        from tlkit.datasets import DomainPair, from_folder

        train, test = from_folder(sys.argv[2]).split(0.25, seed=0)

        class Kill:
            @tlkit.hookimpl
            def tlkit_on_step_end(self, trainer):
                if trainer.state.step == 8:
                    os.kill(os.getpid(), signal.SIGKILL)

        tlkit.fit(DomainPair(train, test, name="photos"), checkpoint_dir=sys.argv[1],
                  observers=[Kill()], **{opts!r})
        """,
        str(tmp_path),
        str(photo_folder),
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert torch.load(tmp_path / "last.pt", weights_only=True)["state"]["step"] == 6
    resumed = tlkit.fit(photo_task, checkpoint_dir=str(tmp_path), resume=True, **opts)
    assert same(resumed, whole)


def test_whole_batches_of_unreadable_files_are_skipped_and_counted_once(photos, tmp_path):
    folder = tmp_path / "photos"
    shutil.copytree(photos.root, folder)
    broken = photos.jpegs[14]
    (folder / broken).write_bytes(b"broken")
    model = tlkit.backbones.create_model("small_cnn", 4, pretrained=False)
    model.backbone.pretrained = True  # fine_tune: a frozen (cached) epoch, then an unfrozen one
    with pytest.warns(Warning, match=Path(broken).name):
        run = tlkit.fit(from_folder(folder), model=model, epochs=2, mode="fine_tune",
                        num_workers=0, **{**LAZY, "batch_size": 1})  # fmt: skip
    assert [row["skipped_files"] for row in run.history] == [1, 1]  # one file, counted once
    assert run.history[-1]["step"] == 2 * 96  # the empty one-image batch still took its step


def test_digit_style_folders_evaluate_the_way_they_trained(photo_task):
    run = tlkit.fit(photo_task, epochs=2, mode="full", augment="digits", num_workers=0, **LAZY)
    assert run.spec["resize"] == "squash"
    assert run.evaluate(photo_task.source_test)["accuracy"] == pytest.approx(
        run.last["source_accuracy"]
    )


def test_worker_processes_end_when_training_ends(photo_task):
    """A fit on photos leaves no DataLoader workers behind: in a notebook the Run lives on, and
    workers shut down by a later garbage collection (at any moment, in any thread) printed
    'Bad file descriptor' tracebacks into unrelated cells."""
    import gc
    import multiprocessing

    gc.collect()
    gc.disable()  # the workers must end because training ended, not because gc found a cycle
    try:
        run = tlkit.fit(photo_task, epochs=1, num_workers=2, **LAZY)
        assert multiprocessing.active_children() == []
        run.evaluate(photo_task.target)  # evaluation after the fit starts and ends its own
        assert multiprocessing.active_children() == []
    finally:
        gc.enable()
