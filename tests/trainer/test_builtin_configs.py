"""Shipped configs by name (`--config LC-A`), and `load_config` on the seed overlays (`extends:`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from trainer.builtin_configs import CONFIG_ROOT, builtin_config, builtin_configs
from trainer.config import ConfigError, load_config, read_config_layers, resolve_config_path

REPO = Path(__file__).resolve().parents[2]
SEED_NAMES = sorted(p.stem for p in (REPO / "configs" / "seed").glob("*.yaml"))


def test_every_shipped_config_has_a_name():
    names = builtin_configs()
    assert len(SEED_NAMES) == 24 and set(SEED_NAMES) <= set(names)
    assert {"flair-hub", "demo", "zonal"} <= set(names)
    assert builtin_config("LC-A") == CONFIG_ROOT / "seed" / "LC-A.yaml"
    # In a checkout, trainer/configs is the repository's configs/ (a link), so both are one.
    assert builtin_config("flair-hub").resolve() == (REPO / "configs" / "flair-hub").resolve()
    with pytest.raises(KeyError, match="LC-A"):
        builtin_config("LC-Z")


@pytest.mark.parametrize("name", SEED_NAMES)
def test_load_config_follows_extends_on_every_seed_overlay(name):
    """`trainer.config.load_config` as docs/loading.md shows it: the overlay alone is enough."""
    by_path = load_config(REPO / "configs" / "seed" / f"{name}.yaml")
    by_name = load_config(name)
    assert by_path == by_name
    assert by_path["paths"]["out_model_name"] == name
    assert by_path["labels"] == (["AERIAL_LABEL-COSIA"] if name.startswith("LC") else ["ALL_LABEL-LPIS"])
    assert by_path["models"]["multitemp_model"]["ref_date"] == "05-15"  # from the extended flair-hub


def test_names_resolve_only_when_no_such_path_exists(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_config_path("LC-D") == builtin_config("LC-D")
    (tmp_path / "LC-D").mkdir()  # a folder of the user's with that name wins
    assert resolve_config_path("LC-D") == Path("LC-D")
    with pytest.raises(ConfigError, match=r"LC-Q: no such config file or directory.*built-in: LC-A, LC-ALL"):
        resolve_config_path("LC-Q")


def test_an_overlay_may_extend_a_builtin_name(tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text(yaml.safe_dump({"extends": "LC-D", "hyperparams": {"num_epochs": 3}}))
    cfg = load_config(mine)
    assert cfg["hyperparams"]["num_epochs"] == 3
    assert cfg["modalities"]["inputs"]["SENTINEL2_TS"] is True  # from LC-D


def test_load_config_layers_several_paths_and_ignores_the_train_section(tmp_path):
    over = tmp_path / "over.yaml"
    over.write_text(yaml.safe_dump({"hyperparams": {"batch_size": 3}, "train": {"mixed_precision": "bf16"}}))
    cfg = load_config(["LC-A", over])
    assert cfg["hyperparams"]["batch_size"] == 3 and "train" not in cfg
    assert read_config_layers("demo")["models"]["monotemp_model"]["arch"] == "resnet18-unet"


def test_inference_defaults_point_at_the_shipped_configs():
    from inference.predict import DEFAULT_CONFIG_DIR

    assert DEFAULT_CONFIG_DIR == builtin_config("flair-hub")
    assert (DEFAULT_CONFIG_DIR / "config_modalities.yaml").is_file()


def test_zonal_model_config_takes_a_builtin_name(tmp_path):
    from inference.zonal_config import load_zonal_config

    raw = yaml.safe_load(builtin_config("zonal").read_text())
    raw["model_config"] = "LC-A"
    path = tmp_path / "zonal.yaml"
    path.write_text(yaml.safe_dump(raw))
    cfg = load_zonal_config(path, check_files=False)
    assert Path(cfg["model_config"]) == builtin_config("LC-A")
    # The shipped template, read as a built-in, resolves its relative paths from the given folder.
    cfg = load_zonal_config(builtin_config("zonal"), check_files=False, base_dir=tmp_path)
    assert Path(cfg["output_path"]) == (tmp_path / "../zonal_out").resolve()
