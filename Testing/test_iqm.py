"""MRIQC-style IQMs: finite on the sample, monotone with motion, NaN with a reason where undefined."""
import csv

import numpy as np
import pytest

from SSIMQualityLib.cli import main
from SSIMQualityLib.corruption import corrupt_volume
from SSIMQualityLib.iqm import compute_iqms, efc

SEVERITIES = (0.2, 0.4, 0.6, 0.8, 1.0)


@pytest.fixture(scope="module")
def series(sample):
    out = [compute_iqms(sample.array)]
    for sev in SEVERITIES:
        c = corrupt_volume(sample.array, 0, "kspace", sev, seed=0, out_dtype=sample.array.dtype)
        out.append(compute_iqms(c.array))
    return out


def test_finite_on_sample(series):
    r = series[0]
    for m in ("cnr", "cjv", "efc", "qi1"):
        assert np.isfinite(getattr(r, m)), (m, r.reasons)
    assert r.cnr > 1 and 0 < r.cjv < 2 and 0 < r.efc < 1 and r.qi1 < 0.01


def test_monotone_with_kspace_severity(series):
    cnr = [r.cnr for r in series]
    cjv = [r.cjv for r in series]
    e = [r.efc for r in series]
    # EFC (ghost energy in the background) rises from the very first step.
    assert all(a < b for a, b in zip(e, e[1:])), e
    # CNR and CJV are tissue statistics: mild motion (severity 0.2, the k-space
    # centre kept) hardly moves them — within 1 % of the clean value — and from
    # there on they worsen at every step, by far more at severity 1.
    assert abs(cnr[1] / cnr[0] - 1) < 0.01 and abs(cjv[1] / cjv[0] - 1) < 0.01, (cnr, cjv)
    assert all(a > b for a, b in zip(cnr[1:], cnr[2:])), cnr
    assert all(a < b for a, b in zip(cjv[1:], cjv[2:])), cjv
    assert cnr[-1] < 0.9 * cnr[0] and cjv[-1] > 1.05 * cjv[0], (cnr, cjv)


def test_undefined_cases_give_nan_with_reason():
    rng = np.random.default_rng(0)
    for vol, words in [(rng.random((40, 40, 40)), "noise"), (np.ones((30, 30, 30)), "constant")]:
        d = compute_iqms(vol).as_dict()
        assert all(np.isnan(d[m]) for m in ("cnr", "cjv", "efc", "qi1"))
        assert words in d["reason"]
    # skull-stripped: zero background → QI1 undefined, the rest computed
    v = np.zeros((40, 48, 48))
    zz, yy, xx = np.mgrid[:40, :48, :48]
    head = ((zz - 20) / 15.0) ** 2 + ((yy - 24) / 18.0) ** 2 + ((xx - 24) / 18.0) ** 2 < 1
    v[head] = 100 + 60 * (xx[head] > 24) + rng.normal(0, 5, head.sum())
    d = compute_iqms(v).as_dict()
    assert np.isnan(d["qi1"]) and "zeroed" in d["reason"]
    assert np.isfinite(d["cnr"]) and np.isfinite(d["efc"])


def test_efc_is_normalised():
    flat = np.ones((10, 10, 10))
    assert efc(flat) == pytest.approx(1.0)
    spike = np.zeros((10, 10, 10))
    spike[5, 5, 5] = 1
    assert efc(spike) == pytest.approx(0.0, abs=1e-9)


def test_iqm_command_csv(sample_path, tmp_path, capsys):
    out = tmp_path / "iqm.csv"
    noise = tmp_path / "noise.nii.gz"
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.random.rand(30, 30, 30).astype(np.float32), np.eye(4)), str(noise))
    assert main(["iqm", str(sample_path), str(noise), "-o", str(out), "--quiet"]) == 0
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert list(rows[0]) == ["file", "cnr", "cjv", "efc", "qi1", "reason"]
    assert float(rows[0]["cnr"]) > 1 and rows[0]["reason"] == ""
    assert rows[1]["cnr"] == "" and "noise" in rows[1]["reason"]
