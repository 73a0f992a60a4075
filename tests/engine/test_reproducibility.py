"""A seeded run gives the same history whatever else tlkit runs in the process: the dashboard's
background thread and a notebook cell no longer change each other's results."""

from __future__ import annotations

import threading

import torch

import tlkit

RANDOM_BITS = dict(dropout=0.3, augment=True, epochs=3, mode="full")  # dropout + augmentation


def signature(run):
    return run.history, {k: v.clone() for k, v in run.model.state_dict().items()}


def same(a, b) -> bool:
    (ha, wa), (hb, wb) = a, b
    return ha == hb and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_two_seeded_runs_in_threads_equal_the_serial_runs(tiny_task, fast):
    jobs = {
        "fixmatch": dict(pseudo_label="fixmatch", **RANDOM_BITS, **{**fast, "seed": 0}),
        "dann": dict(adapt="dann", **RANDOM_BITS, **{**fast, "seed": 1}),
    }
    serial = {name: signature(tlkit.fit(tiny_task, **opts)) for name, opts in jobs.items()}
    steps = {name: [] for name in jobs}

    class Interleaving:  # records which run stepped, to show the threads really overlapped
        def __init__(self, name):
            self.name = name

        @tlkit.hookimpl
        def tlkit_on_step_end(self, trainer):
            order.append(self.name)
            steps[self.name].append(trainer.state.step)

    order: list[str] = []
    threaded = {}

    def work(name):
        run = tlkit.fit(tiny_task, observers=[Interleaving(name)], **jobs[name])
        threaded[name] = signature(run)

    threads = [threading.Thread(target=work, args=(name,)) for name in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    switches = sum(a != b for a, b in zip(order, order[1:]))
    assert switches >= 2, "the two runs did not overlap; the test proves nothing"
    for name in jobs:
        assert same(threaded[name], serial[name]), name


def test_a_run_does_not_depend_on_the_global_generator_before_it(tiny_task, fast):
    opts = dict(**RANDOM_BITS, **fast)
    a = signature(tlkit.fit(tiny_task, **opts))
    torch.manual_seed(12345)
    torch.rand(1000)  # someone else drew from torch's generator in between
    b = signature(tlkit.fit(tiny_task, **opts))
    assert same(a, b)


def test_per_sample_augmentation_in_another_thread_does_not_disturb_a_run(
    tiny_task, fast, photo_folder
):
    """Photos decoded and augmented in the main process (0 workers) reseed the global generator
    per sample; they must do it under the same lock as the steps of a run in another thread."""
    from tlkit.datasets import DomainPair, from_folder

    photos = DomainPair(*from_folder(photo_folder).split(0.25, seed=0), name="photos")
    digits_opts = dict(**RANDOM_BITS, **fast)
    photo_opts = dict(epochs=2, mode="full", num_workers=0, image_size=32, **{**fast, "seed": 3})
    serial = signature(tlkit.fit(tiny_task, **digits_opts))
    threaded = {}
    threads = [
        threading.Thread(
            target=lambda: threaded.setdefault("d", tlkit.fit(tiny_task, **digits_opts))
        ),
        threading.Thread(target=lambda: threaded.setdefault("p", tlkit.fit(photos, **photo_opts))),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert same(signature(threaded["d"]), serial)
