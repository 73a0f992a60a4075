"""The data layer alone on a folder of photos: listing, first batch, throughput, memory.

A generated ImageFolder of JPEG photo crops (random crops of scikit-image's and scikit-learn's
sample photos, sizes around 500x375, 10 classes) at N = 2k, 8k and 32k images, cached under
``$TLKIT_CACHE/bench`` (else ``~/.cache/tlkit/bench``); the smaller folders are hard links to the
first files of the largest. For each N, in a fresh subprocess (so peak RSS is that N's):

* ``construct`` -- ``tlkit.datasets.from_folder(path)``: listing + the header probe; nothing
  decoded.
* ``first batch`` -- from listing the folder and creating ``DataLoader(d.dataset(train),
  num_workers=2, ...)`` to the first batch in hand, against a hand-written
  ``torchvision.datasets.ImageFolder`` + ``DataLoader`` with the same transform and workers
  (the mean of two, in the order A B B A).
* ``images/s`` -- 6 pairs of passes over each loader (no model: the data layer only), 1500
  images a pass (a full pass at smaller N; the per-image cost does not depend on N), in the order
  A B, B A, ... (never two loaders at once), the median per side; ratio = the median of the
  paired ratios tlkit / ImageFolder (target >= 0.95), robust to a shared machine's load.
* ``peak RSS`` -- the subprocess's peak resident memory (main process; ``ru_maxrss``) and the
  largest worker's. Growth from 2k to 32k is the number to watch (target <= 15%).

Transform on both sides: ``tlkit.datasets.transforms.train_transform(224)`` (RandomResizedCrop +
flip -> float); ImageFolder decodes with PIL, so its pipeline starts with ``v2.PILToTensor()``.
Batch 64, 2 workers, ``torch.set_num_threads(2)``. Each measurement is a function taking the
folder and returning numbers.

**Through tlkit.fit** (the second table), same N, same subprocess:

* ``first step`` -- from ``from_folder(path)`` to the end of the first optimisation step of
  ``tlkit.fit(domain, "small_cnn", image_size=224, num_workers=2, batch_size=64)`` (listing,
  workers' start, the first batch, one forward/backward/AdamW step). Target <= 5 s at every N.
* ``training img/s`` -- ``tlkit.fit`` against a hand-written loop over ``ImageFolder`` +
  ``DataLoader`` with the same model (``create_model("small_cnn", 10)``, same seed), transform,
  workers, batch, AdamW and cross-entropy, ``FIT_STEPS`` steps a pass, timed from the first
  step's end to the last's (so worker start-up is not counted on either side); 5 pairs of passes
  in the order A B, B A, A B; the ratio is the median of the paired ratios (target >= 0.95).
* peak RSS is the subprocess's, after both tables' measurements.

**Camera-size JPEGs** (``--camera``; the third table): folders of 3000x2000 and 4000x3000 JPEGs
from :func:`tlkit.testing.make_photo_folder` (3 classes, cached under the same bench folder),
trained at 224 px with a featherweight model (``small_cnn`` with one 8-channel block: the
decoding is what costs), 2 workers, batch 16, AdamW, three ways, each in its own subprocess
(peak RSS is that side's):

* ``tlkit.fit`` on ``from_folder`` (JPEGs decoded at the DCT scale each crop needs);
* the hand-written loop: ``ImageFolder`` + ``RandomResizedCrop(224)`` (the same v2 pipeline as
  tlkit's, scale (0.35, 1)) + ``DataLoader``, full decoding;
* the same loop with draft decoding written by hand: ``Image.draft("RGB", (379, 379))`` in the
  ImageFolder loader, the usual one-liner (a fixed scale, enough for the smallest crop).

Time to first step (listing, workers' start, first batch, first step) and images/s from the
first step's end to the last's (``CAMERA_STEPS`` steps), the mean of two passes per side run in
the order A B C, C B A.

``--camera-model efficientnet_lite0`` trains EfficientNet-Lite0 instead of the featherweight (all
layers, random weights), so that a reader sees the gain where the step, not the decoding, costs
most; tlkit lays out its images channels-last (its default for images), the hand loops as
written by hand (NCHW). That table has its own section in the results file.

The in-memory fast path (bundled digits, no workers) is measured by ``engine_overhead.py``
against a hand-written loop, in ``results/engine_overhead.md``.

    .venv/bin/python benchmarks/data_pipeline.py           # full run (~15 min on 2 idle cores)
    .venv/bin/python benchmarks/data_pipeline.py --quick   # N = 200, 800: a smoke run
    .venv/bin/python benchmarks/data_pipeline.py --camera  # camera-size JPEGs (~3 min)
    .venv/bin/python benchmarks/data_pipeline.py --camera --camera-model efficientnet_lite0
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    RESULTS_DIR,
    cache_dir,
    command_line,
    machine_block,
    machine_info,
    markdown_table,
    results_path,
    setup_torch,
    update_results,
    write_run,
)

SIZES = (2000, 8000, 32000)
QUICK_SIZES = (200, 800)
CLASSES = 10
BATCH = 64
WORKERS = 2
IMAGE_SIZE = 224
#: Images per timed pass (a full pass below that; the per-image cost does not depend on N).
PASS_IMAGES = 1500
#: Also measure the rows through tlkit.fit (``--no-fit`` leaves them out).
FIT = True


# -- the folder -----------------------------------------------------------------------------
def _photos() -> list[np.ndarray]:
    import skimage.data
    from sklearn.datasets import load_sample_images

    photos = [np.asarray(getattr(skimage.data, n)())[..., :3] for n in
              ("astronaut", "chelsea", "coffee", "rocket")]  # fmt: skip
    return photos + [np.asarray(im)[..., :3] for im in load_sample_images().images]


def generate_folder(n: int, root: Path | None = None, seed: int = 0) -> Path:
    """``n`` JPEG crops in ``CLASSES`` class folders (cached; smaller N hard-link the largest)."""
    from PIL import Image
    from tqdm.auto import tqdm

    root = root or cache_dir()
    full = root / f"photos-{max(n, SIZES[-1]) if n > QUICK_SIZES[-1] else QUICK_SIZES[-1]}"
    done = full / ".complete"
    total = int(full.name.split("-")[1])
    if not done.exists():
        rng = np.random.default_rng(seed)
        photos = _photos()
        for c in range(CLASSES):
            (full / f"class{c:02d}").mkdir(parents=True, exist_ok=True)
        for i in tqdm(range(total), desc=f"generating {total} photos", unit="img"):
            p = photos[rng.integers(len(photos))]
            w = int(np.clip(rng.normal(500, 60), 300, 640))
            h = int(np.clip(rng.normal(375, 45), 220, 480))
            scale = max(w / p.shape[1], h / p.shape[0], 1.0)
            im = Image.fromarray(p)
            if scale > 1:
                im = im.resize((int(p.shape[1] * scale) + 1, int(p.shape[0] * scale) + 1))
            x0 = rng.integers(0, im.size[0] - w + 1)
            y0 = rng.integers(0, im.size[1] - h + 1)
            im.crop((x0, y0, x0 + w, y0 + h)).save(
                full / f"class{i % CLASSES:02d}" / f"{i:06d}.jpg", quality=88
            )
        done.write_text(str(total))
    if n == total:
        return full
    sub = root / f"photos-{n}"
    if not (sub / ".complete").exists():
        for c in range(CLASSES):
            (sub / f"class{c:02d}").mkdir(parents=True, exist_ok=True)
        for i in range(n):
            rel = f"class{i % CLASSES:02d}/{i:06d}.jpg"
            if not (sub / rel).exists():
                os.link(full / rel, sub / rel)
        (sub / ".complete").write_text(str(n))
    return sub


# -- measurements (each: folder -> numbers) ------------------------------------------------------
def train_transform() -> Any:
    from tlkit.datasets import transforms

    return transforms.train_transform(IMAGE_SIZE)


def tlkit_loader(folder: Path) -> tuple[torch.utils.data.DataLoader, float]:
    """(loader, construct seconds) for the tlkit side."""
    from tlkit.datasets import collate, from_folder

    t0 = time.perf_counter()
    d = from_folder(folder, progress=False)
    construct = time.perf_counter() - t0
    loader = torch.utils.data.DataLoader(
        d.dataset(train_transform()), batch_size=BATCH, shuffle=True, num_workers=WORKERS,
        collate_fn=collate, persistent_workers=False,
    )  # fmt: skip
    return loader, construct


def imagefolder_loader(folder: Path) -> torch.utils.data.DataLoader:
    """The hand-written baseline: torchvision ImageFolder, PIL decoding, the same transform."""
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import v2

    ds = ImageFolder(os.fspath(folder), transform=v2.Compose([v2.PILToTensor(), train_transform()]))
    return torch.utils.data.DataLoader(ds, batch_size=BATCH, shuffle=True, num_workers=WORKERS)


def measure_construct(folder: Path) -> float:
    return tlkit_loader(folder)[1]


def measure_first_batch(make: Any) -> float:
    """Seconds from building the loader (domain listing included) to the first batch."""
    t0 = time.perf_counter()
    loader = make()
    next(iter(loader))
    return time.perf_counter() - t0


def measure_pass(make: Any, max_images: int) -> float:
    """Images/s of one pass over a fresh loader (up to ``max_images``; workers' start included)."""
    t0 = time.perf_counter()
    count = 0
    for batch in make():
        count += len(batch[1])
        if count >= max_images:
            break
    return count / (time.perf_counter() - t0)


def measure_throughput(
    make_a: Any, make_b: Any, max_images: int, rounds: int = 6
) -> tuple[float, float, float]:
    """Images/s of each side and the median paired ratio A/B over ``rounds`` pairs of passes in
    the order A B, B A, A B ... (two DataLoaders never run at once: their workers would compete
    and prefetch for each other). Pairing adjacent passes cancels most of a shared machine's
    load changes."""
    a, b = [], []
    for r in range(rounds):
        if r % 2 == 0:
            a.append(measure_pass(make_a, max_images))
            b.append(measure_pass(make_b, max_images))
        else:
            b.append(measure_pass(make_b, max_images))
            a.append(measure_pass(make_a, max_images))
    ratio = float(np.median([x / y for x, y in zip(a, b)]))
    return float(np.median(a)), float(np.median(b)), ratio


FIT_STEPS = 12


def _small_cnn(seed: int = 0) -> torch.nn.Module:
    import tlkit

    torch.manual_seed(seed)
    return tlkit.backbones.create_model("small_cnn", CLASSES, pretrained=False)


def measure_fit_first_step(folder: Path) -> float:
    """Seconds from listing the folder to the end of tlkit.fit's first optimisation step."""
    import tlkit
    from tlkit.datasets import from_folder

    done: list[float] = []

    class FirstStep:
        @tlkit.hookimpl
        def tlkit_on_step_end(self, trainer):
            done.append(time.perf_counter())
            trainer.request_stop()

    t0 = time.perf_counter()
    domain = from_folder(folder, progress=False)
    tlkit.fit(domain, model=_small_cnn(), **_fit_options(), max_steps=1, observers=[FirstStep()])
    return done[0] - t0


def _fit_options() -> dict[str, Any]:
    return dict(image_size=IMAGE_SIZE, num_workers=WORKERS, batch_size=BATCH, mode="full",
                epochs=1000, progress=False, lr=1e-3, precision="fp32", log_every=1000)  # fmt: skip


def tlkit_training_pass(folder: Path) -> float:
    """Images/s of tlkit.fit between its first and last of FIT_STEPS steps."""
    import tlkit
    from tlkit.datasets import from_folder

    ends: list[float] = []

    class Clock:
        @tlkit.hookimpl
        def tlkit_on_step_end(self):
            ends.append(time.perf_counter())

    domain = from_folder(folder, progress=False)
    tlkit.fit(
        domain, model=_small_cnn(), **_fit_options(), max_steps=FIT_STEPS, observers=[Clock()]
    )
    return BATCH * (len(ends) - 1) / (ends[-1] - ends[0])


def hand_training_pass(folder: Path) -> float:
    """Images/s of the hand-written ImageFolder loop between its first and last step."""
    model = _small_cnn()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ends: list[float] = []
    model.train()
    for images, labels in imagefolder_loader(folder):
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        ends.append(time.perf_counter())
        if len(ends) == FIT_STEPS:
            break
    return BATCH * (len(ends) - 1) / (ends[-1] - ends[0])


def measure_fit(folder: Path, rounds: int = 5) -> dict[str, Any]:
    first = measure_fit_first_step(folder)
    a, b = [], []
    for r in range(rounds):  # A B, B A, A B: paired passes under the same load
        sides = (("t", tlkit_training_pass), ("h", hand_training_pass))
        for key, fn in sides if r % 2 == 0 else sides[::-1]:
            (a if key == "t" else b).append(fn(folder))
    ratio = float(np.median([x / y for x, y in zip(a, b)]))
    return {"fit_first_step_s": first, "fit_images_per_s": float(np.median(a)),
            "hand_images_per_s": float(np.median(b)), "fit_ratio": ratio}  # fmt: skip


def measure_one(n: int) -> dict[str, Any]:
    """Every measurement for one N (run in its own process)."""
    setup_torch("cpu", 2)
    folder = generate_folder(n)
    construct = measure_construct(folder)
    make_t, make_b = (lambda: tlkit_loader(folder)[0]), (lambda: imagefolder_loader(folder))
    firsts: dict[str, list[float]] = {"t": [], "b": []}
    for order in (("t", "b"), ("b", "t")):  # A B B A: neither side always goes first (cold)
        for k in order:
            firsts[k].append(measure_first_batch(make_t if k == "t" else make_b))
    first_t, first_b = float(np.mean(firsts["t"])), float(np.mean(firsts["b"]))
    cap = min(n, PASS_IMAGES)
    ips_t, ips_b, ratio = measure_throughput(make_t, make_b, cap)
    fit = measure_fit(folder) if FIT else {}
    main = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"n": n, "construct_s": construct, "first_batch_s": first_t,
            "first_batch_imagefolder_s": first_b, "images_per_s": ips_t,
            "images_per_s_imagefolder": ips_b, "ratio": ratio, "pass_images": cap,
            "peak_rss_mb": main, "peak_worker_rss_mb": child, **fit}  # fmt: skip


