"""scripts/probe_background.py: what in a clean real slice's background a model reads as damage."""
from __future__ import annotations

import json

import numpy as np
import pytest

from helpers import load_script


@pytest.fixture(scope="module")
def script():
    return load_script("probe_background")


def _slice(sigma=0.02, band=1.0, seed=0, pad=8):
    """A normalised slice: a bright disc (the head) in Rician air of ``sigma``, the air in the head's rows
    ``band`` times as loud (a ghost band along the columns), and ``pad`` columns of exact zeros each side."""
    rng = np.random.default_rng(seed)
    n = 96
    yy, xx = np.mgrid[:n, :n]
    head = ((yy - 48) ** 2 + (xx - 48) ** 2) < 22 ** 2
    scale = np.where((np.abs(yy - 48) < 22) & ~head, band, 1.0) * sigma
    air = np.hypot(rng.normal(size=(n, n)), rng.normal(size=(n, n))) * scale
    img = np.where(head, 0.8, air).astype(np.float32)
    img[:, :pad] = 0.0
    img[:, n - pad:] = 0.0
    return img, head


def test_air_is_outside_the_head_and_not_the_padding(script):
    img, head = _slice()
    air = script.air_mask(img, 0.02)
    assert not (air & head).any()
    assert not air[:, :8].any() and not air[:, -8:].any()
    assert air.mean() > 0.4


def test_band_ratio_finds_a_ghost_band_along_one_axis(script):
    img, _ = _slice(band=2.0)
    rows, cols = script.band_ratios(img, script.air_mask(img, 0.02))
    assert rows == pytest.approx(2.0, rel=0.15) and cols == pytest.approx(1.0, rel=0.15)
    flat, _ = _slice(band=1.0)
    assert script.band_ratios(flat, script.air_mask(flat, 0.02)) == pytest.approx((1.0, 1.0), rel=0.15)


def test_each_change_touches_the_air_alone(script):
    img, head = _slice(sigma=0.03)
    img[10:14, 40:44] = 0.5  # a bright fragment in the air (an eye, scalp)
    air = script.air_mask(img, 0.03)
    v = script.changed(img, air, 0.03, np.random.default_rng(1))
    for k in script.CHANGES:
        assert np.array_equal(v[k][~air], img[~air]), k  # head and padding untouched
    assert not v["zeroed"][air].any()
    # Rician noise of sigma 0.03 over the air: mean sigma * sqrt(pi / 2).
    assert v["synthetic"][air].mean() == pytest.approx(0.03 * np.sqrt(np.pi / 2), rel=0.05)
    assert (v["structure"][10:14, 40:44] == 0.5).all() and not (v["synthetic"][10:14, 40:44] == 0.5).all()
    low = air & ~(v["structure"] == img)  # the low-level air: the same values, shuffled
    bright = air & ~low
    assert np.array_equal(np.sort(v["permuted"][air & ~bright]), np.sort(img[air & ~bright]))
    assert not np.array_equal(v["permuted"][air], img[air])
    assert (v["permuted"][10:14, 40:44] == 0.5).all()


def test_probe_runs_on_a_volume_and_writes_json(script, tmp_path):
    import nibabel as nib
    import torch

    from SSIMQualityLib.models import build_model, save_checkpoint

    vol = np.stack([_slice(seed=k)[0] * 1000 for k in range(3)], axis=-1)
    nib.save(nib.Nifti1Image(vol, np.diag([1.0, 1.0, 4.0, 1.0])), str(tmp_path / "scan.nii.gz"))
    torch.manual_seed(0)
    model = tmp_path / "tiny.pt"
    save_checkpoint(model, build_model("resnet18", 32).eval())
    out = tmp_path / "rows.json"
    assert script.main([str(tmp_path / "scan.nii.gz"), "--model", str(model), "--json", str(out)]) == 0
    row, = json.loads(out.read_text())
    assert row["volume"] == "scan.nii.gz" and row["slices"] == 3
    assert row["sigma_share"] == pytest.approx(0.02 / 0.8, rel=0.2)
    for k in script.CHANGES:
        assert 0.0 <= row[k] <= 1.5
