"""The modality rules that `packer.schema` holds for every stage (loader, model, inference).

Each rule is stated once on `Modality`; these tests pin what it says for FLAIR-HUB's modalities,
which is what the reference code hard-codes (its loader, model builder and zonal script).
"""

from __future__ import annotations

import pytest

from packer import schema
from packer.schema import MODALITIES


def test_inputs_and_series_follow_the_flags():
    assert schema.MONO_TEMPORAL_INPUTS == ("AERIAL_RGBI", "AERIAL-RLT_PAN", "DEM_ELEV", "SPOT_RGBI")
    assert schema.TIME_SERIES_INPUTS == ("SENTINEL2_TS", "SENTINEL1-ASC_TS", "SENTINEL1-DESC_TS")
    assert not MODALITIES["SENTINEL2_MSK-SC"].series_input  # read only to filter S2's dates
    assert [m.name for m in schema.MODALITY_LIST if m.channels_required] == [
        "AERIAL_RGBI", "SPOT_RGBI", "SENTINEL2_TS", "SENTINEL1-ASC_TS", "SENTINEL1-DESC_TS"]


def test_the_s2_mask_rule():
    assert MODALITIES["SENTINEL2_TS"].mask == "SENTINEL2_MSK-SC"
    assert MODALITIES["SENTINEL1-ASC_TS"].mask is None
    assert schema.SENTINEL2_MASK_OF == {"SENTINEL2_MSK-SC": "SENTINEL2_TS"}
    assert schema.dates_key("SENTINEL2_MSK-SC") == MODALITIES["SENTINEL2_MSK-SC"].dates_from == "SENTINEL2_TS"
    assert schema.dates_key("SENTINEL1-ASC_TS") == "SENTINEL1-ASC_TS"


def test_dates_files_come_from_the_modalities():
    assert schema.SENTINEL_DATES_FILES == {
        "SENTINEL2_TS": "GLOBAL_SENTINEL2_MTD_DATES.gpkg",
        "SENTINEL1-ASC_TS": "GLOBAL_SENTINEL1-ASC_MTD_DATES.gpkg",
        "SENTINEL1-DESC_TS": "GLOBAL_SENTINEL1-DESC_MTD_DATES.gpkg",
    }
    assert schema.SINGLE_DATE_FILES == {
        "AERIAL_RGBI": "GLOBAL_AERIAL_MTD_DATES.gpkg",
        "AERIAL-RLT_PAN": "GLOBAL_AERIAL-RLT_MTD_DATES.gpkg",
        "SPOT_RGBI": "GLOBAL_SPOT_MTD_DATES.gpkg",
    }
    # The mask's dates are its series' (one file, read once).
    assert MODALITIES["SENTINEL2_MSK-SC"].dates_file == MODALITIES["SENTINEL2_TS"].dates_file


def test_reference_batch_keys():
    assert schema.batch_dates_key("SENTINEL2_TS") == "SENTINEL2_DATES"
    assert schema.batch_pad_mask_key("SENTINEL1-DESC_TS") == "SENTINEL1-DESC_PAD_MASK"


@pytest.mark.parametrize("calc, stack, expected", [(True, False, 1), (True, True, 2), (False, False, 2), (False, True, 2)])
def test_dem_output_channels_follow_the_elevation_switches(calc, stack, expected):
    dem = MODALITIES["DEM_ELEV"]
    assert not dem.selects_channels
    assert dem.output_channels([1], calc_elevation=calc, stack_dsm=stack) == expected


def test_output_channels_of_a_band_selection():
    assert MODALITIES["AERIAL_RGBI"].output_channels([4, 1, 2]) == 3
    assert MODALITIES["AERIAL_RGBI"].output_channels(None) == 4
    assert MODALITIES["SENTINEL2_TS"].output_channels([]) == 10  # per date


def test_temporal_average_switches_of_the_reference_config():
    assert {m: MODALITIES[m].temporal_average_key for m in schema.TIME_SERIES_INPUTS} == {
        "SENTINEL2_TS": "temporal_average_sentinel2",
        "SENTINEL1-ASC_TS": "temporal_average_sentinel1",
        "SENTINEL1-DESC_TS": "temporal_average_sentinel1",
    }