# -- camera-size JPEGs: decode-bound training ------------------------------------------------
CAMERA_SIZES = ((3000, 2000), (4000, 3000))
#: photos per folder (``--camera-n``): a few hundred, so that an epoch is longer than the timed
#: steps and the listing, the workers' start and memory are those of a real folder
CAMERA_N = 300
CAMERA_CLASSES = 3
CAMERA_BATCH = 16
CAMERA_STEPS = 16
#: passes per side and size, in the order A B C, C B A (the mean is reported)
CAMERA_ROUNDS = 2
#: the hand-written draft loop's request: the short side that still covers the smallest crop
DRAFT_SIDE = 379  # ceil(224 / sqrt(0.35))
CAMERA_SIDES = ("tlkit", "hand", "hand_draft")


def camera_folder(size: tuple[int, int], n: int | None = None) -> Path:
    """``n`` (default ``CAMERA_N``) camera JPEGs of ``size`` in ``CAMERA_CLASSES`` class folders
    (cached)."""
    n = CAMERA_N if n is None else n
    from tlkit.testing import make_photo_folder

    root = cache_dir() / f"camera-{size[0]}x{size[1]}-{n}"
    if not (root / ".complete").exists():
        make_photo_folder(root, classes=CAMERA_CLASSES, per_class=n // CAMERA_CLASSES,
                          sizes=(size,), png_every=0, rotated=0, corrupt=0, nested=False,
                          csv=False, seed=0)  # fmt: skip
        (root / ".complete").write_text(str(n))
    return root


