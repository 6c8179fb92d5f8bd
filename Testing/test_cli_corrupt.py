"""`ssimquality corrupt`: the teaching tool and the honest check of the labels."""
import csv
import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from SSIMQualityLib.cli import main
from SSIMQualityLib.volumes import read_volume

ROOT = Path(__file__).resolve().parent.parent


def _run(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_corrupt_writes_same_geometry_and_true_labels(sample, sample_path, tmp_path, capsys):
    out = tmp_path / "corrupted.nii.gz"
    report = tmp_path / "slices.csv"
    code, stdout, err = _run(["corrupt", sample_path, out, "--seed", 1, "--severity", 0.7, "--report", report,
                              "--quiet"], capsys)
    assert code == 0, err
    vol = read_volume(out)
    assert vol.shape == sample.shape and vol.array.dtype == sample.array.dtype
    assert vol.spacing == pytest.approx(sample.spacing)
    np.testing.assert_allclose(vol.origin, sample.origin, atol=1e-4)
    np.testing.assert_allclose(vol.direction, sample.direction, atol=1e-6)
    rows = list(csv.DictReader(report.open(encoding="utf-8")))
    assert [r["slice"] for r in rows] == [str(i) for i in range(sample.shape[0])]
    labels = np.array([float(r["ssim"]) for r in rows])
    # The CSV holds the true label of what was written: recompute it with scikit-image.
    from skimage.metrics import structural_similarity
    from SSIMQualityLib.slices import normalize

    for k in (10, 40, 60):
        a = normalize(sample.array[k].astype(np.float64))
        b = normalize(vol.array[k].astype(np.float64))
        assert labels[k] == pytest.approx(structural_similarity(a, b, data_range=1.0), abs=2e-6)
    assert labels.min() < 0.9
    assert "slices along axis 0" in stdout
    # Each slice says whether it holds head (as score decides) and which algorithm moved it; the printed summary
    # is over the slices with head (air slices' SSIM says nothing of the motion), as the demo's and score's are.
    from SSIMQualityLib.vocabulary import CORRUPTION_COLUMNS

    assert list(rows[0]) == CORRUPTION_COLUMNS and {r["method"] for r in rows} == {"kspace"}
    head = np.array([r["foreground"] == "True" for r in rows])
    assert 50 < head.sum() < len(rows)
    assert f"true SSIM over the {head.sum()} slices with enough head to score: mean {labels[head].mean():.3f}" in stdout
    assert "seed 1;" in stdout and "repeats this run" not in stdout


def test_corrupt_is_reproducible_and_severity_zero_is_identity(sample_path, tmp_path, capsys):
    a, b, z = tmp_path / "a.nrrd", tmp_path / "b.nrrd", tmp_path / "z.nii.gz"
    for p in (a, b):
        assert _run(["corrupt", sample_path, p, "--seed", 5, "--method", "torchio", "--quiet"], capsys)[0] == 0
    np.testing.assert_array_equal(read_volume(a).array, read_volume(b).array)
    # Without --seed each run draws a new one, and says it: that seed repeats the run.
    code, out, _ = _run(["corrupt", sample_path, tmp_path / "c.nrrd", "--method", "random", "--report",
                         tmp_path / "c.csv", "--quiet"], capsys)
    seed = out.split("(--seed ")[1].split(" repeats this run")[0]
    assert code == 0 and _run(["corrupt", sample_path, tmp_path / "d.nrrd", "--method", "random", "--seed", seed,
                               "--quiet"], capsys)[0] == 0
    np.testing.assert_array_equal(read_volume(tmp_path / "c.nrrd").array, read_volume(tmp_path / "d.nrrd").array)
    assert {r["method"] for r in csv.DictReader((tmp_path / "c.csv").open(encoding="utf-8"))} == {"kspace", "torchio"}
    rep = tmp_path / "z.csv"
    assert _run(["corrupt", sample_path, z, "--severity", 0, "--report", rep, "--quiet"], capsys)[0] == 0
    assert all(float(r["ssim"]) == 1.0 for r in csv.DictReader(rep.open(encoding="utf-8")))
    np.testing.assert_array_equal(read_volume(z).array, read_volume(sample_path).array)


def _bad_files(tmp_path: Path, sample_path: Path) -> dict:
    bad = {}
    bad["missing"] = (tmp_path / "missing.nii.gz", "does not exist")
    text = tmp_path / "notes.nii"
    text.write_text("patient list, not an image\n" * 10)
    bad["text"] = (text, "not a readable image")
    four = tmp_path / "four.nii.gz"
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.random.rand(30, 30, 20, 2).astype(np.float32), np.eye(4)), str(four))
    bad["4d"] = (four, "4-D")
    two = tmp_path / "two.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.random.rand(40, 40).astype(np.float32)), str(two))
    bad["2d"] = (two, "2-D")
    nan = tmp_path / "nan.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.full((10, 30, 30), np.nan, np.float32)), str(nan))
    bad["nan"] = (nan, "NaN")
    empty = tmp_path / "empty.nii.gz"
    empty.write_bytes(b"")
    bad["empty"] = (empty, "empty")
    trunc = tmp_path / "trunc.nii.gz"
    data = sample_path.read_bytes()
    trunc.write_bytes(data[: len(data) // 2])
    bad["truncated"] = (trunc, "truncated")
    return bad


@pytest.mark.parametrize("case", ["missing", "text", "4d", "2d", "nan", "empty", "truncated"])
def test_bad_input_one_clear_line_no_traceback(case, sample_path, tmp_path, capsys):
    path, words = _bad_files(tmp_path, sample_path)[case]
    out = tmp_path / "out.nii.gz"
    code, stdout, err = _run(["corrupt", path, out, "--quiet"], capsys)
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert str(path) in lines[0] and words in lines[0]
    assert lines[0].startswith("ssimquality: error:")
    assert "Traceback" not in err
    assert not out.exists()


def test_existing_output_refused_before_work_nothing_overwritten(sample_path, tmp_path, capsys):
    out = tmp_path / "out.nii.gz"
    out.write_bytes(b"user's own file")
    report = tmp_path / "r.csv"
    report.write_text("slice,ssim\n")
    before = (_digest(out), _digest(report))
    code, _, err = _run(["corrupt", sample_path, out, "--quiet"], capsys)
    assert code != 0 and "exists already" in err and "--force" in err and str(out) in err
    code, _, err = _run(["corrupt", sample_path, tmp_path / "new.nii.gz", "--report", report, "--quiet"], capsys)
    assert code != 0 and str(report) in err
    assert not (tmp_path / "new.nii.gz").exists(), "refused before any work"
    assert (_digest(out), _digest(report)) == before
    code, _, err = _run(["corrupt", sample_path, out, "--force", "--quiet"], capsys)
    assert code == 0 and _digest(out) != before[0]


@pytest.mark.parametrize("header, data", [(".nhdr", ".raw.gz"), (".mhd", ".zraw")])
def test_a_header_and_its_data_file_are_written_under_their_own_names(header, data, sample_path, tmp_path, capsys):
    """.nhdr and .mhd outputs are two files: the data file is named after the header, beside it, and a rewrite
    with --force replaces both (the data file kept a hidden temporary name before, one more left behind on every
    rewrite, and a copy of the two visible files could not be read)."""
    import shutil

    small = tmp_path / "small.nii.gz"
    vol = read_volume(sample_path)
    sitk.WriteImage(sitk.GetImageFromArray(vol.array[30:36]), str(small))
    out = tmp_path / "out" / f"moved{header}"
    out.parent.mkdir()
    for extra in ([], ["--force"]):
        assert main(["corrupt", str(small), str(out), "--severity", "0.5", "--seed", "1", "--quiet", *extra]) == 0
        assert sorted(p.name for p in out.parent.iterdir()) == sorted([f"moved{data}", f"moved{header}"])
    elsewhere = tmp_path / "copy"
    elsewhere.mkdir()
    for name in (f"moved{header}", f"moved{data}"):
        shutil.copy(out.parent / name, elsewhere / name)
    np.testing.assert_array_equal(read_volume(elsewhere / f"moved{header}").array, read_volume(out).array)
    # A data file of that name made by someone else is not replaced without --force; nothing is left behind.
    other = tmp_path / "other"
    other.mkdir()
    (other / f"moved{data}").write_bytes(b"mine")
    assert main(["corrupt", str(small), str(other / f"moved{header}"), "--quiet"]) == 1
    assert f"moved{data}: output file exists already" in capsys.readouterr().err
    # before any work: the input is not even read (a missing one is not what the line is about)
    assert main(["corrupt", str(tmp_path / "missing.nii.gz"), str(other / f"moved{header}"), "--quiet"]) == 1
    assert f"moved{data}: output file exists already" in capsys.readouterr().err
    assert sorted(p.name for p in other.iterdir()) == [f"moved{data}"] and (other / f"moved{data}").read_bytes() == b"mine"


def test_console_script_no_traceback_in_a_real_process(tmp_path):
    exe = Path(sys.executable).parent / "ssimquality"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "SSIMQualityLib.cli"]
    r = subprocess.run(cmd + ["corrupt", str(tmp_path / "nope.nii"), str(tmp_path / "o.nii")],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr and "does not exist" in r.stderr
    r = subprocess.run(cmd + ["corrupt", "x", "y", "--severity", "2"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and "severity must lie in [0, 1]" in r.stderr


def test_signed_intensities_get_one_warning_line_magnitudes_none(sample, sample_path, tmp_path, capsys):
    """A z-scored volume is not a magnitude image: corrupt still runs, and says so in one line."""
    import nibabel as nib

    arr = read_volume(sample_path).array.astype(np.float32)
    zscored = tmp_path / "z.nii.gz"
    nib.save(nib.Nifti1Image((arr - arr.mean()) / arr.std(), np.eye(4)), str(zscored))
    code, _, err = _run(["corrupt", zscored, tmp_path / "out.nii.gz", "--quiet"], capsys)
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert code == 0 and len(warnings) == 1 and "z.nii.gz" in warnings[0] and "magnitude" in warnings[0]
    assert (tmp_path / "out.nii.gz").is_file()
    code, _, err = _run(["corrupt", sample_path, tmp_path / "plain.nii.gz", "--quiet"], capsys)
    assert code == 0 and "warning:" not in err
