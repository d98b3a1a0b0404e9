"""flair-infer on packed toy shards: georeferencing, colours, class_prob, metrics vs a hand computation, checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import yaml

from inference.cli import infer_main
from inference.predict import InferOptions, prediction_path, run_infer
from inference.standin import CopyBandModel
from packer.pack import pack_dataset
from packer.schema import COSIA_CLASSES, PatchId
from trainer.train_config import read_config_layers

REPO = Path(__file__).resolve().parents[2]
COSIA = "AERIAL_LABEL-COSIA"
TINY_ARCH = "mobilenet_v2-fpn"


pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def shards(toy_tree, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("infer_shards") / "shards"
    pack_dataset(toy_tree.root, out, workers=1, progress=False)
    return out


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    """The shipped FLAIR-HUB defaults with a tiny encoder (no pretrained weights)."""
    raw = read_config_layers([REPO / "configs" / "flair-hub"])
    raw["models"]["monotemp_model"] = {"arch": TINY_ARCH, "new_channels_init_mode": "random"}
    path = tmp_path_factory.mktemp("infer_cfg") / "config.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def copy_model() -> CopyBandModel:
    # Band 0 of the normalised NIR-R-G input, rounded: a deterministic, non-trivial class map.
    return CopyBandModel("AERIAL_RGBI", 0, {COSIA: 19})


@pytest.fixture(scope="module")
def argmax_run(shards, config_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("infer_out")
    torch.set_num_threads(1)
    res = run_infer(InferOptions(checkpoint="stand-in", data=str(shards), out=str(out), config=[str(config_file)],
                                 device="cpu", batch_size=4, progress=False), model=copy_model())
    return out, res


def test_outputs_have_the_label_georeferencing_and_colours(argmax_run, toy_tree) -> None:
    out, res = argmax_run
    test_ids = [p for p, s in toy_tree.result.splits.items() if s == "test"]
    assert res.n_patches == res.files == len(test_ids) > 0
    for pid in test_ids:
        label = toy_tree.root / PatchId.parse(pid).relative_path(COSIA)
        pred = prediction_path(out, COSIA, pid, "argmax")
        assert pred.name == f"PRED_{label.name}"
        with rasterio.open(label) as lab, rasterio.open(pred) as prd:
            assert prd.crs == lab.crs
            assert prd.transform == lab.transform
            assert (prd.width, prd.height, prd.count, prd.dtypes[0]) == (lab.width, lab.height, 1, "uint8")
            assert prd.compression.name.lower() == "lzw"
            assert prd.colormap(1)[6][:3] == COSIA_CLASSES[6].rgb
            assert prd.tags()["CLASS_12"] == "deciduous"
        assert pred.with_suffix(".qml").is_file()


def test_metrics_match_a_hand_computation(argmax_run, toy_tree) -> None:
    out, res = argmax_run
    cm = np.zeros((19, 19), dtype=np.int64)
    for pid, split in toy_tree.result.splits.items():
        if split != "test":
            continue
        with rasterio.open(toy_tree.root / PatchId.parse(pid).relative_path(COSIA)) as src:
            truth = src.read(1).astype(np.int64)
        with rasterio.open(prediction_path(out, COSIA, pid, "argmax")) as src:
            pred = src.read(1).astype(np.int64)
        cm += np.bincount(truth.ravel() * 19 + pred.ravel(), minlength=19 * 19).reshape(19, 19)
    np.testing.assert_array_equal(res.confmats[COSIA], cm)
    # Classes 15-18 have weight 0 in the FLAIR-HUB config: left out of mIoU and OA.
    sub = cm[:15, :15].astype(float)
    tp = np.diag(sub)
    den = sub.sum(0) + sub.sum(1) - tp
    iou = np.where(den > 0, tp / np.maximum(den, 1), 0.0)
    m = res.metrics[COSIA]
    assert m["miou"] == pytest.approx(iou.mean())
    assert m["oa"] == pytest.approx(tp.sum() / sub.sum())
    assert [c["iou"] for c in m["per_class"][:15]] == pytest.approx(list(iou))
    assert 0 < m["oa"] < 1, "the stand-in is neither always right nor always wrong"
    files = {p.name for p in (out / "metrics").iterdir()}
    assert {f"{COSIA}_confusion.csv", f"{COSIA}_per_class.csv", f"{COSIA}_metrics.json", f"{COSIA}_confusion.png",
            f"{COSIA}_iou.png", "summary.json"} <= files
    summary = json.loads((out / "metrics" / "summary.json").read_text())
    assert summary[COSIA]["miou"] == pytest.approx(iou.mean())
    rows = (out / "metrics" / f"{COSIA}_confusion.csv").read_text().splitlines()
    assert [int(v) for v in rows[1].split(",")[1:]] == cm[0].tolist()


def test_class_prob_output_sums_and_agrees_with_argmax(argmax_run, shards, config_file, tmp_path) -> None:
    out_argmax, _ = argmax_run
    # No --device: the Accelerate path (what `accelerate launch flair-infer ...` uses), here one CPU process.
    res = run_infer(InferOptions(checkpoint="stand-in", data=str(shards), out=str(tmp_path), config=[str(config_file)],
                                 output="class_prob", limit=2, progress=False), model=copy_model())
    assert res.files == 2
    for path in (tmp_path / "predictions" / COSIA).glob("*_prob.tif"):
        with rasterio.open(path) as src:
            probs = src.read()
            assert src.count == 19 and src.descriptions[0].startswith("p(building)")
        total = probs.astype(np.int32).sum(axis=0)
        assert np.abs(total - 255).max() <= 10
        ref = out_argmax / "predictions" / COSIA / path.name.replace("_prob.tif", ".tif")
        with rasterio.open(ref) as src:
            np.testing.assert_array_equal(probs.argmax(axis=0), src.read(1))


def _tiny_model_config() -> dict:
    raw = read_config_layers([REPO / "configs" / "flair-hub"])
    raw["models"]["monotemp_model"] = {"arch": TINY_ARCH, "new_channels_init_mode": "random"}
    return raw


def test_our_checkpoint_and_a_reference_style_checkpoint_give_the_same_predictions(shards, config_file, tmp_path,
                                                                                   capsys) -> None:
    from trainer.model import build_model, save_model

    torch.manual_seed(0)
    model = build_model(_tiny_model_config()).eval()
    ours, _ = save_model(model, tmp_path / "ckpt" / "tiny")
    # A Lightning-style file as the reference releases them: `state_dict` with a `model.` prefix.
    lightning = tmp_path / "ckpt" / "tiny_ref.ckpt"
    # It may carry auxiliary decoders (training-only heads), which inference skips.
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    state["model.aux_decoders.AERIAL_RGBI__AERIAL_LABEL-COSIA.seg_model.head.weight"] = torch.zeros(19, 8, 1, 1)
    torch.save({"state_dict": state, "epoch": 3}, lightning)

    out_a, out_b = tmp_path / "a", tmp_path / "b"
    # Our checkpoint needs no --config (the FLAIR-HUB defaults give the preprocessing).
    assert infer_main(["--checkpoint", str(ours), "--data", str(shards), "--out", str(out_a), "--device", "cpu",
                       "--limit", "2", "--batch-size", "2", "--no-progress"]) == 0
    assert infer_main(["--checkpoint", str(lightning), "--data", str(shards), "--out", str(out_b), "--device", "cpu",
                       "--limit", "2", "--batch-size", "2", "--config", str(config_file), "--no-progress"]) == 0
    a = sorted((out_a / "predictions" / COSIA).glob("*.tif"))
    assert len(a) == 2
    for p in a:
        with rasterio.open(p) as x, rasterio.open(out_b / "predictions" / COSIA / p.name) as y:
            np.testing.assert_array_equal(x.read(), y.read())
    # Without --config a reference checkpoint is refused with one clear line (the style of every command).
    capsys.readouterr()
    assert infer_main(["--checkpoint", str(lightning), "--data", str(shards), "--out", str(tmp_path / "c"),
                       "--device", "cpu", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("flair-infer: error: ") and "--config" in err and len(err.strip().splitlines()) == 1, err


def test_checkpoint_carries_its_training_preprocessing(shards, tmp_path) -> None:
    """A checkpoint saved by the trainer brings its training config: no --config, no defaults."""
    from inference.predict import infer_config
    from trainer.model import build_model, save_model
    from trainer.model.weights import read_saved_config
    from trainer.train_config import dump_config

    raw = _tiny_model_config()
    raw["modalities"]["normalization"]["AERIAL_RGBI_means"] = [1.0, 2.0, 3.0]
    raw["train"] = {"mixed_precision": "no"}  # the trainer's own section travels too and is ignored
    model = build_model(raw).eval()
    with_cfg, _ = save_model(model, tmp_path / "with" / "m", train_config_yaml=dump_config(raw))
    without, _ = save_model(model, tmp_path / "without" / "m")
    opts = dict(data=str(shards), out=str(tmp_path / "o"), device="cpu", progress=False)

    cfg = infer_config(InferOptions(checkpoint=str(with_cfg), **opts), read_saved_config(with_cfg))
    assert cfg["modalities"]["normalization"]["AERIAL_RGBI_means"] == [1.0, 2.0, 3.0]
    assert cfg["data"]["source"] == str(shards)
    default = infer_config(InferOptions(checkpoint=str(without), **opts), read_saved_config(without))
    assert default["modalities"]["normalization"]["AERIAL_RGBI_means"] == [106.59, 105.66, 111.35]