def _feather(seed: int = 0) -> torch.nn.Module:
    """A model that costs next to nothing at 224 px: one 8-channel conv block and a head."""
    import tlkit

    torch.manual_seed(seed)
    return tlkit.backbones.create_model("small_cnn", CAMERA_CLASSES, pretrained=False,
                                        widths=(8,))  # fmt: skip


def _lite0(seed: int = 0) -> torch.nn.Module:
    """EfficientNet-Lite0 (random weights: the step costs the same as a pretrained one's)."""
    import tlkit

    torch.manual_seed(seed)
    return tlkit.backbones.create_model("efficientnet_lite0", CAMERA_CLASSES, pretrained=False,
                                        input_size=IMAGE_SIZE)  # fmt: skip


#: --camera-model: name -> (builder, description for the results)
CAMERA_MODELS = {
    "feather": (_feather, "featherweight model (small_cnn, one 8-channel block)"),
    "efficientnet_lite0": (_lite0, "efficientnet_lite0 (all layers trained)"),
}


def _draft_loader(path: str) -> Any:
    from PIL import Image

    im = Image.open(path)
    im.draft("RGB", (DRAFT_SIDE, DRAFT_SIDE))
    return im.convert("RGB")


def camera_hand(folder: Path, draft: bool, model_name: str = "feather") -> dict[str, float]:
    """The hand-written loop (optionally with draft decoding): first step and images/s."""
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import v2

    from tlkit.datasets import transforms

    t0 = time.perf_counter()
    plain = transforms.train_transform(IMAGE_SIZE).pipeline  # a plain v2.Compose
    kwargs = {"loader": _draft_loader} if draft else {}
    ds = ImageFolder(os.fspath(folder), transform=v2.Compose([v2.PILToTensor(), plain]), **kwargs)
    loader = torch.utils.data.DataLoader(ds, batch_size=CAMERA_BATCH, shuffle=True,
                                         num_workers=WORKERS)  # fmt: skip
    model = CAMERA_MODELS[model_name][0]()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ends: list[float] = []
    model.train()
    for images, labels in loader:
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        ends.append(time.perf_counter())
        if len(ends) == CAMERA_STEPS:
            break
    return {"first_step_s": ends[0] - t0,
            "images_per_s": CAMERA_BATCH * (len(ends) - 1) / (ends[-1] - ends[0])}  # fmt: skip


