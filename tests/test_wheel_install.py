"""Installed, not only cloned: the wheel, installed into a fresh virtual environment, works from a
folder outside the repository.

The wheel is built from this checkout without build isolation (nothing is downloaded) and
installed with `--no-deps`; the fresh environment sees the heavy dependencies (torch, rasterio...)
of the running one through a `.pth` file listing its site-packages folders, whose own `.pth`
files (the editable install of this checkout among them) are not processed. So every module of
the project that runs comes from the wheel, which the test checks.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def run(cmd: list[str], cwd: Path, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900, env=env)
    if check:
        assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(bin folder of a fresh venv holding the wheel, the wheel)."""
    base = tmp_path_factory.mktemp("wheel")
    # Built from a copy: setuptools builds in the source tree (build/, *.egg-info), which stays clean.
    src = base / "src"
    shutil.copytree(REPO, src, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", "demo_out", "runs"))
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", str(base / "dist"), str(src)], cwd=base)
    (wheel,) = (base / "dist").glob("flair_stream-*.whl")
    venv = base / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=base)
    python = venv / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)],
        cwd=base)
    purelib = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=base)
                   .stdout.strip())
    ours = {sysconfig.get_paths()["purelib"], *[p for p in sys.path if p.endswith("site-packages")]}
    (purelib / "zz_dependencies.pth").write_text("\n".join(sorted(ours)) + "\n")
    return venv / "bin", wheel


def test_the_wheel_carries_the_configs_and_the_api(installed):
    _, wheel = installed
    names = zipfile.ZipFile(wheel).namelist()
    yamls = [n for n in names if n.endswith(".yaml")]
    assert len([n for n in yamls if n.startswith("trainer/configs/seed/")]) == 24
    assert {"trainer/configs/zonal.yaml", "trainer/configs/demo/config_demo.yaml",
            "trainer/configs/flair-hub/config_modalities.yaml"} <= set(yamls)
    assert len([n for n in yamls if n.startswith("trainer/configs/")]) == len(list((REPO / "configs").rglob("*.yaml")))
    assert {"flair_stream/__init__.py", "packer/plot.py", "trainer/data/dataset.py"} <= set(names)
    assert not any(n.startswith("tests/") for n in names)


def test_console_scripts_work_from_outside_the_repository(installed, tmp_path):
    bin_dir, _ = installed
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    python = str(bin_dir / "python")

    # Everything imported comes from the installed wheel, and the shipped configs are found there.
    where = run([python, "-c", "import packer, trainer, inference, flair_stream; "
                 "from inference.predict import DEFAULT_CONFIG_DIR; from trainer.builtin_configs import builtin_configs; "
                 "print(packer.__file__, flair_stream.__file__, DEFAULT_CONFIG_DIR, len(builtin_configs()))"],
                cwd=tmp_path, env=env).stdout.split()
    venv = str(bin_dir.parent)
    assert all(p.startswith(venv) for p in where[:3]), where
    assert Path(where[2], "config_task.yaml").is_file() and int(where[3]) == 27

    for script in ("flair-infer", "flair-zonal"):  # the other three run for real below
        out = run([str(bin_dir / script), "--help"], cwd=tmp_path, env=env).stdout
        assert "examples:" in out, script

    run([str(bin_dir / "flair-toy"), "--out", "toy", "--patches", "6", "--domains", "2", "--rois-per-domain", "1",
         "--t-s2", "3", "4", "--t-s1", "3", "4", "--workers", "1"], cwd=tmp_path, env=env)
    run([str(bin_dir / "flair-pack"), "--src", "toy", "--out", "shards", "--workers", "1", "--no-progress"],
        cwd=tmp_path, env=env)
    assert (tmp_path / "shards" / "README.md").read_text().startswith("---\nlicense: etalab-2.0")
    pid = run([python, "-c", "import flair_stream; print(flair_stream.open_dataset('shards').patch_ids()[0])"],
              cwd=tmp_path, env=env).stdout.strip()
    run([str(bin_dir / "flair-pack"), "inspect", "shards", pid, "--plot", "patch.png"], cwd=tmp_path, env=env)
    assert (tmp_path / "patch.png").stat().st_size > 10_000

    # A built-in config by name: one epoch (one step) of the demo config on the toy shards.
    train = run([str(bin_dir / "flair-train"), "--config", "demo", "--set", "data.source=shards", "paths.out_folder=runs",
                 "hyperparams.num_epochs=1", "train.tensorboard=false", "train.report=false",
                 "saving.enable_progress_bar=false"], cwd=tmp_path, env=env)
    assert "model: 17.99 M parameters, arch resnet18-unet" in train.stdout  # the demo config's model
    assert "eval at epoch 1 step 1" in train.stdout
    assert (tmp_path / "runs" / "train" / "checkpoints" / "best_model.safetensors").is_file()
    # LC-A resolves too (the run then stops at the missing data, not at the config).
    bad = run([str(bin_dir / "flair-train"), "--config", "LC-A", "--set", "data.source=no-such-shards",
                     "models.monotemp_model.encoder_weights=null"],
              cwd=tmp_path, env=env, check=False)
    assert bad.returncode == 2 and "no-such-shards" in bad.stderr and "LC-A" not in bad.stderr
