"""The zonal config: the reference's keys accepted, every bad value named by its key."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from inference.zonal_config import load_zonal_config, to_model_config, validate_zonal_config
from trainer.config import ConfigError

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "configs" / "zonal.yaml"


def _raw() -> dict:
    return yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))


def test_shipped_config_loads_and_resolves_paths_against_its_folder() -> None:
    cfg = load_zonal_config(SHIPPED, check_files=False)
    assert cfg["modalities"]["AERIAL_RGBI"]["input_img_path"] == str((REPO / "area" / "AERIAL_RGBI.tif").resolve())
    assert cfg["output_type"] == "argmax" and cfg["cog_conversion"] is True
    assert [t["name"] for t in cfg["tasks"] if t["active"]] == ["AERIAL_LABEL-COSIA"]
    mcfg = to_model_config(cfg)
    assert mcfg["labels"] == ["AERIAL_LABEL-COSIA"]
    assert mcfg["modalities"]["inputs"]["AERIAL_RGBI"] is True
    assert mcfg["modalities"]["inputs_channels"]["AERIAL_RGBI"] == [4, 1, 2]
    assert mcfg["models"]["multitemp_model"]["ref_date"] == "05-15"


def test_reference_only_keys_and_defaults() -> None:
    raw = {k: v for k, v in _raw().items() if k not in ("compression", "resume", "keep_tiles", "model_config")}
    cfg = validate_zonal_config(raw, base_dir=REPO, check_files=False)
    assert cfg["compression"] == "lzw" and cfg["resume"] is True and cfg["batch_size"] == 1


@pytest.mark.parametrize(
    "mutate,key",
    [
        (lambda c: c.pop("margin"), "margin"),
        (lambda c: c.update(margni=3), "margni"),
        (lambda c: c.update(margin=1024), "margin"),
        (lambda c: c.update(output_type="probs"), "output_type"),
        (lambda c: c.update(batch_size=0), "batch_size"),
        (lambda c: c.update(multitemp_model_ref_date="5-15"), "multitemp_model_ref_date"),
        (lambda c: c["modalities"]["AERIAL_RGBI"].update(channels=[5]), "modalities.AERIAL_RGBI.channels[0]"),
        (lambda c: c["modalities"]["AERIAL_RGBI"].update(chanels=[1]), "modalities.AERIAL_RGBI.chanels"),
        (lambda c: c["modalities"]["AERIAL_RGBI"]["normalization"].update(means=[1.0]),
         "modalities.AERIAL_RGBI.normalization.means"),
        (lambda c: c["modalities"]["inputs"].update(AERIAL_RGBI=False), "modalities.inputs"),
        (lambda c: c["modalities"]["inputs"].update(SENTINEL2_TS=True) or c["modalities"]["SENTINEL2_TS"].pop("dates_txt"),
         "modalities.SENTINEL2_TS.dates_txt"),
        (lambda c: c["modalities"]["inputs"].update(SENTINEL2_TS=True)
         or c["modalities"]["SENTINEL2_TS"].update(filter_clouds_img_path=None), "modalities.SENTINEL2_TS.filter_clouds_img_path"),
        (lambda c: c["tasks"][0].update(class_names={0: "a", 2: "b"}), "tasks[0].class_names"),
        (lambda c: c["tasks"][0].update(name="COSIA"), "tasks[0].name"),
        (lambda c: c.update(output_name="a/b"), "output_name"),
    ],
)
def test_bad_values_are_named(mutate, key: str) -> None:
    raw = _raw()
    mutate(raw)
    with pytest.raises(ConfigError) as info:
        validate_zonal_config(raw, base_dir=REPO, check_files=False)
    assert str(info.value).startswith(key), str(info.value)


def test_missing_files_are_named(tmp_path: Path) -> None:
    raw = _raw()
    raw["model_weights"] = str(tmp_path / "w.safetensors")
    (tmp_path / "w.safetensors").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"^modalities\.AERIAL_RGBI\.input_img_path: file not found"):
        validate_zonal_config(copy.deepcopy(raw), base_dir=tmp_path)
    raw["modalities"]["AERIAL_RGBI"]["input_img_path"] = str(tmp_path / "w.safetensors")
    raw["model_weights"] = str(tmp_path / "nope.ckpt")
    with pytest.raises(ConfigError, match=r"^model_weights: file not found"):
        validate_zonal_config(raw, base_dir=tmp_path)


def test_dates_file_rejects_impossible_dates(tmp_path):
    from inference.zonal_reader import ZonalInputError, read_dates_file

    good = tmp_path / "good.txt"
    good.write_text("20210114\n\n20210228\n")
    assert read_dates_file(good, "SENTINEL2_TS.dates_txt") == ["20210114", "20210228"]
    bad = tmp_path / "bad.txt"
    bad.write_text("20210114\n20210230\n")
    with pytest.raises(ZonalInputError, match=r"line 2: not a valid date: '20210230'"):
        read_dates_file(bad, "SENTINEL2_TS.dates_txt")