def camera_tlkit(folder: Path, model_name: str = "feather") -> dict[str, float]:
    """tlkit.fit on from_folder: first step and images/s."""
    import tlkit
    from tlkit.datasets import from_folder

    ends: list[float] = []

    class Clock:
        @tlkit.hookimpl
        def tlkit_on_step_end(self):
            ends.append(time.perf_counter())

    t0 = time.perf_counter()
    domain = from_folder(folder, progress=False)
    tlkit.fit(domain, model=CAMERA_MODELS[model_name][0](), image_size=IMAGE_SIZE, num_workers=WORKERS,
              batch_size=CAMERA_BATCH, mode="full", epochs=1000, progress=False, lr=1e-3,
              precision="fp32", log_every=1000, max_steps=CAMERA_STEPS,
              observers=[Clock()])  # fmt: skip
    return {"first_step_s": ends[0] - t0,
            "images_per_s": CAMERA_BATCH * (len(ends) - 1) / (ends[-1] - ends[0])}  # fmt: skip


def _vm_hwm_mb() -> float:
    """This process's peak RSS since its exec (``ru_maxrss`` carries the parent's across
    ``exec`` on Linux, so a child started by a big parent would report the parent's peak)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def camera_one(side: str, size: tuple[int, int], model_name: str) -> dict[str, Any]:
    """One side on one size (run in its own process, so peak RSS is that side's)."""
    setup_torch("cpu", 2)
    folder = camera_folder(size)
    if side == "tlkit":
        r = camera_tlkit(folder, model_name)
    else:
        r = camera_hand(folder, draft=side == "hand_draft", model_name=model_name)
    r["peak_rss_mb"] = _vm_hwm_mb()
    r["peak_worker_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return r


def run_camera(
    results: str | None,
    model_name: str = "feather",
    sizes: tuple[tuple[int, int], ...] = CAMERA_SIZES,
    rounds: int = CAMERA_ROUNDS,
) -> None:
    setup_torch("cpu", 2)
    info = machine_info("cpu")
    t0 = time.perf_counter()
    for size in sizes:
        camera_folder(size)  # generated once, outside the timed children
    print(f"folders ready in {time.perf_counter() - t0:.0f} s")
    runs: dict[tuple[tuple[int, int], str], list[dict[str, Any]]] = {}
    for size in sizes:
        for r in range(rounds):
            for side in CAMERA_SIDES if r % 2 == 0 else CAMERA_SIDES[::-1]:
                out = subprocess.run(
                    [sys.executable, __file__, "--camera-one", side, f"{size[0]}x{size[1]}",
                     "--camera-model", model_name, "--camera-n", str(CAMERA_N)],
                    capture_output=True, text=True, check=False,
                )  # fmt: skip
                line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
                if out.returncode or not line:
                    print(out.stdout[-2000:], out.stderr[-4000:])
                    raise SystemExit(f"camera measurement {side} {size} failed")
                got = json.loads(line[0][len("RESULT ") :])
                runs.setdefault((size, side), []).append(got)
                print(size, side, got, f"load {os.getloadavg()[0]:.1f}")
    rows = {key: {k: float((np.max if "rss" in k else np.mean)([g[k] for g in gs]))
                  for k in gs[0]} for key, gs in runs.items()}  # fmt: skip
    names = {"tlkit": "tlkit.fit (reduced decoding)", "hand": "ImageFolder loop",
             "hand_draft": "ImageFolder loop + draft by hand"}  # fmt: skip
    table = markdown_table(
        ["photos", "side", "first step (s)", "img/s", "vs ImageFolder loop",
         "peak RSS main (MB)", "peak worker RSS (MB)"],
        [[f"{CAMERA_N} x {size[0]}x{size[1]} JPEG", names[side],
          f"{rows[size, side]['first_step_s']:.2f}", f"{rows[size, side]['images_per_s']:.1f}",
          f"{rows[size, side]['images_per_s'] / rows[size, 'hand']['images_per_s']:.2f}x",
          f"{rows[size, side]['peak_rss_mb']:.0f}", f"{rows[size, side]['peak_worker_rss_mb']:.0f}"]
         for size in sizes for side in CAMERA_SIDES],
    )  # fmt: skip
    worst = min(rows[s, "tlkit"]["images_per_s"] / rows[s, "hand"]["images_per_s"]
                for s in sizes)  # fmt: skip
    featherweight = model_name == "feather"
    summary = (
        f"224 px, batch {CAMERA_BATCH}, {WORKERS} workers, {CAMERA_MODELS[model_name][1]}, "
        f"img/s over steps 2-{CAMERA_STEPS}, the mean of {rounds} "
        f"pass{'es' if rounds > 1 else ''} per side "
        f"({'in the order A B C, C B A; ' if rounds > 1 else ''}each in a fresh process), peak "
        "RSS the larger of the passes' (main: VmHWM). tlkit / plain ImageFolder loop: "
        f"{worst:.2f}x at worst" + (" (target >= 1.5x)." if featherweight else ".")
    )
    print("\n" + table + "\n\n" + summary)
    path = Path(results) if results else RESULTS_DIR / "data_pipeline.md"
    body = machine_block(info, command_line()) + "\n\n" + table + "\n\n" + summary + "\n"
    key, title = "camera", "Camera-size JPEGs (decode-bound training)"
    if not featherweight:
        key, title = f"camera-{model_name}", f"Camera-size JPEGs, {model_name}"
    update_results(path, key, title, body,
                   file_title="Data pipeline (the data layer alone)")  # fmt: skip
    print(f"\nwrote {path}")


def main() -> None:
    global CAMERA_N, FIT
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="N = 200, 800 (smoke run)")
    parser.add_argument("--sizes", type=int, nargs="*", help="image counts (default 2k 8k 32k)")
    parser.add_argument("--results", help="results file (default: results/data_pipeline.md)")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child: one N, JSON out
    parser.add_argument("--no-fit", action="store_true", help="the data layer only")
    parser.add_argument("--camera", action="store_true", help="camera-size JPEG rows")
    parser.add_argument("--camera-one", nargs=2, help=argparse.SUPPRESS)  # child: side WxH
    parser.add_argument(
        "--camera-model",
        choices=list(CAMERA_MODELS),
        default="feather",
        help="the model the camera rows train (default: the featherweight)",
    )
    parser.add_argument(
        "--camera-sizes",
        nargs="+",
        metavar="WxH",
        help="camera photo sizes (default 3000x2000 4000x3000)",
    )
    parser.add_argument(
        "--camera-rounds",
        type=int,
        default=CAMERA_ROUNDS,
        help="passes per side and size (A B C, C B A, ...)",
    )
    parser.add_argument(
        "--camera-n",
        type=int,
        default=CAMERA_N,
        help=f"photos per camera folder (default {CAMERA_N})",
    )
    args = parser.parse_args()
    least = CAMERA_BATCH * CAMERA_STEPS  # the hand loops time one epoch's first steps
    if args.camera_n < least or args.camera_n % CAMERA_CLASSES:
        parser.error(
            f"--camera-n must be a multiple of {CAMERA_CLASSES} (the classes) and at "
            f"least {least} ({CAMERA_STEPS} timed steps of {CAMERA_BATCH})"
        )
    CAMERA_N = args.camera_n
    if args.camera_one:
        side, wh = args.camera_one
        size = tuple(int(v) for v in wh.split("x"))
        print("RESULT " + json.dumps(camera_one(side, size, args.camera_model)))
        return
    if args.camera:
        sizes = CAMERA_SIZES
        if args.camera_sizes:
            sizes = tuple(tuple(int(v) for v in wh.split("x")) for wh in args.camera_sizes)
        run_camera(args.results, args.camera_model, sizes, args.camera_rounds)
        return
    FIT = not args.no_fit
    if args.one:
        print("RESULT " + json.dumps(measure_one(args.one)))
        return
    setup_torch("cpu", 2)
    sizes = args.sizes or (QUICK_SIZES if args.quick else SIZES)
    info = machine_info("cpu")
    generate_folder(max(sizes))  # generated once, outside the timed children
    rows = []
    for n in sizes:
        out = subprocess.run(
            [sys.executable, __file__, "--one", str(n), *(["--no-fit"] if not FIT else [])],
            capture_output=True,
            text=True,
            check=False,
        )
        line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
        if out.returncode or not line:
            print(out.stdout[-2000:], out.stderr[-4000:])
            raise SystemExit(f"measurement for N={n} failed")
        r = json.loads(line[0][len("RESULT ") :])
        rows.append(r)
        print(f"N={n}: {r}")
    base = rows[0]["peak_rss_mb"]
    table = markdown_table(
        [
            "N",
            "construct (s)",
            "first batch tlkit (s)",
            "first batch ImageFolder (s)",
            "images per pass",
            "tlkit img/s",
            "ImageFolder img/s",
            "ratio (paired median)",
            "peak RSS main (MB)",
            "RSS vs smallest",
            "peak worker RSS (MB)",
        ],
        [
            [
                r["n"],
                f"{r['construct_s']:.3f}",
                f"{r['first_batch_s']:.2f}",
                f"{r['first_batch_imagefolder_s']:.2f}",
                r["pass_images"],
                f"{r['images_per_s']:.0f}",
                f"{r['images_per_s_imagefolder']:.0f}",
                f"{r['ratio']:.2f}",
                f"{r['peak_rss_mb']:.0f}",
                f"{100 * (r['peak_rss_mb'] / base - 1):+.1f}%",
                f"{r['peak_worker_rss_mb']:.0f}",
            ]
            for r in rows
        ],
    )
    growth = 100 * (rows[-1]["peak_rss_mb"] / base - 1)
    summary = (
        f"Peak RSS of the main process grows {growth:+.1f}% from N={rows[0]['n']} to "
        f"N={rows[-1]['n']} (target <= 15%); throughput ratio tlkit / ImageFolder "
        f"{min(r['ratio'] for r in rows):.2f} at worst (target >= 0.95); first batch at most "
        f"{max(r['first_batch_s'] for r in rows):.2f} s (target <= 5 s)."
    )
    if FIT:
        fit_table = markdown_table(
            ["N", "first training step (s)", "tlkit.fit img/s", "hand-written loop img/s",
             "ratio (paired median)"],
            [[r["n"], f"{r['fit_first_step_s']:.2f}", f"{r['fit_images_per_s']:.0f}",
              f"{r['hand_images_per_s']:.0f}", f"{r['fit_ratio']:.2f}"] for r in rows],
        )  # fmt: skip
        table += (
            "\n\n**Through tlkit.fit** (small_cnn at 224 px, batch 64, 2 workers, AdamW):\n\n"
            + fit_table
        )
        summary += (
            f" Through tlkit.fit: first training step at most "
            f"{max(r['fit_first_step_s'] for r in rows):.2f} s (target <= 5 s); training "
            f"img/s ratio against the hand-written loop {min(r['fit_ratio'] for r in rows):.2f} "
            "at worst (target >= 0.95)."
        )
    print("\n" + table + "\n\n" + summary)
    path = results_path(args.results, "data_pipeline", args.quick)
    if path is not None:
        body = machine_block(info, command_line()) + "\n\n" + table + "\n\n" + summary + "\n"
        write_run(path, body, quick=args.quick, file_title="Data pipeline (the data layer alone)")


if __name__ == "__main__":
    main()
