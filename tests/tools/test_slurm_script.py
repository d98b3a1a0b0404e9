"""`tools/slurm/train.sbatch` composes each node's `accelerate launch` from SLURM's variables and
resumes a run that has a last checkpoint (the launch itself is tested in test_train_two_nodes)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tools" / "slurm" / "train.sbatch"


def node_command(tmp_path: Path, **env: str) -> list[str]:
    full = {**os.environ, "LAUNCHER": "env", "PYTHON": "printf '%s\\n'", "SLURM_NNODES": "2", "SLURM_NODEID": "1",
            "GPUS_PER_NODE": "4", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29511", "OUT": str(tmp_path / "runs"),
            "RUN": "lc all", "DATA": "s3://bucket/flair hub", **env}
    proc = subprocess.run(["bash", str(SCRIPT)], cwd=REPO, env=full, capture_output=True, text=True, check=True)
    return proc.stdout.splitlines()  # one argument per line


def test_each_node_launches_its_share(tmp_path):
    cmd = node_command(tmp_path)
    flags = dict(zip(cmd, cmd[1:]))
    assert cmd[:4] == ["-m", "accelerate.commands.accelerate_cli", "launch", "--multi_gpu"]
    assert flags["--num_machines"] == "2" and flags["--machine_rank"] == "1" and flags["--num_processes"] == "8"
    assert flags["--main_process_ip"] == "10.0.0.1" and flags["--main_process_port"] == "29511"
    assert "data.source=s3://bucket/flair hub" in cmd and "paths.out_model_name=lc all" in cmd
    assert not any(a.startswith("tasks.train_tasks.resume") for a in cmd)


def test_a_run_with_a_checkpoint_resumes(tmp_path):
    last = tmp_path / "runs" / "lc all" / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    last.write_bytes(b"")
    cmd = node_command(tmp_path)
    assert "tasks.train_tasks.resume_training_from_ckpt=true" in cmd
    assert f"paths.ckpt_model_path={last}" in cmd
