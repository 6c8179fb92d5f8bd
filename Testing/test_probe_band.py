"""scripts/probe_band.py: models on the same held-out slices with the standing ghost band never and always."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from helpers import load_script


@pytest.fixture(scope="module")
def script():
    return load_script("probe_band")


def test_the_band_only_adds_to_the_same_slices_and_the_same_weights_read_alike(script):
    """Same seed, band off and on: the slices are twins, and the band's noise (one draw in both images) never lowers
    a label and raises some. Two copies of one model give the same figures."""
    from SSIMQualityLib.evaluation import truth_bins
    from SSIMQualityLib.models import load_bundled_model
    from SSIMQualityLib.realeval import CALIBRATION_EDGES

    model = load_bundled_model()
    out = script.band_residuals({"a": model, "b": model}, n=24, workers=1)
    without, with_band = out[0.0]["labels"], out[1.0]["labels"]
    assert len(without) == len(with_band) == 24
    assert np.all(with_band >= without - 1e-6) and np.any(with_band > without + 0.01)
    for row in out.values():
        a, b = row["by_model"]["a"], row["by_model"]["b"]
        assert a == b and 0 < a["std"] < 0.5
        # one key per calibration bin that holds a label, as evaluate --real reports it
        e = CALIBRATION_EDGES
        held = {f"{e[k]:.1f}-{e[k + 1]:.1f}" for k in truth_bins(row["labels"], e) if k >= 0}
        assert set(a["by_truth"]) == held and held


def test_command_prints_both_settings_for_every_model(script, tmp_path, capsys):
    from SSIMQualityLib.models import bundled_model_entry, catalog_path

    bundled = catalog_path().parent / bundled_model_entry()["file"]
    copy = tmp_path / "copy.pt"
    shutil.copyfile(bundled, copy)
    assert script.main([str(bundled), str(copy), "-n", "16", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert out.count("band in ") == 2 and "band in 100% of the slices: n 16" in out
    assert out.count("copy.pt: µ ") == 2 and out.count(" | by truth 0.") == 4
