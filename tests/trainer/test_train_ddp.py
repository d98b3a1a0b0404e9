"""`accelerate launch` with 2 CPU processes (gloo): it runs, ranks see disjoint data, equal steps."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_cpu_processes_split_the_data(toy_shards, tmp_path):
    over = {
        "paths": {"out_folder": str(tmp_path), "out_model_name": "ddp"},
        "hyperparams": {"num_epochs": 1, "batch_size": 1, "learning_rate": 0.001},
        "hardware": {"accelerator": "cpu", "num_workers": 0},
        "data": {"source": str(toy_shards.out), "decode_threads": 1},
        "saving": {"enable_progress_bar": False},
        "modalities": {"inputs": {"AERIAL_RGBI": False, "SPOT_RGBI": True}},
        "models": {"monotemp_model": {"arch": "resnet18-unet"}},
        "train": {"log_samples": True, "tensorboard": False, "report": False},
    }
    (tmp_path / "over.yaml").write_text(yaml.safe_dump(over))
    # `accelerate` as a module: its console script is not in a venv that reuses another's packages.
    cmd = [sys.executable, "-m", "accelerate.commands.accelerate_cli", "launch", "--multi_gpu",
           "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
           str(REPO / "trainer" / "train.py"), "--config", str(REPO / "configs" / "flair-hub"), str(tmp_path / "over.yaml")]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "on 2 rank(s)" in proc.stdout

    seen = {}
    for rank in (0, 1):
        rows = [line.split() for line in (tmp_path / "ddp" / "samples" / f"rank{rank}.txt").read_text().splitlines()]
        seen[rank] = rows
    assert len(seen[0]) == len(seen[1]) == 3  # 5 samples on 2 ranks, batch 1: 3 steps each (one padded)
    valid = {r: {pid for _, _, pid, ok in rows if ok == "1"} for r, rows in seen.items()}
    assert not valid[0] & valid[1]
    assert len(valid[0] | valid[1]) == 5  # every train sample exactly once
    steps = [line for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines() if '"kind": "step"' in line]
    assert len(steps) == 3
    assert (tmp_path / "ddp" / "checkpoints" / "last.ckpt").is_file()
