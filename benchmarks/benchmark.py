"""Speed benchmark: this project's pipeline against the tutorial's, on the same machine.

    python benchmarks/benchmark.py                  # stages 1-3 (about 3 minutes on 2 cores)
    python benchmarks/benchmark.py --time-to-accuracy   # plus stage 4 (about 12 minutes)
    python benchmarks/benchmark.py --only first_runs    # stage 5 alone (about 5 minutes)
    python benchmarks/benchmark.py --only trust         # stage 6 alone (about 6 minutes)
    python benchmarks/benchmark.py --only pretrained    # stage 7 alone (about 3 minutes)
    python benchmarks/benchmark.py --only loader        # stage 8 alone (about 3 minutes)
    python benchmarks/benchmark.py --loader             # stages 1-3 and 8
    python benchmarks/benchmark.py --only export        # stage 9 alone (about 2 minutes)
    python benchmarks/benchmark.py --only levers        # stage 10 alone (about 20 minutes)
    python benchmarks/benchmark.py --only probe         # stage 11 alone (about 15 minutes)
    python benchmarks/benchmark.py --only fold          # stage 12 alone (about 1 minute)
    python benchmarks/benchmark.py --only goals         # stage 13 alone (about 15 minutes)

Stages (each in its own process, so its peak memory is its own):

1. data: training images/s on one core, the tutorial's per-sample path (full JPEG decode with
   OpenCV, then its Albumentations pipeline with normalisation) against ours (the decoded
   cache, crop + flip, normalisation once per batch); the one-off cache build is reported
   too.
2. train: ResNet-50 training images/s at 128 px, plain fp32 against bf16 autocast +
   channels_last (fp16 on GPUs without bf16), both at the tutorial's batch of 64, taking
   turns step by step.
3. scan: validation images/s, a single-process full decode of every file (what the tutorial
   does) against the validate step (one reduced-scale decode per file, on all cores), on
   photos that include truncated ones (only the validate step rejects them). The
   reduced-scale decode alone is timed too: its rate on all cores is the ceiling of any
   check that reads every compressed byte.
4. time to accuracy: the default recipe from the extracted 10k photos to test accuracy
   (validation, split, cache, training and evaluation all timed), and the tutorial's
   recipe projected from its measured step rate.
5. first runs: the quick run (``recipes/quick.yaml``) and 5 epochs on 800 photos
   (``SMALL_RUN``), timed the same way, with their test accuracy.
6. trust: the quick run's test photos predicted as your own photos against the test loader
   (and against the old own-photo path), the test-time augmentation table, the calibration
   error before and after temperature scaling, and a threshold for 99 % precision for Cat.
7. pretrained: what an epoch of a pretrained start costs. Training images/s of the fast
   recipe's ResNet-9 at 96 px against the pretrained recipe's model trained the way
   ``PRETRAINED=True`` plans it (its head-only first epoch, then all layers), and a
   ResNet-18 at 224 px the same way, taking turns step by step. Random weights: the speed
   does not depend on them, and nothing is downloaded.
8. loader: is the GPU kept fed? Images/s of the training loader alone (the default
   recipe's pipeline on a decoded cache, as training uses it) at 96 and 224 px, with 0
   workers, with the default number for this machine and with the number a GPU here would
   get, beside the training images/s of the recipe's model at that size (bf16/fp16 +
   channels_last where available), and the loader whose crop and flip run on the device
   (what training uses on a GPU). The ratio loader/training below 1 means the model waits
   for its data. Runs on CUDA as on the CPU.
9. export: predicting on the CPU with PyTorch against the exported ONNX file in ONNX
   Runtime, for the default recipe's model and preprocessing (ResNet-9, 96 px, flip
   averaging), uint8 batches in, probabilities out, one thread each: the median latency of
   one photo and the throughput of batches of 64, the two taking turns. Needs no photos.
10. levers: the quick run as it is, then with one change at a time (more epochs, a larger
    side, ResNet-9's first layer learned rather than whitened, the former peak learning
    rate; add yours to ``LEVERS``),
    each from the extracted 10k photos to test accuracy,
    timed: what each lever pays, and what it costs.
11. probe: the pretrained recipe (``recipes/pretrained.yaml``) as it is, one epoch of SGD on
    its new output layer, against that layer fitted to convergence (a logistic regression,
    its strength chosen on validation) on the frozen ImageNet features of the centre crops,
    computed once, at the recipe's side and at 224 px: what a converged linear probe and a
    larger side pay, and what their features cost.
12. fold: inference images/s (eval mode, no gradients, channels_last, the recipes' sides)
    of ResNet-9 and EfficientNet-Lite0 as they are against :func:`models.fold_batch_norms`'
    copy (each batch norm folded into the convolution before it), and that copy run in
    chunks that fit the CPU's caches (:func:`models.forward_in_chunks`), taking turns batch
    by batch: what evaluation, prediction and a pretrained start's frozen features gain.
13. goals: the accuracy and time goals of the recipes on the 10k subset, each beside its
    baseline from the same run (the pretrained start beside the same photos from scratch;
    the quick run beside itself with ResNet-9's first layer learned, not whitened by
    :func:`models.whiten_first_layer`; the default beside the recipe before, that layer
    learned and ``LR`` 0.2):
    the pretrained recipe (at least 98.5 % within 5 minutes), on 800 photos (95 %), the
    quick run (88 % within 4 minutes) and the default recipe in ``TIME_BUDGET`` 7 (94 %
    within 10 minutes), each timed from the extracted photos to test predictions, so
    without the notebooks' lesson cells (speed table, epoch by hand, TTA table).

Stages 1-3 use photos of the 10k subset enlarged to 500x375, the size of the real archive's
photos. Ratios are measured within one run, so they hold on a noisy machine; absolute
numbers depend on it. The table is printed and written as JSON to ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEV_ZIP = Path(os.environ.get("CATSDOGS_DEV_ZIP", REPO.parent / "shared/data/catsdogs-dev-10k.zip"))


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_photos(folder: Path, n: int) -> list[Path]:
    """``n`` photos of the dev subset enlarged to 500x375 (and 4 % of them truncated)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    with zipfile.ZipFile(DEV_ZIP) as zf:
        names = sorted(n for n in zf.namelist() if n.endswith(".jpg"))[:: max(1, 10000 // n)]
        for i, name in enumerate(names[:n]):
            label = name.split("/")[-2]
            (folder / label).mkdir(exist_ok=True)
            with zf.open(name) as f:
                image = Image.open(f).convert("RGB").resize((500, 375), Image.Resampling.BICUBIC)
            path = folder / label / f"{i}.jpg"
            image.save(path, "JPEG", quality=90)
            out.append(path)
    for path in out[::25]:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    return out


def tutorial_pipeline():
    """The tutorial's training transform, its affine fixed (it was a no-op as written), with
    its per-image normalisation and conversion to a tensor."""
    import albumentations as A
    from albumentations.pytorch import ToTensorV2

    from catsdogs_helpers import transforms

    ours = transforms.tutorial_pipeline(128, 160, seed=0)
    return A.Compose([*ours.transforms, A.Normalize(), ToTensorV2()], seed=0)


def stage_data(folder: Path) -> dict:
    import cv2
    import numpy as np
    import pandas as pd
    import torch

    from catsdogs_helpers import datasets, devices, transforms

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    paths = sorted(p for p in folder.rglob("*.jpg"))
    good = [p for i, p in enumerate(sorted(paths, key=lambda p: int(p.stem))) if i % 25]
    tutorial = tutorial_pipeline()

    def tutorial_sample(path: Path) -> None:
        image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        tutorial(image=image)["image"]

    for path in good[:64]:  # untimed, like our first epoch below
        tutorial_sample(path)
    start = time.perf_counter()
    for path in good:
        tutorial_sample(path)
    tutorial_rate = len(good) / (time.perf_counter() - start)

    rows = pd.DataFrame({"path": [str(p) for p in good], "sha256": [str(p) for p in good]})
    with tempfile.TemporaryDirectory() as cache_dir:
        start = time.perf_counter()
        cache = datasets.build_cache("/", rows, cache_dir, 128, workers=1, progress=False)
        cache_rate = len(good) / (time.perf_counter() - start)
        ds = datasets.CachedImageDataset(
            cache, range(len(good)), [0] * len(good), transforms.light_pipeline(112, 128)
        )
        loader = datasets.make_loader(ds, batch_size=64, shuffle=True)
        device = torch.device("cpu")
        for images, _labels in loader:  # one untimed epoch: first-touch allocations
            devices.to_model_input(images, device)
        rates = []  # epochs of a tenth of a second: the median of 15 is steady
        for _ in range(15):
            start = time.perf_counter()
            for images, _labels in loader:
                devices.to_model_input(images, device)
            rates.append(len(good) / (time.perf_counter() - start))
        ours_rate = float(np.median(rates))
    return {
        "tutorial_per_sample_img_s": tutorial_rate,
        "ours_cached_epoch_img_s": ours_rate,
        "ours_cache_build_img_s": cache_rate,
        "ratio": ours_rate / tutorial_rate,
        "ratio_first_epoch_with_cache_build": (1 / (1 / cache_rate + 1 / ours_rate))
        / tutorial_rate,
        "images": len(good),
    }


def stage_train(model_name: str = "resnet50", batch: int = 64, steps: int = 8) -> dict:
    import torch

    from catsdogs_helpers import devices, training

    device = devices.pick_device("auto")
    amp = devices.amp_dtype(device)
    speed = training.measure_training_speed(
        model_name,
        {"fp32": {}, "ours": {"amp_dtype": amp, "channels_last": True}},
        image_size=128, batch_size=batch, device=device, steps=steps,
    )  # fmt: skip
    fp32, fast = speed["fp32"], speed["ours"]
    return {
        "model": model_name,
        "device": str(device),
        "amp_dtype": str(amp),
        "batch": batch,
        "fp32_img_s": fp32,
        "ours_img_s": fast,
        "ratio": fast / fp32,
        "threads": torch.get_num_threads(),
    }


def stage_scan(folder: Path, copies: int = 5) -> dict:
    import shutil

    import cv2
    import numpy as np

    from catsdogs_helpers import validating
    from catsdogs_helpers.config import available_cores

    # Several copies of the photos (as extra class folders), so that starting the worker
    # processes does not dominate the measurement.
    scan = folder.parent / "scan"
    for k in range(copies):
        for label in ("Cat", "Dog"):
            if not (scan / f"{label}{k}").exists():
                shutil.copytree(folder / label, scan / f"{label}{k}")
    folder = scan
    paths = sorted(folder.rglob("*.jpg"))
    for path in paths:  # both sides read from the page cache, not the disk
        path.read_bytes()
    start = time.perf_counter()
    kept = set()
    for path in paths:  # the tutorial's check: keep what OpenCV returns an array for
        if cv2.imread(str(path)) is not None:
            kept.add(path.relative_to(folder).as_posix())
    full_rate = len(paths) / (time.perf_counter() - start)
    # The floor of any check that reads every compressed byte: the 1/8-scale grayscale
    # decode alone (no hashing, no bookkeeping), on one core.
    start = time.perf_counter()
    for path in paths:
        cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_REDUCED_GRAYSCALE_8)
    reduced_rate = len(paths) / (time.perf_counter() - start)
    start = time.perf_counter()
    manifest = validating.validate_folder(folder, progress=False)
    ours_rate = len(paths) / (time.perf_counter() - start)
    workers = available_cores()
    drift = hash_drift([p for p in sorted(folder.glob("Cat0/*.jpg")) if p.stat().st_size][:100])
    return {
        "full_decode_single_process_img_s": full_rate,
        "reduced_decode_single_process_img_s": reduced_rate,
        "validate_img_s": ours_rate,
        "ratio": ours_rate / full_rate,
        "ceiling_ratio_all_cores": workers * reduced_rate / full_rate,
        "workers": workers,
        "files": len(paths),
        "hash_drift_resized_75_median_bits": drift,
        "truncated_caught_by_validate": int((manifest["reason"] == "truncated").sum()),
        "truncated_kept_by_full_decode_check": int(
            manifest.loc[manifest["reason"] == "truncated", "path"].isin(kept).sum()
        ),
    }


def hash_drift(paths: list[Path]) -> dict:
    """Median bits between the difference hash of a photo and of its copy resized to 75 %,
    with the hash taken from the validate step's decode scale and from a 1/8-scale decode."""
    import io

    import numpy as np
    from PIL import Image

    from catsdogs_helpers import duplicates, images

    def fingerprint(data: bytes, min_side: int) -> int:
        size = Image.open(io.BytesIO(data)).size
        gray, _ = images.jpeg_gray(data, images.reduction_for(size, min_side))
        return int(duplicates.dhash(gray), 16)

    drift: dict = {"validate_step": [], "one_eighth": []}
    for path in paths:
        data = path.read_bytes()
        photo = Image.open(io.BytesIO(data))
        if not data.endswith(b"\xff\xd9"):
            continue  # one of the truncated ones
        out = io.BytesIO()
        photo.resize((photo.width * 3 // 4, photo.height * 3 // 4)).save(out, "JPEG", quality=90)
        for name, min_side in (("validate_step", duplicates.DHASH_MIN_SIDE), ("one_eighth", 32)):
            a, b = fingerprint(data, min_side), fingerprint(out.getvalue(), min_side)
            drift[name].append((a ^ b).bit_count())
    return {name: float(np.median(bits)) for name, bits in drift.items()}


def recipe(name: str, **changes) -> dict:
    """``recipes/<name>.yaml``'s parameters with ``changes`` (the runs here are named ``bench``)."""
    from catsdogs_helpers.tools import series

    values = {k: v for k, v in series.read_recipe(f"{name}.yaml").items() if k != "RUN_NAME"}
    return {**values, **changes}


#: A small data set's first run (5 epochs on 800 photos), beside the README's quick run.
SMALL_RUN = {"LIMIT_PER_CLASS": 400, "EPOCHS": 5}


@dataclass
class TrainedRun:
    cfg: Any
    manifest: Any
    split: Any
    cache: Any
    model: Any
    history: Any
    started: float  # perf_counter() when validation began (after the extraction)
    prep_seconds: float  # validation, split and cache


def prepared_run(**parameters) -> tuple:
    """``(cfg, manifest, split, cache, start, seconds)``: a run's data from the extracted 10k
    photos with these parameters, timed from validation on (``start``: perf_counter())."""
    os.environ["CATSDOGS_DATA_DIR"] = tempfile.mkdtemp(prefix="catsdogs-bench-")
    os.environ["CATSDOGS_RUNS_DIR"] = tempfile.mkdtemp(prefix="catsdogs-bench-runs-")
    from catsdogs_helpers import config, downloading, workflow

    cfg = config.make_config(DATASET_URL=str(DEV_ZIP), RUN_NAME="bench", **parameters)
    downloading.prepare_dataset(cfg.data_dir, str(DEV_ZIP), progress=False)
    start = time.perf_counter()
    manifest = workflow.ensure_manifest(cfg, progress=False)
    split = workflow.ensure_split(cfg, progress=False)
    cache = workflow.ensure_cache(cfg, split, progress=False)
    return cfg, manifest, split, cache, start, time.perf_counter() - start


#: Not a parameter: with it true, ResNet-9's first layer is learned like the others
#: (not :func:`models.whiten_first_layer`), the baseline of the whitened one.
LEARNED_FIRST_LAYER = "learned_first_layer"


def trained_run(**parameters) -> TrainedRun:
    """A run from the extracted 10k photos with these parameters, trained."""
    from catsdogs_helpers import workflow

    learned = parameters.pop(LEARNED_FIRST_LAYER, False)
    cfg, manifest, split, cache, start, prep_seconds = prepared_run(**parameters)
    whiten = workflow.whiten_first_layer
    if learned:
        workflow.whiten_first_layer = lambda model, images: False  # extra code: the former model
    try:
        model, history = workflow.train_run(cfg, progress=False)
    finally:
        workflow.whiten_first_layer = whiten
    cfg = workflow.saved_plan(cfg) or cfg  # TIME_BUDGET's epochs and side
    if cfg.cache_size != cache.size:
        cache = workflow.ensure_cache(cfg, split, progress=False)
    return TrainedRun(cfg, manifest, split, cache, model, history, start, prep_seconds)


def train_and_test(**parameters) -> dict:
    """A run from the extracted 10k photos to test accuracy with these parameters, timed
    from validation on (validation, split, cache, training and evaluation)."""
    from catsdogs_helpers import devices, evaluation, transforms, workflow

    run = trained_run(**parameters)
    cfg, manifest, split, cache, history = run.cfg, run.manifest, run.split, run.cache, run.history
    model, start, prep_seconds = run.model, run.started, run.prep_seconds
    datasets = workflow.make_datasets(cfg, split, cache)
    loader = workflow.make_loaders(cfg, {"test": datasets["test"]}, batch_size=64)["test"]
    device = devices.pick_device(cfg.device)
    probs, labels, _ = evaluation.predict(
        model, loader, device, transforms.preprocessing_for(cfg),
        amp_dtype=devices.amp_dtype(device),
    )  # fmt: skip
    return {
        "parameters": parameters,
        "recipe": parameters.get("RUN_NAME", "fast"),
        "model": cfg.model_name,
        "epochs": int(len(history)),
        "image_size": cfg.image_size,
        "batch_size": cfg.for_data(len(datasets["train"])).batch_size,
        "images": int(len(manifest)),
        "train_images": int((split["split"] == "train").sum()),
        "n_test": int(len(labels)),
        "prep_seconds": prep_seconds,
        "wall_seconds": time.perf_counter() - start,
        "elapsed_per_epoch": (prep_seconds + history["seconds"].cumsum()).tolist(),
        "val_acc": history["val_acc"].tolist(),
        "test_accuracy": float((probs.argmax(1) == labels).mean()),
    }


def stage_time_to_accuracy() -> dict:
    import numpy as np

    from catsdogs_helpers import devices, training

    result = train_and_test()
    elapsed, val_acc = np.array(result["elapsed_per_epoch"]), np.array(result["val_acc"])
    within, reached = val_acc[elapsed <= 600], elapsed[val_acc >= 0.92]
    # The tutorial's recipe: ResNet-50, fp32, its per-sample pipeline, batch 64, 10 epochs.
    device = devices.pick_device("auto")
    tutorial_step = training.measure_training_speed(
        "resnet50", {"fp32": {}}, image_size=128, batch_size=64, device=device, steps=3
    )["fp32"]
    return {
        **result,
        "best_val_acc_within_10_min": float(within.max()) if len(within) else None,
        "seconds_to_92_val_acc": float(reached[0]) if len(reached) else None,
        "tutorial_fp32_img_s": tutorial_step,
        "tutorial_projected_seconds_10_epochs": 10 * result["train_images"] / tutorial_step,
    }


def stage_pretrained(batch: int = 32, steps: int = 5, warmup: int = 2) -> dict:
    import torch

    from catsdogs_helpers import config, devices, models, training
    from catsdogs_helpers.tools import series

    device = devices.pick_device("auto")
    amp = devices.amp_dtype(device)
    plan = config.make_config(**series.read_recipe("pretrained.yaml"))
    size = plan.image_size
    pre = plan.model_name
    cases = {  # name: (model, image side, epoch of the pretrained plan or None from scratch)
        "resnet9_96": ("resnet9", 96, None),
        f"{pre}_{size}_head": (pre, size, 0),
        f"{pre}_{size}_all": (pre, size, 1),
        "resnet18_224_head": ("resnet18", 224, 0),
        "resnet18_224_all": ("resnet18", 224, 1),
    }
    runs = {}
    y = torch.randint(0, 2, (batch,), device=device)
    for name, (model_name, side, epoch) in cases.items():
        model = models.create_model(model_name, 2).to(device, memory_format=torch.channels_last)
        if epoch is not None:  # the pretrained plan's phase: head alone (0) or all layers (1)
            training.set_trainable(model, plan.fine_tuning, epoch)
        phase = replace(plan, lr=0.01, pretrained=epoch is not None)
        optimizer = training.make_optimizer(model, phase)  # SGD, decay 5e-4
        x = torch.randn(batch, 3, side, side, device=device)
        x = x.contiguous(memory_format=torch.channels_last)
        runs[name] = training.optimiser_step(model, optimizer, x, y, device, amp)
    rates = training.images_per_second(runs, batch, device, timed=steps, warmup=warmup)
    return {"device": str(device), "amp_dtype": str(amp), "batch": batch, "img_s": rates,
            "threads": torch.get_num_threads()}  # fmt: skip


def stage_fold(batch: int = 128, timed: int = 6) -> dict:
    import torch

    from catsdogs_helpers import devices, models, training

    device = devices.pick_device("auto")
    amp = devices.amp_dtype(device)
    runs = {}
    for name, side in (("resnet9", 96), ("efficientnet_lite0", 192)):
        model = models.create_model(name, 2).to(device, memory_format=torch.channels_last)
        x = torch.randn(batch, 3, side, side, device=device)
        x = x.contiguous(memory_format=torch.channels_last)
        folded = models.fold_batch_norms(model)
        for label, net in (("as it is", model.eval()), ("folded", folded), ("chunks", folded)):

            def forward(net=net, x=x, chunks=label == "chunks"):
                with torch.no_grad(), devices.autocast(device, amp):
                    models.forward_in_chunks(net, x) if chunks else net(x)

            runs[f"{name} {side} px, {label}"] = forward
    rates = training.images_per_second(runs, batch, device, timed=timed, warmup=2)
    return {"device": str(device), "amp_dtype": str(amp), "batch": batch, "img_s": rates}


def print_fold(f: dict) -> None:
    print(f"\ninference images/s, batch norms folded ({f['device']}, {f['amp_dtype']}, "
          f"batch {f['batch']}):")  # fmt: skip
    print(f"  {'':<36}{'as it is':>9}{'folded':>10}{'':6}{'in chunks':>14}")
    rates = list(f["img_s"].items())
    columns = [rates[i::3] for i in range(3)]  # as it is, folded, in chunks
    for (name, base), (_, folded), (_, chunks) in zip(*columns, strict=True):
        print(f"  {name.rsplit(',', 1)[0]:<36}{base:>9.0f}{folded:>10.0f} {folded / base:.2f}x"
              f"{chunks:>14.0f} {chunks / base:.2f}x ({chunks / folded:.2f}x folded)")  # fmt: skip


def loader_rate(loader, epochs: int = 2) -> tuple[float, float]:
    """``(images/s after the first batch, seconds to the first batch)`` of ``loader``, the
    median over ``epochs`` epochs. The first batch waits for the worker processes to start,
    which happens once per epoch (they are restarted for their seeds, see
    :func:`catsdogs_helpers.datasets.seed_worker`), so it is reported on its own."""
    import numpy as np
    import torch

    rates, starts = [], []
    for _ in range(epochs):
        start = time.perf_counter()
        batches = iter(loader)
        first = len(next(batches)[1])
        ready = time.perf_counter()
        images = sum(len(labels) for _images, labels in batches)
        if torch.cuda.is_available():  # crops made on the GPU (DeviceCropFlip) are done
            torch.cuda.synchronize()
        rates.append(images / (time.perf_counter() - ready))
        starts.append(ready - start)
        assert first and images
    return float(np.median(rates)), float(np.median(starts))


def synthetic_cache(folder: Path, n: int, size: int):
    """A decoded cache of ``n`` random ``size`` x ``size`` images (speed only: no photos)."""
    import numpy as np
    import pandas as pd

    from catsdogs_helpers.datasets import ImageCache

    path = folder / f"images-{size}px.npy"
    rng = np.random.default_rng(0)
    np.save(path, rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8))
    rows = pd.DataFrame({"path": [f"{i}.jpg" for i in range(n)], "sha256": ""})
    return ImageCache(path, rows, np.ones(n, dtype=bool), size)


def stage_loader(sizes: tuple[int, ...] = (96, 224), n: int = 1024) -> dict:
    from catsdogs_helpers import config, datasets, devices, training, transforms

    device = devices.pick_device("auto")
    recipe = config.make_config()  # the default recipe
    workers = config.default_num_workers(accelerator=device.type == "cuda")
    counts = sorted({0, workers, config.default_num_workers(accelerator=True)})
    batch = recipe.batch_size if device.type == "cuda" else 32
    setting = {"amp_dtype": devices.amp_dtype(device), "channels_last": True}
    out = {"device": str(device), "model": recipe.model_name, "augment": recipe.augment,
           "batch": batch, "default_workers": workers, "workers": counts, "sizes": {}}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            cache = synthetic_cache(Path(tmp), n, round(size * recipe.resize_ratio))
            pipeline = transforms.PIPELINES[recipe.augment](size, cache.size, seed=0)
            dataset = datasets.CachedImageDataset(cache, range(n), [0] * n, pipeline)
            row = {}
            for w in counts:
                loader = datasets.make_loader(
                    dataset, batch_size=batch, shuffle=True, num_workers=w, drop_last=True
                )
                row[f"loader_{w}_workers_img_s"], row[f"first_batch_{w}_workers_s"] = loader_rate(
                    loader
                )
            on_device = datasets.make_loader(dataset, batch_size=batch, shuffle=True,
                num_workers=workers, drop_last=True, crop_on=device)  # fmt: skip
            if isinstance(on_device, datasets.DeviceCropFlip):  # the light pipeline only
                row["loader_on_device_img_s"] = loader_rate(on_device)[0]
            row["train_img_s"] = training.measure_training_speed(
                recipe.model_name, {"ours": setting}, image_size=size, batch_size=batch,
                device=device, steps=3, warmup=1,
            )["ours"]  # fmt: skip
            row["ratio_default_workers"] = (
                row[f"loader_{workers}_workers_img_s"] / row["train_img_s"]
            )
            out["sizes"][str(size)] = row
    return out


#: One lever at a time on the quick run (``recipes/quick.yaml``), against it as it is.
LEVERS = {
    "the quick run as it is": {},
    "8 epochs instead of 6": {"EPOCHS": 8},
    "80 px instead of 64": {"IMAGE_SIZE": 80},
    "the first layer learned, not whitened": {LEARNED_FIRST_LAYER: True},
    "LR 0.2, the former peak, instead of 0.4": {"LR": 0.2},
}


def stage_levers() -> dict:
    """The quick run, then each lever of :data:`LEVERS` alone: test accuracy and time."""
    base = recipe("quick")
    return {name: train_and_test(**{**base, **change}) for name, change in LEVERS.items()}


def stage_first_runs() -> dict:
    return {"quick": train_and_test(**recipe("quick")), "small": train_and_test(**SMALL_RUN)}


def frozen_features(model, dataset, device) -> tuple:
    """``(features, labels)``: the inputs of ``model``'s output layer for every photo of
    ``dataset`` (its centre crops), the pretrained layers frozen."""
    import torch

    from catsdogs_helpers import datasets, training

    loader = datasets.make_loader(dataset, batch_size=128, shuffle=False)
    batches = training.head_inputs(model, loader, device)
    x, y = (torch.cat(parts) for parts in zip(*batches, strict=True))
    return x.cpu().numpy(), y.cpu().numpy()


def linear_probe(side: int) -> dict:
    """The pretrained recipe's model at ``side`` px, its new output layer a logistic
    regression on the frozen features of the centre crops; the strength chosen on
    validation. Timed from validation on, as :func:`train_and_test`."""
    import torch
    from sklearn.linear_model import LogisticRegression

    from catsdogs_helpers import devices, models, transforms, workflow

    parameters = recipe("pretrained", IMAGE_SIZE=side)
    cfg, _, split, cache, start, prep_seconds = prepared_run(**parameters)
    device = devices.pick_device(cfg.device)
    model = models.create_model(cfg.model_name, 2, pretrained=True).to(device).eval()
    model = model.to(memory_format=torch.channels_last)
    sets = workflow.make_datasets(
        cfg, split, cache, transforms.eval_transforms(side, cfg.cache_size)
    )
    features = {
        name: frozen_features(model, sets[name], device) for name in ("train", "val", "test")
    }
    feature_seconds = time.perf_counter() - start - prep_seconds
    fits = [
        LogisticRegression(C=c, max_iter=2000).fit(*features["train"]) for c in (0.1, 0.3, 1, 3)
    ]
    best = max(fits, key=lambda f: f.score(*features["val"]))
    return {"side": side, "C": best.C, "val_acc": best.score(*features["val"]),
            "test_accuracy": best.score(*features["test"]), "n_test": len(features["test"][1]),
            "photos": sum(len(labels) for _, labels in features.values()),
            "prep_seconds": prep_seconds, "feature_seconds": feature_seconds,
            "wall_seconds": time.perf_counter() - start}  # fmt: skip


def stage_probe() -> dict:
    """The pretrained recipe as it is, then its output layer fitted as a linear probe at the
    recipe's side and at 224 px."""
    pretrained = recipe("pretrained")
    out = {"the pretrained recipe as it is": train_and_test(**pretrained)}
    for side in (pretrained["IMAGE_SIZE"], 224):
        out[f"a converged linear probe at {side} px"] = linear_probe(side)
    return out


def _own_photo_paths(cfg, cache, dataset, positions) -> list[str]:
    from catsdogs_helpers import workflow

    root = workflow.ensure_images(cfg, progress=False)
    return [str(root / p) for p in workflow.dataset_paths(cache, dataset)[positions]]


def stage_trust() -> dict:
    """The README's quick run, then issue-by-issue trust checks on its test split: the test
    photos predicted as your own photos (``predict_files``) against the test loader, and
    against the old own-photo path (shorter side at the crop size, no crop); the TTA table;
    the ECE before and after temperature scaling (fitted on validation); the threshold for
    99 % precision for Cat, chosen on validation and checked on the test split."""
    from catsdogs_helpers import (
        calibration,
        datasets,
        devices,
        evaluation,
        predicting,
        transforms,
        workflow,
    )

    run = trained_run(**recipe("quick"))
    cfg, split, cache, model = run.cfg, run.split, run.cache, run.model
    sets = workflow.make_datasets(cfg, split, cache)
    device = devices.pick_device(cfg.device)
    pre, names = transforms.preprocessing_for(cfg), sets["test"].class_names
    probs, labels, positions = evaluation.predict_dataset(model, sets["test"], pre, device)
    files = _own_photo_paths(cfg, cache, sets["test"], positions)
    clf = predicting.Classifier(model, tuple(names), pre, calibration.Decision(), device)
    own = predicting.predict_files(clf, files)[[f"p_{n}" for n in names]].to_numpy()
    old_set = datasets.ImageFileDataset(files, size=cfg.eval_size)  # the old own-photo path
    old = evaluation.predict(model, datasets.make_loader(old_set, batch_size=64, shuffle=False),
                             device, pre)[0]  # fmt: skip
    val_probs, val_labels, _ = evaluation.predict_dataset(model, sets["val"], pre, device)
    decision = calibration.make_decision(val_labels, val_probs, names, positive=names[0])
    ece = calibration.expected_calibration_error
    rules = {"threshold": decision, "argmax": calibration.Decision()}
    on_test = {rule: asdict(calibration.decision_result(labels, probs, names, d, names[0]))
               for rule, d in rules.items()}  # fmt: skip
    return {
        "n_test": int(len(labels)), "test_accuracy": float((probs.argmax(1) == labels).mean()),
        "parity_max_abs": float(abs(own - probs).max()),
        "old_path_flips": int((old.argmax(1) != probs.argmax(1)).sum()),
        "old_path_max_abs": float(abs(old - probs).max()),
        "tta": evaluation.compare_tta(model, sets["test"], pre, device).to_dict("records"),
        "temperature": decision.temperature, "ece_before": ece(labels, probs),
        "ece_after": ece(labels, decision.calibrate(probs)), "goal": decision.goal,
        "threshold": decision.threshold, "val_recall": decision.recall, "on_test": on_test,
    }  # fmt: skip


def stage_export(batch: int = 64, singles: int = 60, batches: int = 6, threads: int = 1) -> dict:
    """PyTorch (as ``predict_files`` runs it) against ONNX Runtime on the exported file, on
    the CPU with ``threads`` threads each (one: on a shared machine, more threads than free
    cores make both many times slower and the comparison meaningless). The weights are
    random: speed does not depend on them."""
    import numpy as np
    import torch

    from catsdogs_helpers import (
        calibration,
        config,
        devices,
        models,
        predicting,
        training,
    )
    from catsdogs_helpers.evaluation import probabilities
    from catsdogs_helpers.tools import export
    from catsdogs_helpers.transforms import preprocessing_for

    torch.set_num_threads(threads)
    cfg, device = config.make_config(), torch.device("cpu")
    preprocessing, amp = preprocessing_for(cfg), devices.amp_dtype(device)
    model = models.create_model(cfg.model_name, 2).eval()
    classifier = predicting.Classifier(
        model, ("Cat", "Dog"), preprocessing, calibration.Decision(), device
    )
    with tempfile.TemporaryDirectory() as tmp:
        program = export.capture(classifier)
        onnx_file = export.save_onnx(program, Path(tmp) / "model.onnx")
        onnx = export.onnx_runtime(onnx_file, threads=threads)

    @torch.no_grad()
    def pytorch(images: np.ndarray) -> np.ndarray:
        with devices.autocast(device, amp):
            return probabilities(model, torch.from_numpy(images), device, preprocessing).numpy()

    size = preprocessing.input_size
    images = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    runners = {"pytorch": pytorch, "onnxruntime": onnx}
    # taking turns, so that the machine's load hits both alike (training.images_per_second)
    single = training.images_per_second(
        {name: partial(run, images[:1]) for name, run in runners.items()}, 1, device,
        timed=singles, warmup=1,
    )  # fmt: skip
    many = training.images_per_second(
        {name: partial(run, images) for name, run in runners.items()}, batch, device,
        timed=batches, warmup=1,
    )  # fmt: skip
    out = {"model": cfg.model_name, "size": size, "tta": preprocessing.tta, "batch": batch,
           "amp_dtype": str(amp), "threads": threads}  # fmt: skip
    for name in runners:
        out[f"{name}_single_ms"] = 1000 / single[name]
        out[f"{name}_batch_img_s"] = many[name]
    out["ratio_single"] = out["pytorch_single_ms"] / out["onnxruntime_single_ms"]
    out["ratio_batch"] = out["onnxruntime_batch_img_s"] / out["pytorch_batch_img_s"]
    return out


def goals() -> dict:
    """name: (the run, its baseline or None, accuracy at least, minutes at most or None)."""
    budget = recipe("fast", LIMIT_PER_CLASS=5000, TIME_BUDGET=7)
    return {
        "pretrained, 10,000 photos": (recipe("pretrained"), recipe("quick"), 0.985, 5),
        "pretrained, 800 photos": (recipe("pretrained", LIMIT_PER_CLASS=400), SMALL_RUN, 0.95,
                                   None),
        "the quick run": (recipe("quick"), {**recipe("quick"), LEARNED_FIRST_LAYER: True},
                          0.88, 4),
        "the default in TIME_BUDGET 7": (budget, {**budget, LEARNED_FIRST_LAYER: True,
                                                  "LR": 0.2}, 0.94, 10),
    }  # fmt: skip


def stage_goals() -> dict:
    """Each run of :func:`goals` and its baseline, once each (the quick run is both)."""
    done = {}

    def run(parameters: dict) -> dict:
        key = json.dumps(parameters, sort_keys=True)
        if key not in done:
            done[key] = train_and_test(**parameters)
        return done[key]

    out = {}
    for name, (parameters, baseline, accuracy, minutes) in goals().items():
        out[name] = {"run": run(parameters), "baseline": baseline and run(baseline),
                     "accuracy_goal": accuracy, "minutes_goal": minutes}  # fmt: skip
    return out


def baseline_name(run: dict, baseline: dict) -> str:
    """What a goal's baseline changes in its run's parameters."""
    changes = []
    if baseline.get(LEARNED_FIRST_LAYER):
        changes.append("the first layer learned, not whitened")
    if "LR" in baseline and baseline["LR"] != run.get("LR"):  # set by the baseline itself
        changes.append(f"LR {baseline['LR']}")
    return ", ".join(changes) or "from scratch on the same photos"


def print_goals(goals: dict) -> None:
    print("\ngoals (test accuracy; minutes from the extracted photos to test predictions):")
    for name, g in goals.items():
        if not isinstance(g, dict):  # the stage's peak memory
            continue
        r, base = g["run"], g["baseline"]
        minutes = r["wall_seconds"] / 60
        met = r["test_accuracy"] >= g["accuracy_goal"] and minutes <= (g["minutes_goal"] or 1e9)
        within = f" within {g['minutes_goal']} min" if g["minutes_goal"] else ""
        print(f"  {name}: {r['test_accuracy']:.1%} in {minutes:.1f} min ({r['epochs']} epochs "
              f"at {r['image_size']} px, "
              f"{r['n_test']} test photos); goal {g['accuracy_goal']:.1%}{within}: "
              f"{'met' if met else 'NOT met'}")  # fmt: skip
        if base:
            print(f"    baseline, {baseline_name(r['parameters'], base['parameters'])}: "
                  f"{base['test_accuracy']:.1%} in "
                  f"{base['wall_seconds'] / 60:.1f} min ({base['epochs']} epochs at "
                  f"{base['image_size']} px)")  # fmt: skip


STAGES = {"data": stage_data, "train": stage_train, "scan": stage_scan,
          "time_to_accuracy": stage_time_to_accuracy, "first_runs": stage_first_runs,
          "trust": stage_trust, "pretrained": stage_pretrained,
          "loader": stage_loader, "export": stage_export, "levers": stage_levers,
          "probe": stage_probe, "fold": stage_fold, "goals": stage_goals}  # fmt: skip


def run_stage(name: str, folder: Path) -> dict:
    """Run one stage in a fresh process and return its result with its peak memory."""
    out = subprocess.run(
        [sys.executable, __file__, "--stage", name, "--photos", str(folder)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    from catsdogs_helpers.config import available_cores

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--photos", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=600, help="photos for stages 1 and 3")
    parser.add_argument("--time-to-accuracy", action="store_true", help="also run stage 4")
    parser.add_argument("--first-runs", action="store_true", help="also run stage 5")
    parser.add_argument("--loader", action="store_true", help="also run stage 8")
    parser.add_argument("--export", action="store_true", help="also run stage 9")
    parser.add_argument("--only", nargs="*", choices=STAGES, help="run only these stages")
    args = parser.parse_args()
    if args.stage:
        func = STAGES[args.stage]
        result = func(args.photos) if args.stage in ("data", "scan") else func()
        result["peak_mb"] = peak_mb()
        print(json.dumps(result))
        return
    names = ["data", "train", "scan"] + (["time_to_accuracy"] if args.time_to_accuracy else [])
    names += ["first_runs"] if args.first_runs else []
    names += [n for n in ("loader", "export") if getattr(args, n)]
    names = args.only or names
    if not DEV_ZIP.is_file() and set(names) - {"train", "pretrained", "loader", "export", "fold"}:
        sys.exit(f"{DEV_ZIP} not found: set CATSDOGS_DEV_ZIP to the 10k subset's zip")
    results = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.processor() or platform.machine()}, {available_cores()} cores",
        "python": platform.python_version(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        if {"data", "scan"} & set(names):  # the others need no photos of their own
            make_photos(folder, args.n)
        for name in names:
            print(f"running {name} ...", file=sys.stderr, flush=True)
            results[name] = run_stage(name, folder)
    out = HERE / "results" / f"benchmark-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print_table(results)
    print(f"\nwritten to {out.relative_to(REPO)}")


def print_table(r: dict) -> None:
    print(f"\n{r['machine']}, Python {r['python']}, {r['date']}\n")
    if {"data", "train", "scan"} <= set(r):
        print_speed(r)
    printers = {"time_to_accuracy": print_time_to_accuracy, "first_runs": print_first_runs,
                "trust": print_trust, "pretrained": print_pretrained, "loader": print_loader,
                "export": print_export, "levers": print_levers, "probe": print_probe,
                "fold": print_fold, "goals": print_goals}  # fmt: skip
    for stage, printer in printers.items():
        if stage in r:
            printer(r[stage])


def print_levers(levers: dict, base_name: str = "the quick run as it is") -> None:
    levers = {name: r for name, r in levers.items() if isinstance(r, dict)}  # not peak_mb
    base = levers[base_name]
    print(f"\nlevers on {base_name.removesuffix(' as it is')} ({base['n_test']} test photos; "
          "from validation to test predictions, training included):")  # fmt: skip
    for name, r in levers.items():
        gain = 100 * (r["test_accuracy"] - base["test_accuracy"])
        print(
            f"  {name:<44}{r['test_accuracy']:>7.1%} ({gain:+.1f} points)  "
            f"{r['wall_seconds']:>5.0f} s ({r['wall_seconds'] / base['wall_seconds']:.2f}x)"
        )


def print_probe(probe: dict) -> None:
    print_levers(probe, "the pretrained recipe as it is")
    for name, r in probe.items():
        if isinstance(r, dict) and "feature_seconds" in r:
            print(f"  {name}: C {r['C']}, validation {r['val_acc']:.1%}, features of the "
                  f"{r['photos']:,} photos {r['feature_seconds']:.0f} s")  # fmt: skip


def print_trust(t: dict) -> None:
    n = t["n_test"]
    print(
        f"\ntrust (quick run, {n} test photos, test accuracy {t['test_accuracy']:.1%}):\n"
        f"  own-photo path vs test loader: max |p difference| {t['parity_max_abs']:.1e}; the "
        f"old own-photo path: {t['old_path_flips']} answers of {n} differ "
        f"({t['old_path_flips'] / n:.1%}), by up to {t['old_path_max_abs']:.2f}"
    )
    base = next(row for row in t["tta"] if row["tta"] == "none")
    for row in t["tta"]:
        print(f"  TTA {row['tta']:<11}{row['views']:>3} views  accuracy {row['accuracy']:.1%}  "
              f"log loss {row['log_loss']:.4f}  {row['ms_per_image']:.1f} ms/photo "
              f"({row['ms_per_image'] / base['ms_per_image']:.1f}x)")  # fmt: skip
    print(f"  temperature {t['temperature']:.3f} (fitted on validation): test ECE "
          f"{t['ece_before']:.4f} before, {t['ece_after']:.4f} after")  # fmt: skip
    th, am = t["on_test"]["threshold"], t["on_test"]["argmax"]
    print(f"  {t['goal']}: threshold {t['threshold']:.3f}; on the test split precision "
          f"{th['precision']:.1%} recall {th['recall']:.1%} (the most likely class: "
          f"{am['precision']:.1%}, {am['recall']:.1%})")  # fmt: skip


def print_pretrained(p: dict) -> None:
    rates = p["img_s"]
    base = rates["resnet9_96"]
    print(f"\ntraining img/s, batch {p['batch']}, {p['device']}, autocast {p['amp_dtype']}:")
    for name, rate in rates.items():
        print(f"  {name:<22}{rate:>8.1f} img/s{rate / base:>8.2f}x resnet9_96")


def print_loader(r: dict) -> None:
    print(
        f"\nloader against training ({r['device']}, {r['model']}, {r['augment']} "
        f"augmentation, batch {r['batch']}, default workers here {r['default_workers']}):"
    )
    print(f"{'size':>6}{'workers':>9}{'loader img/s':>14}{'1st batch s':>13}{'train img/s':>13}"
          f"{'loader/train':>14}")  # fmt: skip
    for size, row in r["sizes"].items():
        for w in r["workers"]:
            rate = row[f"loader_{w}_workers_img_s"]
            print(f"{size:>6}{w:>9}{rate:>14.0f}{row[f'first_batch_{w}_workers_s']:>13.2f}"
                  f"{row['train_img_s']:>13.0f}{rate / row['train_img_s']:>13.1f}x")  # fmt: skip
        if "loader_on_device_img_s" not in row:
            continue
        rate, train = row["loader_on_device_img_s"], row["train_img_s"]
        print(f"{size:>6}{r['default_workers']:>9}{rate:>14.0f}{'':>13}{train:>13.0f}"
              f"{rate / train:>13.1f}x  crop and flip on the {r['device']}")  # fmt: skip
    print("  (below 1x the model waits for its data: raise NUM_WORKERS, or use a lighter AUGMENT)")


def print_export(e: dict) -> None:
    print(
        f"\nexport: {e['model']} at {e['size']} px, TTA {e['tta']}, CPU, {e['threads']} "
        f"thread(s) each (autocast {e['amp_dtype']}), uint8 photos in, probabilities out"
    )
    print(f"{'':<26}{'PyTorch':>12}{'ONNX Runtime':>14}{'speed, ONNX/PyTorch':>22}")
    print(
        f"{'one photo, median ms':<26}{e['pytorch_single_ms']:>12.2f}"
        f"{e['onnxruntime_single_ms']:>14.2f}{e['ratio_single']:>21.2f}x"
    )
    print(
        f"{'batch of ' + str(e['batch']) + ', photos/s':<26}{e['pytorch_batch_img_s']:>12.0f}"
        f"{e['onnxruntime_batch_img_s']:>14.0f}{e['ratio_batch']:>21.2f}x"
    )


def print_first_runs(runs: dict) -> None:
    for name in ("quick", "small"):
        run = runs[name]
        given = " ".join(f"-p {k} {v}" for k, v in run["parameters"].items())
        print(
            f"\nfirst run, {name} ({given}): {run['train_images']} training photos, "
            f"batch {run['batch_size']}, {run['epochs']} epochs: "
            f"test accuracy {run['test_accuracy']:.1%} on {run['n_test']} photos, best "
            f"validation accuracy {max(run['val_acc']):.1%}; {run['wall_seconds'] / 60:.1f} min "
            f"from validation to test results; peak {runs['peak_mb']:.0f} MB"
        )


def print_speed(r: dict) -> None:
    print(f"{'stage':<34}{'baseline':>14}{'ours':>14}{'ratio':>8}{'peak MB':>10}")
    d, t, s = r["data"], r["train"], r["scan"]
    rows = [
        ("data: train img/s, 1 core", d["tutorial_per_sample_img_s"], d["ours_cached_epoch_img_s"],
         d["ratio"], d["peak_mb"]),
        (f"train: {t['model']} 128px, batch {t['batch']}", t["fp32_img_s"], t["ours_img_s"],
         t["ratio"], t["peak_mb"]),
        ("scan: validate img/s", s["full_decode_single_process_img_s"], s["validate_img_s"],
         s["ratio"], s["peak_mb"]),
    ]  # fmt: skip
    for name, base, ours, ratio, mb in rows:
        print(f"{name:<34}{base:>14.0f}{ours:>14.0f}{ratio:>7.1f}x{mb:>10.0f}")
    print(f"  (cache build, once: {d['ours_cache_build_img_s']:.0f} img/s on 1 core; first epoch "
          f"including it still {d['ratio_first_epoch_with_cache_build']:.1f}x)")  # fmt: skip
    print(
        f"  (truncated files: validate caught {s['truncated_caught_by_validate']}, the "
        f"full-decode check kept {s['truncated_kept_by_full_decode_check']}; the 1/8 decode "
        f"alone runs at {s['reduced_decode_single_process_img_s']:.0f} img/s on one core, so "
        f"no check that reads every byte passes {s['ceiling_ratio_all_cores']:.1f}x on "
        f"{s['workers']} cores)"
    )
    drift = s["hash_drift_resized_75_median_bits"]
    print(
        f"  (a copy resized to 75 % hashes {drift['validate_step']:.0f} bits from its original "
        f"at the validate step's scale, {drift['one_eighth']:.0f} bits from a 1/8-scale "
        f"decode; duplicates are grouped up to 12)"
    )


def print_time_to_accuracy(a: dict) -> None:
    print(
        f"\ntime to accuracy ({a['recipe']} recipe, {a['model']}, {a['epochs']} epochs, "
        f"{a['images']} photos): test accuracy {a['test_accuracy']:.1%} after "
        f"{a['wall_seconds'] / 60:.1f} min (data preparation {a['prep_seconds']:.0f} s); "
        f"best validation accuracy within 10 min {a['best_val_acc_within_10_min']:.1%}; "
        f"peak {a['peak_mb']:.0f} MB"
    )
    if a.get("seconds_to_92_val_acc") is not None:
        print(
            f"validation accuracy first reached 92 % after "
            f"{a['seconds_to_92_val_acc'] / 60:.1f} min (data preparation included)"
        )
    print(
        f"tutorial recipe (ResNet-50 fp32, {a['tutorial_fp32_img_s']:.0f} img/s): 10 epochs "
        f"would take about {a['tutorial_projected_seconds_10_epochs'] / 60:.0f} min"
    )


if __name__ == "__main__":
    main()
