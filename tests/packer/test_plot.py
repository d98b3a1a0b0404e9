"""`plot_sample` and `flair-pack inspect OUT PATCH_ID --plot PNG`: one figure per patch."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from PIL import Image

import flair_stream
from packer import schema
from packer.cli import main as pack_main
from packer.plot import CLOUDY_SHARE, MASK_PROBABILITY, label_rgb, plot_sample


@pytest.fixture(scope="module")
def sample(toy_shards):
    ds = flair_stream.open_dataset(toy_shards.out)
    return ds[ds.patch_ids("train")[0]]


def titles(fig) -> list[str]:
    return [t for ax in fig.get_axes() for t in (ax.get_title(loc=w) for w in ("left", "center", "right")) if t]


def test_every_modality_has_its_panel(sample, tmp_path):
    fig = plot_sample(sample, tmp_path / "p.png")
    t = titles(fig)
    for expected in ("Aerial RGB", "Aerial NIR-R-G false colour", "Historical panchromatic", "DEM: DSM − DTM",
                     "SPOT 6-7 RGB", "AERIAL_LABEL-COSIA (19 classes)", "ALL_LABEL-LPIS level 1 (23 classes)",
                     "Sentinel-1 backscatter over time (patch mean)"):
        assert any(x.startswith(expected) for x in t), (expected, t)
    n_dates = sample["arrays"]["SENTINEL2_TS"].shape[0] // 10
    dates = sample["meta"]["modalities"]["SENTINEL2_TS"]["dates"]
    assert sum(1 for x in t if x[:10] in {f"{d[:4]}-{d[4:6]}-{d[6:]}" for d in dates}) == n_dates
    assert sample["patch_id"] in fig._suptitle.get_text()
    img = Image.open(tmp_path / "p.png")
    assert img.format == "PNG" and img.size[0] >= 1200 and np.asarray(img).std() > 20
    assert (tmp_path / "p.png").stat().st_size < 3_000_000


def test_cloudy_dates_are_marked_from_the_mask(sample):
    fig = plot_sample(sample)
    mask = sample["arrays"]["SENTINEL2_MSK-SC"].reshape(-1, 2, 10, 10)
    cloud_share = (mask[:, 1] > MASK_PROBABILITY).mean(axis=(1, 2))
    dates = sample["meta"]["modalities"]["SENTINEL2_TS"]["dates"]
    by_date = {x.split("\n")[0]: x for x in titles(fig)}
    cloudy = [d for d, share in zip(dates, cloud_share) if share >= CLOUDY_SHARE]
    assert cloudy, "the toy series always has a cloudy date"
    for d, share in zip(dates, cloud_share):
        title = by_date[f"{d[:4]}-{d[4:6]}-{d[6:]}"]
        assert ("cloud" in title) == (share >= CLOUDY_SHARE), title


def test_labels_are_drawn_in_the_official_colours_with_a_legend(sample):
    fig = plot_sample(sample)
    (ax,) = [a for a in fig.get_axes() if a.get_title().startswith("AERIAL_LABEL-COSIA")]
    drawn = ax.get_images()[0].get_array()
    classes = sample["arrays"]["AERIAL_LABEL-COSIA"][0]
    np.testing.assert_array_equal(np.asarray(drawn), label_rgb("AERIAL_LABEL-COSIA", classes))
    assert tuple(label_rgb("AERIAL_LABEL-COSIA", np.array([[6]]))[0, 0]) == schema.COSIA_CLASSES[6].rgb
    legends = [a.get_legend() for a in fig.get_axes() if a.get_legend() is not None]
    texts = [t.get_text() for leg in legends for t in leg.get_texts()]
    for value in np.unique(classes):
        assert any(t.split()[0] == str(value) and schema.COSIA_CLASSES[value].name in t for t in texts), value


@pytest.mark.parametrize("keep", [
    ["AERIAL_RGBI", "AERIAL_LABEL-COSIA"],
    ["SENTINEL1-DESC_TS"],
    ["SENTINEL2_TS"],  # no mask: no cloud marks, no crash
    ["ALL_LABEL-LPIS", "DEM_ELEV", "SPOT_RGBI"],
])
def test_absent_modalities_are_left_out_and_named(sample, keep, tmp_path):
    part = copy.copy(sample)
    part["arrays"] = {m: a for m, a in sample["arrays"].items() if m in keep}
    fig = plot_sample(part, tmp_path / "part.png")
    title = fig._suptitle.get_text()
    absent = [m for m in schema.MODALITY_NAMES if m not in keep]
    assert f"absent: {', '.join(absent)}" in title
    assert not any("cloud" in t for t in titles(fig))
    assert Image.open(tmp_path / "part.png").size[1] > 200


def test_nothing_to_draw_is_an_error(sample):
    with pytest.raises(ValueError, match="no modality"):
        plot_sample(dict(sample, arrays={}))


def test_flair_pack_inspect_plot(toy_shards, tmp_path, capsys):
    ds = flair_stream.open_dataset(toy_shards.out)
    pid = ds.patch_ids("valid")[0]
    png = tmp_path / "inspect.png"
    assert pack_main(["inspect", str(toy_shards.out), pid, "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert pid in out and f"wrote {png}" in out
    assert Image.open(png).format == "PNG"
    # The API's picture of the same sample is the same picture.
    ds.plot(pid, tmp_path / "api.png")
    assert np.array_equal(np.asarray(Image.open(png)), np.asarray(Image.open(tmp_path / "api.png")))
    with pytest.raises(SystemExit) as exc:
        pack_main(["inspect", str(toy_shards.out), "--plot", str(png)])
    assert exc.value.code == 2 and "--plot needs a PATCH_ID" in capsys.readouterr().err
