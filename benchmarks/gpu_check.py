"""A GPU check in one go, printed as one table: what this project does on the accelerator.

    bash benchmarks/gpu_check.sh                     # a GPU machine, a fresh clone: < 8 min
    python benchmarks/gpu_check.py --tiny --zip Z    # a CPU dry run at a tiny size (tests)

1. the training step of the default model (ResNet-9, 96 px) and the pretrained recipe's
   (EfficientNet-Lite0, 224 px): fp32 and autocast (bf16 where the GPU has it, else fp16
   with loss scaling), channels_last off and on, images/s;
2. the training loader's images/s against the model's, at 96 and 224 px (below 1x the
   model waits for its data), its crop and flip in the workers and on the GPU;
3. ``torch.compile`` off and on for the default model's step, and what compiling costs;
4. the default recipe and the pretrained recipe end to end on the 10k subset's zip, from
   the extracted photos to test accuracy, with their time;
5. ``torchrun`` with one process (the multi-GPU path) on a short run.

``--tiny`` makes every part small, for a CPU, and compiles with the ``eager`` backend (the
code path without code generation), so the check is known to run before a GPU is lent.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
Row = tuple[str, str, str]


def step_rows(device, cases, batch: int, steps: int) -> list[Row]:
    """Training images/s of ``(model, side)`` cases in fp32 and autocast, channels_last off
    and on, the settings taking turns step by step."""
    from catsdogs_helpers import devices, training

    amp = devices.amp_dtype(device)
    settings = {"fp32": {}, "fp32, channels_last": {"channels_last": True}}
    if amp is not None:
        settings[f"{amp} autocast"] = {"amp_dtype": amp}
        settings[f"{amp} autocast, channels_last"] = {"amp_dtype": amp, "channels_last": True}
    rows = []
    for model, side in cases:
        speed = training.measure_training_speed(
            model, settings, image_size=side, batch_size=batch, device=device, steps=steps
        )
        base = speed["fp32"]
        for name, rate in speed.items():
            rows.append(
                ("step", f"{model} {side} px, {name}", f"{rate:.0f} img/s, {rate / base:.2f}x")
            )
    return rows


def loader_rows(sizes: tuple[int, ...], n: int) -> list[Row]:
    """The benchmark's loader stage: the loader against the model, at each size."""
    import benchmark

    out = benchmark.stage_loader(sizes, n)
    rows = []
    for size, row in out["sizes"].items():
        workers = out["default_workers"]
        loader, train = row[f"loader_{workers}_workers_img_s"], row["train_img_s"]
        setting = f"{size} px, {workers} workers, batch {out['batch']}"
        rows.append(
            ("loader", setting, f"{loader:.0f} img/s against {train:.0f}: {loader / train:.1f}x")
        )
        if "loader_on_device_img_s" not in row:  # AUGMENT other than light: in the workers
            continue
        loader = row["loader_on_device_img_s"]
        rows.append(
            ("loader", f"{setting}, crop and flip on the {out['device']}",
             f"{loader:.0f} img/s against {train:.0f}: {loader / train:.1f}x"),
        )  # fmt: skip
    return rows


def compile_rows(device, side: int, batch: int, steps: int, backend: str) -> list[Row]:
    """The default model's step, eager against ``torch.compile``, and the compile time."""
    import torch

    from catsdogs_helpers import devices, models, training

    amp = devices.amp_dtype(device)
    x = torch.randn(batch, 3, side, side, device=device).contiguous(
        memory_format=torch.channels_last
    )
    y = torch.randint(0, 2, (batch,), device=device)
    stepping = {}
    for name in ("eager", "compiled"):
        model = models.create_model("resnet9", 2).to(device, memory_format=torch.channels_last)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        run = torch.compile(model, backend=backend) if name == "compiled" else model
        stepping[name] = training.optimiser_step(run, optimizer, x, y, device, amp)
    start = time.perf_counter()
    stepping["compiled"]()  # the first call compiles
    compiling = time.perf_counter() - start
    rates = training.images_per_second(stepping, batch, device, timed=steps, warmup=1)
    return [
        ("compile", f"resnet9 {side} px, eager", f"{rates['eager']:.0f} img/s"),
        ("compile", f"resnet9 {side} px, torch.compile ({backend})",
         f"{rates['compiled']:.0f} img/s, {rates['compiled'] / rates['eager']:.2f}x; "
         f"compiling took {compiling:.0f} s"),
    ]  # fmt: skip


