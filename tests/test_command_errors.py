"""One error style for every command (docs/reliability.md): bad input, a full disk, a bad or
unreachable URL and a stop by the user end with one line `<tool>: error: ...` naming the file, key
or URL (status 2; 130 after Ctrl-C), never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------
# flair-train (the loader's sources) and flair-infer
# --------------------------------------------------------------------------------------------
def _train(tmp_path: Path, **data) -> list[str]:
    over = {"paths": {"out_folder": str(tmp_path), "out_model_name": "x"}, "data": data,
            "hardware": {"accelerator": "cpu", "num_workers": 0}}
    path = tmp_path / "over.yaml"
    path.write_text(yaml.safe_dump(over))
    return ["--config", str(REPO / "configs" / "demo"), str(path)]


@pytest.mark.parametrize("url, fragment", [
    ("ftp://host/shards", "unsupported scheme"),
    ("hf://models/IGNF/x", "expected hf://datasets/<owner>/<name>"),
    ("hf://datasets/IGNF", "expected hf://datasets/<owner>/<name>"),
    ("s3:///no-bucket", "no bucket name"),
])
def test_bad_source_urls_name_the_key_and_the_url(url, fragment, tmp_path, capsys, one_error_line):
    from trainer.train import main as train_main

    assert train_main(_train(tmp_path, source=url)) == 2
    line = one_error_line(capsys.readouterr().err, "flair-train")
    assert f"data.source: {url}" in line and fragment in line


def test_s3_source_without_a_server(tmp_path, capsys, no_s3_server, one_error_line):
    from trainer.train import main as train_main

    assert train_main(_train(tmp_path, source="s3://flair/shards", retries=1)) == 2
    line = one_error_line(capsys.readouterr().err, "flair-train")
    assert "s3://flair/shards/manifest.json" in line and "failed after 1 attempt" in line and no_s3_server in line


def test_truncated_manifest_is_one_line(shards_copy, tmp_path, capsys, one_error_line):
    from trainer.train import main as train_main

    data = shards_copy
    text = (data / "manifest.json").read_text()
    (data / "manifest.json").write_text(text[: len(text) // 2])
    assert train_main(_train(tmp_path, source=str(data))) == 2
    line = one_error_line(capsys.readouterr().err, "flair-train")
    assert "manifest.json: not valid JSON" in line


def test_infer_bad_data_url_fails_before_loading_a_model(tmp_path, capsys, one_error_line):
    from inference.cli import infer_main

    assert infer_main(["--checkpoint", str(tmp_path / "none.ckpt"), "--data", "ftp://host/x",
                       "--out", str(tmp_path / "o")]) == 2
    line = one_error_line(capsys.readouterr().err, "flair-infer")
    assert "--data: ftp://host/x: unsupported scheme" in line


# --------------------------------------------------------------------------------------------
# flair-zonal and flair-toy
# --------------------------------------------------------------------------------------------
def test_zonal_ctrl_c_is_one_line(tmp_path, monkeypatch, capsys, one_error_line):
    import inference.zonal
    from inference.cli import zonal_main

    cfg = yaml.safe_load((REPO / "configs" / "zonal.yaml").read_text())
    cfg["output_path"] = str(tmp_path / "out")
    cfg_path = tmp_path / "zonal.yaml"
    monkeypatch.setattr("inference.zonal_config.load_zonal_config", lambda path, **kw: cfg)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(inference.zonal, "run_zonal", interrupted)
    assert zonal_main(["--config", str(cfg_path), "--no-progress"]) == 130
    line = one_error_line(capsys.readouterr().err, "flair-zonal")
    assert "interrupted (Ctrl-C)" in line and "rerun the same command" in line


def test_toy_not_empty_names_the_flag(tmp_path, capsys, one_error_line):
    from tools.flair_toy import main as toy_main

    (tmp_path / "x").write_text("mine")
    assert toy_main(["--out", str(tmp_path), "--patches", "2"]) == 2
    line = one_error_line(capsys.readouterr().err, "flair-toy")
    assert str(tmp_path) in line and "--overwrite" in line and "overwrite=True" not in line
