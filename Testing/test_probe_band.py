"""scripts/probe_band.py: models on the same held-out slices with the standing ghost band never and always."""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("probe_band", ROOT / "scripts" / "probe_band.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_band_only_adds_to_the_same_slices_and_the_same_weights_read_alike(script):
    """Same seed, band off and on: the slices are twins, and the band's noise (one draw in both images) never lowers
    a label and raises some. Two copies of one model give the same figures."""
    from SSIMQualityLib.models import load_bundled_model

    model = load_bundled_model()
    out = script.band_residuals({"a": model, "b": model}, n=24, workers=1)
    without, with_band = out[0.0]["labels"], out[1.0]["labels"]
    assert len(without) == len(with_band) == 24
    assert np.all(with_band >= without - 1e-6) and np.any(with_band > without + 0.01)
    for row in out.values():
        a, b = row["by_model"]["a"], row["by_model"]["b"]
        assert a == b and 0 < a["std"] < 0.5 and len(a["by_truth"]) == len(script.EDGES) - 1


def test_command_prints_both_settings_for_every_model(script, tmp_path, capsys):
    from SSIMQualityLib.models import bundled_model_entry, catalog_path

    bundled = catalog_path().parent / bundled_model_entry()["file"]
    copy = tmp_path / "copy.pt"
    shutil.copyfile(bundled, copy)
    assert script.main([str(bundled), str(copy), "-n", "16", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert out.count("band in ") == 2 and "band in 100% of the slices: n 16" in out
    assert out.count("copy.pt: µ ") == 2 and out.count("by truth 0.3: ") == 4
