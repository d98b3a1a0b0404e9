"""The reference's `tasks` keys in flair-train: `train: False` is refused, `predict` says what to run next."""

from pathlib import Path

import pytest

from trainer.config import ConfigError
from trainer.train import main, next_step_message
from trainer.train_config import load_train_config

REPO = Path(__file__).resolve().parents[2]
FLAIR_HUB = REPO / "configs" / "flair-hub"


def test_train_false_is_refused_with_what_to_use_instead(capsys):
    with pytest.raises(ConfigError, match=r"tasks\.train: False: flair-train only trains; predict with flair-infer"):
        load_train_config([FLAIR_HUB], ["tasks.train=false"])
    assert main(["--config", str(FLAIR_HUB), "--set", "tasks.train=false"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("flair-train: error: tasks.train: False") and "--metrics-only" in err


def test_predict_prints_the_flair_infer_command(tmp_path):
    cfg = load_train_config([FLAIR_HUB], [f"data.source={tmp_path / 'shards'}"])
    msg = next_step_message(cfg, tmp_path / "run" / "checkpoints", tmp_path / "run")
    assert msg.startswith("tasks.predict: predict the test split with: flair-infer --checkpoint ")
    assert f"{tmp_path / 'run' / 'checkpoints' / 'best_model.safetensors'} --data {tmp_path / 'shards'} --split test" in msg
