"""flair-zonal against the checkpoint's training config; worker cap, logged summary, lock file removed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import yaml
from rasterio.transform import from_origin

from inference import zonal as zonal_mod
from inference.cli import zonal_main
from inference.standin import CopyBandModel
from inference.zonal import run_zonal, sample_spec
from inference.zonal_config import validate_zonal_config
from packer.schema import CLASS_TABLES
from trainer.config import ConfigError
from trainer.model import build_model, save_model
from trainer.train_config import dump_config, read_config_layers

REPO = Path(__file__).resolve().parents[2]
COSIA = "AERIAL_LABEL-COSIA"
NAMES = {c.value: c.name for c in CLASS_TABLES[COSIA]}
MEANS = [101.0, 102.0, 103.0]
STDS = [41.0, 42.0, 43.0]

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def _training_config() -> dict[str, Any]:
    cfg = read_config_layers([REPO / "configs" / "flair-hub"])
    cfg["labels"] = [COSIA]
    cfg["modalities"]["inputs"] = {m: m in ("AERIAL_RGBI", "SENTINEL2_TS") for m in cfg["modalities"]["inputs"]}
    cfg["modalities"]["aux_loss"] = {m: False for m in cfg["modalities"]["aux_loss"]}
    cfg["modalities"]["normalization"]["AERIAL_RGBI_means"] = MEANS
    cfg["modalities"]["normalization"]["AERIAL_RGBI_stds"] = STDS
    cfg["modalities"]["pre_processings"].update(filter_sentinel2=False, temporal_average_sentinel2="monthly")
    cfg["models"]["monotemp_model"].update(arch="resnet18-fpn", encoder_weights=None)
    return cfg


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """Our checkpoint as flair-train writes it: weights + model config + the whole training config."""
    cfg = _training_config()
    model = build_model(cfg, input_sizes={"AERIAL_RGBI": 64})
    weights, _ = save_model(model, tmp_path_factory.mktemp("ckpt") / "best_model", train_config_yaml=dump_config(cfg))
    return weights


def _write(path: Path, arr: np.ndarray, res: float) -> str:
    with rasterio.open(path, "w", driver="GTiff", width=arr.shape[2], height=arr.shape[1], count=arr.shape[0],
                       dtype=arr.dtype, crs="EPSG:2154", transform=from_origin(700_000.0, 6_600_000.0, res, res)) as dst:
        dst.write(arr)
    return str(path)


def _raw(tmp_path: Path, weights: Path, aerial: dict[str, Any] | None = None, **over: Any) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    a = _write(tmp_path / "aerial.tif", rng.integers(0, 255, (4, 256, 256), dtype=np.uint8), 0.2)
    s2 = _write(tmp_path / "s2.tif", rng.integers(0, 3000, (30, 5, 5), dtype=np.uint16), 10.24)
    (tmp_path / "dates.txt").write_text("20210110\n20210301\n20210720\n")
    raw = dict(output_path=str(tmp_path / "out"), output_name="area", model_weights=str(weights),
               img_pixels_detection=64, margin=16, output_px_meters=0.2,
               modalities={"inputs": {"AERIAL_RGBI": True, "SENTINEL2_TS": True},
                           "AERIAL_RGBI": {"input_img_path": a, **(aerial or {})},
                           "SENTINEL2_TS": {"input_img_path": s2, "dates_txt": "dates.txt"}},
               tasks=[{"name": COSIA, "active": True, "class_names": dict(NAMES)}])
    raw.update(over)
    return raw


def test_missing_keys_take_the_training_preprocessing(tmp_path, checkpoint) -> None:
    cfg = validate_zonal_config(_raw(tmp_path, checkpoint), base_dir=tmp_path)
    aerial, s2 = cfg["modalities"]["AERIAL_RGBI"], cfg["modalities"]["SENTINEL2_TS"]
    assert aerial["channels"] == [4, 1, 2]
    assert aerial["normalization"] == {"type": "custom", "means": MEANS, "stds": STDS}
    assert s2["temporal_average"] is True and s2["average_period"] == "monthly"
    assert cfg["monotemp_arch"] == "resnet18-fpn"
    spec, norm_types = sample_spec(cfg)
    assert spec.means["AERIAL_RGBI"] == tuple(MEANS) and norm_types["AERIAL_RGBI"] == "custom"
    assert spec.average["SENTINEL2_TS"] == "monthly"


@pytest.mark.parametrize("aerial, over, key, ours, theirs", [
    ({"channels": [1, 2, 3]}, {}, "modalities.AERIAL_RGBI.channels", "[1, 2, 3]", "[4, 1, 2]"),
    ({"normalization": {"type": "scaling"}}, {}, "modalities.AERIAL_RGBI.normalization", "'scaling'", "'custom'"),
    ({}, {"monotemp_arch": "swin_base_patch4_window12_384-upernet"}, "monotemp_arch",
     "'swin_base_patch4_window12_384-upernet'", "'resnet18-fpn'"),
    ({}, {"multitemp_model_ref_date": "01-01"}, "multitemp_model_ref_date", "'01-01'", "'05-15'"),
])
def test_a_contradicting_key_is_refused_with_both_values(tmp_path, checkpoint, aerial, over, key, ours, theirs) -> None:
    with pytest.raises(ConfigError) as info:
        validate_zonal_config(_raw(tmp_path, checkpoint, aerial, **over), base_dir=tmp_path)
    msg = str(info.value)
    assert msg.startswith(f"{key}: ") and ours in msg and theirs in msg and "\n" not in msg


def test_series_settings_are_checked_too(tmp_path, checkpoint) -> None:
    raw = _raw(tmp_path, checkpoint)
    raw["modalities"]["SENTINEL2_TS"]["temporal_average"] = False
    with pytest.raises(ConfigError, match=r"modalities\.SENTINEL2_TS\.temporal_average: False .* 'monthly'"):
        validate_zonal_config(raw, base_dir=tmp_path)
    renamed = _raw(tmp_path, checkpoint)
    renamed["tasks"][0]["class_names"][0] = "bâtiment"
    with pytest.raises(ConfigError, match=r"tasks\[0\]\.class_names: 0: 'bâtiment' .* 0: 'building'"):
        validate_zonal_config(renamed, base_dir=tmp_path)


def test_listed_overrides_keep_the_users_values_but_not_for_the_architecture(tmp_path, checkpoint) -> None:
    raw = _raw(tmp_path, checkpoint, {"channels": [1, 2, 3]}, checkpoint_overrides=["modalities.AERIAL_RGBI.channels"])
    cfg = validate_zonal_config(raw, base_dir=tmp_path)
    assert cfg["modalities"]["AERIAL_RGBI"]["channels"] == [1, 2, 3]
    bad = _raw(tmp_path, checkpoint, monotemp_arch="resnet34-fpn", checkpoint_overrides=["monotemp_arch"])
    with pytest.raises(ConfigError, match="checkpoint_overrides: monotemp_arch cannot be overridden"):
        validate_zonal_config(bad, base_dir=tmp_path)
    typo = _raw(tmp_path, checkpoint, checkpoint_overrides=["modalities.AERIAL_RGBI.chanels"])
    with pytest.raises(ConfigError, match="checkpoint_overrides: modalities.AERIAL_RGBI.chanels is not a key compared"):
        validate_zonal_config(typo, base_dir=tmp_path)


def test_cli_refuses_in_one_line_and_accepts_override_flag(tmp_path, checkpoint, capsys, monkeypatch) -> None:
    path = tmp_path / "zonal.yaml"
    path.write_text(yaml.safe_dump(_raw(tmp_path, checkpoint, {"channels": [1, 2, 3]})))
    assert zonal_main(["--config", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "modalities.AERIAL_RGBI.channels: [1, 2, 3]" in err[0] and "[4, 1, 2]" in err[0]
    monkeypatch.setattr(zonal_mod, "default_model_loader", lambda c, s, d: CopyBandModel("AERIAL_RGBI", 0, {COSIA: 19}))
    assert zonal_main(["--config", str(path), "--no-progress", "--override", "modalities.AERIAL_RGBI.channels"]) == 0


def test_summary_is_logged_worker_count_capped_and_lock_removed(tmp_path, checkpoint, monkeypatch, caplog) -> None:
    seen = {}
    real = zonal_mod.DataLoader

    def spy(*args, **kwargs):
        seen["num_workers"] = kwargs["num_workers"]
        return real(*args, **kwargs)

    monkeypatch.setattr(zonal_mod, "DataLoader", spy)
    monkeypatch.setattr(zonal_mod, "default_model_loader", lambda c, s, d: CopyBandModel("AERIAL_RGBI", 0, {COSIA: 19}))
    raw = _raw(tmp_path, checkpoint, img_pixels_detection=256, margin=16, num_worker=6)  # one tile
    path = tmp_path / "zonal.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert zonal_main(["--config", str(path), "--no-progress"]) == 0
    assert seen["num_workers"] == 4  # 4 tiles
    out = tmp_path / "out"
    logs = list(out.glob("area_*.log"))
    assert len(logs) == 1
    text = logs[0].read_text()
    assert "km2/h" in text and "wrote " in text and "num_worker 6 capped at 4" in text
    assert "from the checkpoint best_model.safetensors (not set in the zonal config): monotemp_arch" in text
    assert not (out / ".area.tiles.lock").exists() and not (out / "area.tiles").exists()


def test_lock_is_removed_after_a_failed_run_too(tmp_path, checkpoint) -> None:
    cfg = validate_zonal_config(_raw(tmp_path, checkpoint), base_dir=tmp_path)
    with pytest.raises(Exception):
        run_zonal(cfg, model=object(), progress=False)  # not a model: every tile fails
    out = tmp_path / "out"
    assert (out / "area.tiles").is_dir() and not (out / ".area.tiles.lock").exists()


def test_configs_without_a_known_training_config_are_not_compared(tmp_path) -> None:
    weights = tmp_path / "reference.safetensors"
    weights.write_bytes(b"stand-in")
    cfg = validate_zonal_config(_raw(tmp_path, weights, {"channels": [1, 2, 3]}), base_dir=tmp_path)
    assert cfg["modalities"]["AERIAL_RGBI"]["channels"] == [1, 2, 3]


def test_a_training_checkpoint_best_ckpt_is_reconciled_and_loaded_too(tmp_path, checkpoint) -> None:
    """flair-zonal takes flair-train's best.ckpt as it takes best_model.safetensors."""
    import torch

    from inference.zonal import default_model_loader
    from trainer.train_checkpoint import Progress, atomic_torch_save, build_checkpoint
    from trainer.model import load_model

    model = load_model(checkpoint)
    ckpt = tmp_path / "best.ckpt"
    atomic_torch_save(build_checkpoint(weights_only=True, model_state=model.state_dict(), progress=Progress(),
                                       config_yaml=dump_config(_training_config())), ckpt)
    cfg = validate_zonal_config(_raw(tmp_path, ckpt), base_dir=tmp_path)
    assert cfg["modalities"]["AERIAL_RGBI"]["normalization"]["means"] == MEANS
    loaded = default_model_loader(cfg, {"AERIAL_RGBI": 64, "SENTINEL2_TS": 2}, torch.device("cpu"))
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
