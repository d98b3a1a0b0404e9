"""Training config: layering, overrides, the `train:` section and errors that name the key."""

from pathlib import Path

import pytest
import yaml

from packer.schema import MONO_TEMPORAL_INPUTS, TIME_SERIES_INPUTS
from trainer.config import ConfigError
from trainer.train_config import apply_overrides, load_train_config, read_config_layers

REPO = Path(__file__).resolve().parents[2]
FLAIR_HUB = REPO / "configs" / "flair-hub"
SEED = REPO / "configs" / "seed"


def _overlay(tmp_path, doc, name="over.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(doc))
    return p


def test_full_config_loads_with_train_defaults():
    cfg = load_train_config([FLAIR_HUB])
    assert cfg["train"]["mixed_precision"] == "no" and cfg["train"]["gradient_accumulation_steps"] == 1
    assert cfg["hyperparams"]["scheduler"] == "one_cycle_lr" and cfg["saving"]["ckpt_monitor"] == "val_miou"


def test_layers_deep_merge_and_set_overrides(tmp_path):
    over = _overlay(tmp_path, {"hyperparams": {"batch_size": 3}, "train": {"mixed_precision": "bf16"}})
    cfg = load_train_config([FLAIR_HUB, over], ["hyperparams.num_epochs=4", "train.val_every_n_steps=10",
                                                 "labels_configs.AERIAL_LABEL-COSIA.value_weights.default_exceptions.3=0"])
    assert cfg["hyperparams"]["batch_size"] == 3 and cfg["hyperparams"]["learning_rate"] == 5e-5  # others kept
    assert cfg["hyperparams"]["num_epochs"] == 4 and cfg["train"]["val_every_n_steps"] == 10
    assert cfg["train"]["mixed_precision"] == "bf16"
    assert cfg["labels_configs"]["AERIAL_LABEL-COSIA"]["value_weights"]["default_exceptions"] == {15: 0, 16: 0, 17: 0, 18: 0, 3: 0}


@pytest.mark.parametrize("overrides,key", [
    (["train.mixed_precison=bf16"], "train.mixed_precison"),          # typo in our section
    (["train.gradient_accumulation_steps=0"], "train.gradient_accumulation_steps"),
    (["hyperparams.optimizer=lamb"], "hyperparams.optimizer"),
    (["saving.ckpt_monitor=val_acc"], "saving.ckpt_monitor"),
    (["hyperparams.learning_rate=fast"], "hyperparams.learning_rate"),
    (["data.source=null"], "data.source"),
    (["tasks.train_tasks.resume_training_from_ckpt=true"], "paths.ckpt_model_path"),
    (["train.find_unused_parameters=maybe"], "train.find_unused_parameters"),
])
def test_bad_values_name_their_key(overrides, key):
    with pytest.raises(ConfigError) as err:
        load_train_config([FLAIR_HUB], overrides)
    assert str(err.value).startswith(key), str(err.value)


def test_set_syntax_errors_are_clear():
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        apply_overrides({}, ["hyperparams.num_epochs"])
    with pytest.raises(ConfigError, match="not a section"):
        apply_overrides({"hyperparams": {"seed": 1}}, ["hyperparams.seed.x=2"])


def test_extends_resolves_relative_to_the_overlay_and_detects_loops(tmp_path):
    a = _overlay(tmp_path, {"extends": str(FLAIR_HUB), "hyperparams": {"seed": 7}}, "a.yaml")
    assert load_train_config([a])["hyperparams"]["seed"] == 7
    _overlay(tmp_path, {"extends": "c.yaml"}, "b.yaml")
    _overlay(tmp_path, {"extends": "b.yaml"}, "c.yaml")
    with pytest.raises(ConfigError, match="loops"):
        read_config_layers([tmp_path / "b.yaml"])
    with pytest.raises(ConfigError, match="no such config"):
        read_config_layers([tmp_path / "missing.yaml"])


SEED_TABLE = {  # id -> ticked columns of the results table (seed README)
    "LC-A": "aerial", "LC-B": "aerial elev", "LC-C": "aerial elev spot", "LC-D": "aerial s2", "LC-E": "aerial s1",
    "LC-F": "aerial s2 s1", "LC-G": "s2", "LC-H": "s1", "LC-I": "spot", "LC-J": "elev", "LC-K": "aerial hist",
    "LC-L": "aerial elev spot s2 s1", "LC-ALL": "aerial elev spot s2 s1 hist",
    "LPIS-A": "aerial", "LPIS-B": "aerial spot", "LPIS-C": "aerial s2", "LPIS-D": "aerial s2 s1",
    "LPIS-E": "aerial spot s2", "LPIS-F": "s2", "LPIS-G": "s1", "LPIS-H": "s2 s1", "LPIS-I": "spot s2 s1",
    "LPIS-J": "aerial spot s2 s1", "LPIS-K": "spot",
}
COLUMNS = {"aerial": ["AERIAL_RGBI"], "elev": ["DEM_ELEV"], "spot": ["SPOT_RGBI"], "s2": ["SENTINEL2_TS"],
           "s1": ["SENTINEL1-ASC_TS", "SENTINEL1-DESC_TS"], "hist": ["AERIAL-RLT_PAN"]}


def test_the_24_seed_overlays_match_the_results_table():
    files = sorted(SEED.glob("*.yaml"))
    assert sorted(p.stem for p in files) == sorted(SEED_TABLE)
    for p in files:
        cfg = load_train_config([p])
        want = {m for c in SEED_TABLE[p.stem].split() for m in COLUMNS[c]}
        on = {m for m in (*MONO_TEMPORAL_INPUTS, *TIME_SERIES_INPUTS) if cfg["modalities"]["inputs"][m]}
        assert on == want, p.stem
        aux = {m for m, v in cfg["modalities"]["aux_loss"].items() if v}
        assert aux == (want if len(want) > 1 else set()), p.stem
        assert cfg["labels"] == (["AERIAL_LABEL-COSIA"] if p.stem.startswith("LC") else ["ALL_LABEL-LPIS"])
        assert cfg["paths"]["out_model_name"] == p.stem
        assert cfg["hyperparams"]["batch_size"] == 5  # everything else is the reference default


def test_demo_config_is_small_and_on_cpu():
    cfg = load_train_config([REPO / "configs" / "demo"])
    assert cfg["hardware"]["accelerator"] == "cpu"
    assert cfg["models"]["monotemp_model"]["arch"].startswith("resnet18-")
    assert cfg["hyperparams"]["num_epochs"] <= 3
