"""Parameter parity with the FLAIR-HUB results table and with the reference implementation.

All 24 rows are checked by `python -m tools.param_table` (about a minute, Swin-Base on the meta
device); here a subset covering every structural case: one mono-temporal branch, mono + series,
series only (one and two U-TAEs, LPIS's extended U-TAE head), the 64 px SPOT encoder (smaller
Swin windows) and the 1-channel historical input.
"""

from __future__ import annotations

import pytest
import torch

from tools import param_table
from tools.param_table import RESULTS_TABLE, count_row, make_config
from trainer.model import build_model

SUBSET = ["LC-A", "LC-D", "LC-H", "LC-I", "LC-K", "LPIS-H"]
ROWS = {r.model_id: r for r in RESULTS_TABLE}


def test_table_has_the_24_published_rows():
    assert len(RESULTS_TABLE) == 24
    assert ROWS["LC-ALL"].inputs == ("AERIAL_RGBI", "DEM_ELEV", "SPOT_RGBI", "SENTINEL2_TS",
                                     "SENTINEL1-ASC_TS", "SENTINEL1-DESC_TS", "AERIAL-RLT_PAN")


@pytest.mark.parametrize("model_id", SUBSET)
def test_summary_count_matches_table_and_total_matches_reference(model_id):
    """Reference totals: the reference's FLAIR_HUB_Model built with the same config (see the tool)."""
    summary, total = count_row(ROWS[model_id])
    assert abs(summary / 1e6 - ROWS[model_id].para_m) <= param_table.TOLERANCE_M
    assert total == ROWS[model_id].reference_total


def test_lc_a_breakdown_is_swin_base_plus_upernet():
    model = build_model(make_config(["AERIAL_RGBI"], ["AERIAL_LABEL-COSIA"]), device="meta")
    rows = {name: params for name, _, _, params in model.summary_rows()}
    assert rows == {"AERIAL_RGBI": 86_876_536, "AERIAL_LABEL-COSIA": 2_545_747}
    assert model.summary_parameter_count() == 89_422_283


def test_meta_count_equals_a_real_build():
    cfg = make_config(["AERIAL_RGBI", "SENTINEL2_TS"], ["ALL_LABEL-LPIS"], arch="resnet18-unet")
    real = build_model(cfg)
    meta = build_model(cfg, device="meta")
    assert real.parameter_count() == meta.parameter_count()
    assert {k: v.shape for k, v in real.state_dict().items()} == {k: v.shape for k, v in meta.state_dict().items()}
    assert all(p.device.type == "cpu" for p in real.parameters())
    assert not any(torch.isnan(p).any() for p in real.parameters())


def test_param_table_tool_exit_status(monkeypatch, capsys):
    assert param_table.main(["--ids", "LC-G", "LPIS-F"]) == 0
    out = capsys.readouterr().out
    assert "LC-G" in out and "922,485" in out and "0 failing" in out
    wrong_para = param_table.TableRow("LC-G", "AERIAL_LABEL-COSIA", ("s2",), 1.2, 922_487)
    wrong_total = param_table.TableRow("LC-G", "AERIAL_LABEL-COSIA", ("s2",), 0.9, 922_488)
    for row in (wrong_para, wrong_total):
        monkeypatch.setattr(param_table, "RESULTS_TABLE", (row,))
        assert param_table.main([]) == 1
        assert " NO" in capsys.readouterr().out
