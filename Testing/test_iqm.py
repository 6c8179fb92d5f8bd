"""MRIQC-style IQMs: finite on the sample, monotone with motion, NaN with a reason where undefined."""
import csv

import numpy as np
import pytest

from SSIMQualityLib.cli import main
from SSIMQualityLib.corruption import corrupt_volume
from SSIMQualityLib.iqm import compute_iqms, efc

SEVERITIES = (0.2, 0.4, 0.6, 0.8, 1.0)


def _series(sample, detection, seed=0):
    out = [compute_iqms(sample.array, direction=sample.direction, qi1_detection=detection)]
    for sev in SEVERITIES:
        c = corrupt_volume(sample.array, 0, "kspace", sev, seed=seed, out_dtype=sample.array.dtype)
        out.append(compute_iqms(c.array, direction=sample.direction, qi1_detection=detection))
    return out


@pytest.fixture(scope="module")
def series(sample):
    return _series(sample, "mriqc")


def test_finite_on_sample(series):
    r = series[0]
    for m in ("cnr", "cjv", "efc", "qi1"):
        assert np.isfinite(getattr(r, m)), (m, r.reasons)
    assert r.cnr > 1 and 0 < r.cjv < 2 and 0 < r.efc < 1 and r.qi1 < 0.01
    assert r.qi1_air == "hat"  # the sample is oriented: QI1 looks at the air above the head


def test_monotone_with_kspace_severity(sample, series):
    cnr = [r.cnr for r in series]
    cjv = [r.cjv for r in series]
    e = [r.efc for r in series]
    # EFC (ghost energy in the background) rises from the very first step.
    assert all(a < b for a, b in zip(e, e[1:])), e
    # CNR and CJV are tissue statistics: mild motion (severity 0.2, the k-space
    # centre kept) hardly moves them — within 2 % of the clean value — and from
    # there on they worsen at every step, by far more at severity 1 (CNR -23 %, CJV +9.5 % measured since the
    # split adds the noise back before the magnitude: ghosts under the noise are damped, as a scanner's are;
    # +11.5 % when a real residual was added to the moved magnitude).
    assert abs(cnr[1] / cnr[0] - 1) < 0.02 and abs(cjv[1] / cjv[0] - 1) < 0.02, (cnr, cjv)
    assert all(a > b for a, b in zip(cnr[1:], cnr[2:])), cnr
    # CJV is made of medians and MADs, which on an int16 volume take few values, and a seed's motion is one draw
    # made larger along the severities: one draw can tie between neighbours (seed 0: 0.8022 at 0.8 and at 1.0).
    # The rise at every step is asserted on the mean of three draws.
    draws = [cjv] + [[r.cjv for r in _series(sample, "mriqc", seed=s)] for s in (1, 2)]
    mean = np.mean(draws, axis=0)
    assert all(a < b for a, b in zip(mean[1:], mean[2:])), draws
    assert cnr[-1] < 0.8 * cnr[0] and cjv[-1] > 1.08 * cjv[0], (cnr, cjv)


def test_qi1_detections_on_the_sample(sample, series):
    # MRIQC's rule (value > 10 MAD-sigma of the air) finds none of these ghosts:
    # they are a few noise sigmas bright.  The robust rule (median + 3 MAD-sigma,
    # then the opening) finds them from severity 0.6 on, more at every step.
    assert [r.qi1 for r in series] == [0.0] * len(series)
    q = [r.qi1 for r in _series(sample, "robust")]
    assert q[:3] == [0.0, 0.0, 0.0] and all(a < b for a, b in zip(q[2:], q[3:])), q


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
    assert list(rows[0]) == ["file", "cnr", "cjv", "efc", "qi1", "qi1_air", "reason"]
    assert rows[0]["qi1_air"] == "hat" and rows[1]["qi1_air"] == ""
    assert float(rows[0]["cnr"]) > 1 and rows[0]["reason"] == ""
    assert rows[1]["cnr"] == "" and "noise" in rows[1]["reason"]


def test_compare_reports_directions_and_agreement(tmp_path, capsys):
    """`compare` on a folder of real scans: every row on the same footing, higher = agrees with the truth."""
    import json
    from pathlib import Path

    import nibabel

    from SSIMQualityLib.evaluation import COMPARED

    scans = tmp_path / "scans"
    scans.mkdir()
    (scans / "t1.nii").write_bytes((Path(nibabel.__file__).parent / "tests" / "data" / "anatomical.nii").read_bytes())
    out = tmp_path / "cmp"
    assert main(["compare", "--data", str(scans), "--out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    # Strict JSON: a rho that cannot be computed is null, not NaN (which JSON.parse and jq refuse).
    rep = json.loads((out / "comparison.json").read_text(), parse_constant=lambda c: pytest.fail(f"holds {c}"))
    assert rep["n_volumes"] == 2 * 11 and (out / "comparison.png").is_file()
    assert list(rep["metrics"]) == list(COMPARED)
    lower = {"cjv", "efc", "qi1", "qi1_robust"}
    for key, info in rep["metrics"].items():
        assert info["direction"] == ("lower is better" if key in lower else "higher is better")
        sign = -1 if key in lower else 1
        if info["spearman_rho"] is not None:
            assert info["agreement_rho"] == pytest.approx(sign * info["spearman_rho"])
        else:
            assert info["agreement_rho"] is None
        assert key in printed
    # On this scan the model and EFC both follow the truth (EFC rises as SSIM falls: agreement > 0).
    assert rep["metrics"]["model_mean_ssim"]["agreement_rho"] > 0.5
    assert rep["metrics"]["efc"]["agreement_rho"] > 0
    # QI1 finds no ghost on this small scan at any severity: said, not a meaningless rho.
    assert "note" in rep["metrics"]["qi1"] and rep["metrics"]["qi1"]["agreement_rho"] is None
    assert all(r["qi1_air"] in ("hat", "all background", "") for r in rep["rows"])


def test_options_are_checked_before_the_work(sample):
    """A bad detection failed after the segmentation; a direction of the wrong length meant "all background"."""
    from SSIMQualityLib.errors import BadParameterError

    with pytest.raises(BadParameterError, match="qi1_detection must be one of mriqc, robust"):
        compute_iqms(sample.array, qi1_detection="strict")
    with pytest.raises(BadParameterError, match="9 numbers"):
        compute_iqms(sample.array, direction=(1, 0, 0))