def end_to_end_rows(runs: dict[str, dict]) -> list[Row]:
    """Each recipe from the extracted photos to test accuracy (the benchmark's timing)."""
    import benchmark

    rows = []
    for name, parameters in runs.items():
        r = benchmark.train_and_test(**parameters)
        result = f"{r['test_accuracy']:.1%} test accuracy ({r['n_test']} photos)"
        time_taken = f"{r['wall_seconds']:.0f} s from the extracted photos, {r['epochs']} epochs"
        rows.append(("end to end", f"{name}: {r['model']}", f"{result} in {time_taken}"))
    return rows


def torchrun_rows(zip_path: Path, parameters: dict) -> list[Row]:
    """The command-line trainer under ``torchrun`` with one process, timed."""
    env = {**os.environ, "CATSDOGS_DATA_DIR": tempfile.mkdtemp(prefix="catsdogs-gpucheck-")}
    env["CATSDOGS_RUNS_DIR"] = tempfile.mkdtemp(prefix="catsdogs-gpucheck-runs-")
    pairs = {**parameters, "DATASET_URL": zip_path, "RUN_NAME": "torchrun"}.items()
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1",
               "-m", "catsdogs_helpers.tools.trainer"]  # fmt: skip
    command += [word for k, v in pairs for word in ("-p", k, str(v))]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    found = re.search(r"best validation accuracy ([0-9.]+)", done.stdout)
    if done.returncode or not found:
        tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
        return [("torchrun", "1 process", f"failed ({done.returncode}): {' / '.join(tail)}")]
    result = f"{float(found.group(1)):.1%} validation accuracy in {seconds:.0f} s"
    return [("torchrun", f"1 process, {parameters['EPOCHS']} epochs", result)]


def print_table(rows: list[Row], header: str) -> None:
    print(f"\n{header}\n\n| check | setting | result |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zip", type=Path, required=True, help="the 10k subset's zip")
    parser.add_argument("--tiny", action="store_true", help="a CPU dry run at a tiny size")
    args = parser.parse_args(argv)
    os.environ["CATSDOGS_DEV_ZIP"] = str(args.zip.resolve())  # read by benchmark.py
    sys.path[:0] = [str(HERE), str(HERE.parent)]  # benchmark.py, and this package uninstalled
    import torch

    from catsdogs_helpers import devices
    from catsdogs_helpers.tools import series

    device = devices.pick_device("auto")
    tiny = {"LIMIT_PER_CLASS": 20, "EPOCHS": 1, "NUM_WORKERS": 0}
    pretrained = {k: v for k, v in series.read_recipe("pretrained.yaml").items() if k != "RUN_NAME"}
    recipes = {  # the recipe files' values (the defaults are fast.yaml's), tiny on top
        "default (recipes/fast.yaml)": tiny | {"IMAGE_SIZE": 32} if args.tiny else {},
        "pretrained (recipes/pretrained.yaml)": pretrained
        | (tiny | {"IMAGE_SIZE": 64} if args.tiny else {}),
    }
    cases = [("resnet9", 32), ("efficientnet_lite0", 64)] if args.tiny else [
        ("resnet9", 96), ("efficientnet_lite0", 224)]  # fmt: skip
    batch, steps = (4, 1) if args.tiny else (128, 10)
    rows = step_rows(device, cases, batch, steps)
    rows += loader_rows((32,), 64) if args.tiny else loader_rows((96, 224), 2048)
    rows += compile_rows(device, cases[0][1], batch, steps, "eager" if args.tiny else "inductor")
    rows += end_to_end_rows(recipes)
    short = tiny | {"IMAGE_SIZE": 32} if args.tiny else {"EPOCHS": 3, "IMAGE_SIZE": 64}
    rows += torchrun_rows(args.zip.resolve(), short)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print_table(rows, f"gpu_check on {name} (torch {torch.__version__}, device {device})")


if __name__ == "__main__":
    main()
