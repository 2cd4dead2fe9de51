"""benchmarks/gpu_check.py, the check a lent GPU runs, as a CPU dry run at a tiny size: every
part runs and the table has a row for each (nothing leaves the machine)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import fakedata

REPO = Path(__file__).resolve().parent.parent


def test_the_gpu_check_runs_every_part_on_a_cpu(tmp_path):
    photos = fakedata.make_petimages(tmp_path / "source", per_class=40)
    archive = fakedata.zip_folder(photos, tmp_path / "tiny.zip")
    script = REPO / "benchmarks" / "gpu_check.py"
    command = [sys.executable, str(script), "--tiny", "--zip", str(archive)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    table = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    checks = [line.split(" | ")[0].lstrip("| ") for line in table[1:]]
    assert {"step", "loader", "compile", "end to end", "torchrun"} <= set(checks)
    assert any("resnet9 32 px, fp32, channels_last" in line for line in table)
    assert any("crop and flip on the cpu" in line for line in table), "the loader on the device"
    assert any("efficientnet_lite0" in line and "test accuracy" in line for line in table)
    assert not any("failed" in line for line in table), "\n".join(table)
