"""The config layer: our YAMLs (the reference's keys and defaults) load, and bad values name their key."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from trainer.config import ConfigError, load_config, output_channels, read_yaml_files, selected_channels, validate_config

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "flair-hub"
OUR_FILES = ["config_task.yaml", "config_modalities.yaml", "config_supervision.yaml"]
MODELS = {"models": {"monotemp_model": {"arch": "swin_base_patch4_window12_384-upernet",
                                        "new_channels_init_mode": "random"},
                     "multitemp_model": {"ref_date": "05-15", "encoder_widths": [64, 64, 64, 128],
                                         "decoder_widths": [32, 32, 64, 128], "out_conv": [32, 19],
                                         "str_conv_k": 3, "str_conv_s": 1, "str_conv_p": 1, "agg_mode": "att_group",
                                         "encoder_norm": "group", "n_head": 16, "d_model": 256, "d_k": 4,
                                         "pad_value": 0, "padding_mode": "reflect"}}}
"""The reference's config_models.yaml content (as a mapping), so these tests do not depend on ours."""


@pytest.fixture
def base() -> dict:
    cfg = read_yaml_files([CONFIG_DIR / f for f in OUR_FILES])
    cfg.update(copy.deepcopy(MODELS))
    return cfg


def test_our_files_load_with_reference_defaults(base, tmp_path):
    cfg = validate_config(base)
    mods = cfg["modalities"]
    assert mods["inputs"]["AERIAL_RGBI"] is True and not mods["inputs"]["DEM_ELEV"]
    assert mods["inputs_channels"]["AERIAL_RGBI"] == [4, 1, 2]
    assert mods["normalization"]["norm_type"] == "custom"
    assert mods["pre_processings"]["filter_sentinel2_max_frac_cover"] == 0.05
    assert cfg["hyperparams"]["batch_size"] == 5 and cfg["hyperparams"]["seed"] == 2025
    assert cfg["labels"] == ["AERIAL_LABEL-COSIA"]
    assert len(cfg["labels_configs"]["ALL_LABEL-LPIS"]["value_name"]) == 23
    assert cfg["data"]["uneven"] == "pad" and cfg["data"]["select"]["domains"] == []
    # a directory with the four files, as the reference takes it
    for f in OUR_FILES:
        (tmp_path / f).write_text((CONFIG_DIR / f).read_text())
    (tmp_path / "config_models.yaml").write_text(yaml.safe_dump(MODELS))
    assert load_config(tmp_path)["models"]["multitemp_model"]["ref_date"] == "05-15"


def test_the_repository_config_dir_loads():
    """configs/flair-hub as shipped (with its config_models.yaml) is valid."""
    cfg = load_config(CONFIG_DIR)
    assert set(cfg) >= {"paths", "tasks", "hyperparams", "hardware", "saving", "modalities", "models", "labels",
                        "labels_configs", "data"}


def test_reference_files_without_data_section_are_accepted(base):
    base.pop("data")
    cfg = validate_config(base)
    assert cfg["data"]["source"] is None and cfg["data"]["shuffle_window"] == 512
    with pytest.raises(ConfigError, match=r"^data\.source: missing"):
        validate_config(base, require_data=True)


def set_key(cfg: dict, dotted: str, value) -> dict:
    cfg = copy.deepcopy(cfg)
    node = cfg
    *parents, last = dotted.split(".")
    for p in parents:
        node = node[p]
    node[last] = value
    return cfg


