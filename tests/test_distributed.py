"""Training on several processes (DistributedDataParallel under ``torchrun``, Gloo on the CPU):
the same run as one process, written by process 0 alone, and resumable after a kill."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision

import fakedata
from catsdogs_helpers import config, training, workflow
from catsdogs_helpers.tools import distributed, trainer

SETTINGS = {"EPOCHS": 3, "IMAGE_SIZE": 48, "BATCH_SIZE": 16, "NUM_WORKERS": 0}

#: Run by each process ``torchrun`` starts: notes its pid, and every file it opens for
#: writing, renames or deletes under the runs folder (Python's audit hooks see them all), in
#: a log written as it goes, so a killed process leaves its log too.
AUDITED_TRAIN = """
import os, sys
runs = os.path.realpath(os.environ["CATSDOGS_RUNS_DIR"])
logs = os.environ["WRITE_LOGS"]
rank = os.environ["RANK"]
with open(os.path.join(logs, f"pid-{rank}"), "w") as f:
    f.write(str(os.getpid()))
log = os.open(os.path.join(logs, f"writes-{rank}"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

def hook(event, args):
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        path, mode, flags = args
        writes = any(c in (mode or "") for c in "wax+") or bool((flags or 0) & WRITE)
    elif event in ("os.rename", "os.remove"):
        path, writes = args[1] if event == "os.rename" else args[0], True
    else:
        return
    path = os.path.realpath(os.fsdecode(path))
    if writes and path.startswith(runs):
        os.write(log, (event + " " + path + "\\n").encode())

sys.addaudithook(hook)
from catsdogs_helpers.tools import trainer
trainer.main(sys.argv[1:])
"""


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    fakedata.make_petimages(tmp_path / "d", per_class=80)
    monkeypatch.setenv("CATSDOGS_DATA_DIR", str(tmp_path / "d"))
    return tmp_path / "d"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(tmp_path: Path, logs: Path, run: str, *extra: str) -> subprocess.Popen:
    """Two processes on the CPU (Gloo), one thread each, training ``run``."""
    script = tmp_path / "audited_train.py"
    script.write_text(AUDITED_TRAIN)
    logs.mkdir(parents=True, exist_ok=True)
    parameters = [a for k, v in {"RUN_NAME": run, **SETTINGS}.items() for a in ("-p", k, str(v))]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
               "--master_addr=127.0.0.1", f"--master_port={_free_port()}",
               str(script), *parameters, *extra]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WRITE_LOGS": str(logs),
           "PYTHONPATH": os.pathsep.join(sys.path)}  # fmt: skip
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _writes(logs: Path) -> dict[str, list[str]]:
    return {rank: (logs / f"writes-{rank}").read_text().splitlines() for rank in ("0", "1")}


def _epochs_written(run: str) -> int:
    path = config.run_dir(run) / "summary.json"
    return json.loads(path.read_text())["epochs_run"] if path.is_file() else 0


def _kill_after_first_epoch(proc: subprocess.Popen, logs: Path, run: str) -> None:
    """SIGKILL both training processes, by their pids, once epoch 1 is on the disk."""
    try:
        deadline = time.monotonic() + 180
        while _epochs_written(run) < 1:
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.02)
        for rank in ("0", "1"):
            os.kill(int((logs / f"pid-{rank}").read_text()), signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_two_processes_train_like_one_write_once_and_resume(data_dir, tmp_path):
    _, one = workflow.train_run(config.make_config(RUN_NAME="one", **SETTINGS), progress=False)

    killed = _torchrun(tmp_path, tmp_path / "killed", "two")
    _kill_after_first_epoch(killed, tmp_path / "killed", "two")
    at_kill = training.load_checkpoint(config.run_dir("two") / "last.pt")
    assert not at_kill["finished"] and 1 <= at_kill["epoch"] < SETTINGS["EPOCHS"]
    rows_at_kill = pd.read_csv(config.run_dir("two") / "history.csv")

    resumed = _torchrun(tmp_path, tmp_path / "resumed", "two", "-p", "RESUME", "True")
    output = resumed.communicate(timeout=300)[0].decode()
    assert resumed.returncode == 0, output[-3000:]
    assert "3 epochs on 2 process(es)" in output

    for logs in (tmp_path / "killed", tmp_path / "resumed"):
        writes = _writes(logs)
        assert writes["1"] == [], writes["1"]  # process 1 never wrote into the run folder
        assert any(line.endswith("last.pt") for line in writes["0"])
    assert any(line.endswith("split.csv") for line in _writes(tmp_path / "killed")["0"])

    two = pd.read_csv(config.run_dir("two") / "history.csv")
    assert json.loads((config.run_dir("two") / "summary.json").read_text())["finished"]
    assert two["epoch"].tolist() == one["epoch"].tolist() == [1, 2, 3]
    pd.testing.assert_frame_equal(two.iloc[: len(rows_at_kill)], rows_at_kill)
    # The global batch is the same, so are the optimiser steps and the learning rates...
    np.testing.assert_allclose(two["lr"], one["lr"], rtol=1e-6)
    assert two["image_size"].tolist() == one["image_size"].tolist()
    # ... and both learn the easy generated classes (16 validation photos: 1/16 apart).
    assert one["val_acc"].iloc[-1] >= 0.85 and two["val_acc"].iloc[-1] >= 0.85
    assert abs(two["val_acc"].iloc[-1] - one["val_acc"].iloc[-1]) <= 0.15
    assert abs(two["train_loss"].iloc[-1] - one["train_loss"].iloc[-1]) <= 0.15


def test_outside_torchrun_everything_is_one_process(monkeypatch):
    for name in distributed.TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    model = torch.nn.Linear(2, 2)
    result = training.EpochResult(0.5, 0.4, 0.75, 8, 1.0)
    with distributed.process_group():
        assert not distributed.active() and distributed.is_main()
        assert distributed.world_size() == 1 and distributed.rank() == 0
        assert distributed.wrap(model, torch.device("cpu")) is model
        assert distributed.reduce_result(result) is result
        assert distributed.share_of_batch(30) == 30
        assert distributed.sampler_for(range(10), shuffle=True) is None
        assert distributed.process_seed(42000) == 42000


def test_a_group_of_one_shares_batches_and_sums_results(monkeypatch):
    env = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(_free_port())}  # fmt: skip
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = training.EpochResult(0.5, 0.4, 0.75, 8, 1.0)
    with distributed.process_group():
        assert distributed.active() and distributed.is_main()
        wrapped = distributed.wrap(torch.nn.Linear(2, 2), torch.device("cpu"))
        assert isinstance(wrapped, torch.nn.parallel.DistributedDataParallel)
        assert isinstance(distributed.unwrap(wrapped), torch.nn.Linear)
        assert distributed.reduce_result(result) == result
        assert list(distributed.sampler_for(range(5), shuffle=False)) == [0, 1, 2, 3, 4]
        with pytest.raises(RuntimeError, match="failed"), distributed.main_first():
            raise RuntimeError("failed")
    assert not distributed.active()


def test_a_batch_that_does_not_split_over_the_processes_is_refused(monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 8)
    assert distributed.share_of_batch(1024) == 128
    with pytest.raises(ValueError, match="BATCH_SIZE=100 .* multiple of 8"):
        distributed.share_of_batch(100)


def test_the_command_refuses_a_wrong_parameter(capsys):
    with pytest.raises(SystemExit) as exit_info:
        trainer.main(["-p", "EPOCHZ", "3"])
    assert exit_info.value.code == 2
    assert "did you mean EPOCHS" in capsys.readouterr().err


def test_fine_tuning_a_pretrained_start_runs_on_two_processes(data_dir, tmp_path):
    """The head-only first epoch leaves the backbone without gradients, which
    DistributedDataParallel must be told to expect; then all layers train."""
    weights = tmp_path / "resnet18-weights.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), weights)  # stands in for ImageNet's
    extra = ["-p", "PRETRAINED", "True", "-p", "MODEL_NAME", "resnet18", "-p", "WEIGHTS_PATH",
             str(weights), "-p", "EPOCHS", "2", "-p", "IMAGE_SIZE", "32"]  # fmt: skip
    proc = _torchrun(tmp_path, tmp_path / "logs", "tuned", *extra)
    output = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode == 0, output[-3000:]
    history = pd.read_csv(config.run_dir("tuned") / "history.csv")
    assert history["epoch"].tolist() == [1, 2]
    plan = json.loads((config.run_dir("tuned") / "summary.json").read_text())["settings"]
    assert plan["fine_tuning"] is not None