@pytest.mark.parametrize("dotted,value,message", [
    ("modalities.inputs.AERIAL_RGBI", "yes", r"modalities\.inputs\.AERIAL_RGBI: expected True or False"),
    ("modalities.inputs.AERIAL_RGB", True, r"modalities\.inputs\.AERIAL_RGB: unknown key"),
    ("modalities.inputs_channels.AERIAL_RGBI", [4, 1, 5], r"modalities\.inputs_channels\.AERIAL_RGBI\[2\]: channel 5"),
    ("modalities.inputs_channels.AERIAL_RGBI", [0, 1], r"modalities\.inputs_channels\.AERIAL_RGBI\[0\]"),
    ("modalities.normalization.norm_type", "zscore", r"modalities\.normalization\.norm_type: expected one of"),
    ("modalities.normalization.AERIAL_RGBI_means", [1.0, 2.0], r"modalities\.normalization\.AERIAL_RGBI_means: 2 means but 3 stds"),
    ("modalities.normalization.AERIAL_RGBI_stds", [1.0, 0.0, 2.0], r"AERIAL_RGBI_stds: a standard deviation is 0"),
    ("modalities.pre_processings.temporal_average_sentinel2", "weekly", r"pre_processings\.temporal_average_sentinel2"),
    ("modalities.pre_processings.filter_sentinel2_max_frac_cover", 5, r"filter_sentinel2_max_frac_cover: expected a number in \[0, 1\]"),
    ("modalities.pre_processings.use_augmentation", 1, r"use_augmentation: expected True or False"),
    ("models.multitemp_model.ref_date", "5-15", r"models\.multitemp_model\.ref_date: expected a 'MM-DD'"),
    ("models.multitemp_model.ref_date", "02-30", r"ref_date: expected a valid month-day"),
    ("hyperparams.batch_size", 0, r"hyperparams\.batch_size: expected an integer"),
    ("hyperparams.optimizer", "lion", r"hyperparams\.optimizer: expected one of"),
    ("labels", ["AERIAL_LABEL-COSIA", "LABEL-X"], r"labels\[1\]: expected one of"),
    ("labels_configs.ALL_LABEL-LPIS.label_channel_nomenclature", 4, r"label_channel_nomenclature: 4 > 3 bands"),
    ("labels_configs.AERIAL_LABEL-COSIA.value_name", {0: "a", 2: "b"}, r"value_name: class indices must be 0\.\.1"),
    ("data.uneven", "repeat", r"data\.uneven: expected one of"),
    ("data.select.min_class_share", {"AERIAL_LABEL-COSIA": {3: 1.5}}, r"data\.select\.min_class_share\.AERIAL_LABEL-COSIA\.3"),
    ("data.shuffle_windw", 3, r"data\.shuffle_windw: unknown key"),
    ("modalities.inputs_channels.AERIAL_RGBI", None, r"inputs_channels\.AERIAL_RGBI: required when AERIAL_RGBI is enabled"),
])
def test_errors_name_the_key(base, dotted, value, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(set_key(base, dotted, value))


def test_lpis_level_and_class_count_must_agree(base):
    cfg = set_key(base, "labels", ["ALL_LABEL-LPIS"])
    cfg = set_key(cfg, "labels_configs.ALL_LABEL-LPIS.label_channel_nomenclature", 2)
    validate_config(cfg)  # 23 names fit level 2's 31 classes
    cfg = set_key(cfg, "labels_configs.ALL_LABEL-LPIS.value_name", {i: str(i) for i in range(40)})
    with pytest.raises(ConfigError, match="40 classes but LPIS band 2 has 31"):
        validate_config(cfg)


def test_missing_sections_and_keys(base):
    with pytest.raises(ConfigError, match=r"^modalities: missing section"):
        validate_config({k: v for k, v in base.items() if k != "modalities"})
    cfg = copy.deepcopy(base)
    del cfg["modalities"]["pre_processings"]["calc_elevation"]
    with pytest.raises(ConfigError, match=r"modalities\.pre_processings\.calc_elevation: missing required key"):
        validate_config(cfg)
    cfg = set_key(base, "modalities.inputs", {m: False for m in base["modalities"]["inputs"]})
    with pytest.raises(ConfigError, match="no input modality is enabled"):
        validate_config(cfg)


def test_custom_norm_needs_stats_for_every_channel(base):
    cfg = set_key(base, "modalities.inputs.SPOT_RGBI", True)
    cfg = set_key(cfg, "modalities.normalization.SPOT_RGBI_means", [1.0, 2.0])
    cfg = set_key(cfg, "modalities.normalization.SPOT_RGBI_stds", [1.0, 2.0])
    with pytest.raises(ConfigError, match=r"SPOT_RGBI_means: 2 values for 3 channels"):
        validate_config(cfg)


def test_duplicate_section_across_files_is_an_error(tmp_path):
    (tmp_path / "a.yaml").write_text("hyperparams: {batch_size: 2, seed: 1}\n")
    (tmp_path / "b.yaml").write_text("hyperparams: {batch_size: 3, seed: 1}\n")
    with pytest.raises(ConfigError, match=r"hyperparams: defined in both .*a\.yaml and .*b\.yaml"):
        read_yaml_files(tmp_path)
    (tmp_path / "c.yaml").write_text("- a list\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: top level must be a mapping"):
        read_yaml_files([tmp_path / "c.yaml"])
    with pytest.raises(ConfigError, match="no such config"):
        read_yaml_files([tmp_path / "missing.yaml"])


def test_derived_channel_counts(base):
    cfg = set_key(base, "modalities.inputs.DEM_ELEV", True)
    cfg = validate_config(cfg)
    assert output_channels(cfg, "AERIAL_RGBI") == 3 and selected_channels(cfg, "DEM_ELEV") is None
    assert output_channels(cfg, "DEM_ELEV") == 2
    cfg["modalities"]["pre_processings"]["calc_elevation_stack_dsm"] = False
    assert output_channels(cfg, "DEM_ELEV") == 1
    assert output_channels(cfg, "AERIAL-RLT_PAN") == 1
