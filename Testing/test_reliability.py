"""Batches with bad files, interruption and --resume, and a wide bad-input table (issue: reliability)."""
import csv
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import write_dicom_series, write_nifti
from SSIMQualityLib.models import build_model, save_checkpoint

ROOT = Path(__file__).resolve().parent.parent


def _cmd():
    exe = Path(sys.executable).parent / "ssimquality"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "SSIMQualityLib.cli"]


@pytest.fixture(scope="module")
def tiny_model_file(tmp_path_factory):
    import torch

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    save_checkpoint(path, build_model("resnet18", 32).eval())
    return path


def _head(seed, shape=(24, 48, 48)):
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.mgrid[: shape[0], : shape[1], : shape[2]]
    r = ((zz - shape[0] / 2) / (shape[0] * 0.4)) ** 2 + ((yy - 24) / 19.0) ** 2 + ((xx - 24) / 17.0) ** 2
    return ((r < 1) * (300 + 100 * rng.random(shape)) + 20 * rng.random(shape)).astype(np.int16)


@pytest.fixture(scope="module")
def batch50(tmp_path_factory, sample_path):
    d = tmp_path_factory.mktemp("batch50")
    for i in range(40):
        write_nifti(d / f"good_{i:02d}.nii.gz", _head(i).T.copy(), (1.0, 1.0, 2.0))
    data = sample_path.read_bytes()
    bad = {
        "bad_00_truncated.nii.gz": data[: len(data) // 3], "bad_01_empty.nii.gz": b"",
        "bad_02_text.nii": b"not an image\n" * 40, "bad_03_header_only.nii": data[:10],
    }
    for name, content in bad.items():
        (d / name).write_bytes(content)
    write_nifti(d / "bad_04_fourd.nii.gz", np.random.rand(30, 30, 20, 2).astype(np.float32))
    write_nifti(d / "bad_05_twod.nii.gz", np.random.rand(40, 40).astype(np.float32))
    write_nifti(d / "bad_06_nan.nii.gz", np.full((30, 30, 20), np.nan, np.float32))
    write_nifti(d / "bad_07_const.nii.gz", np.ones((30, 30, 20), np.float32))
    write_nifti(d / "bad_08_tiny.nii.gz", np.random.rand(8, 8, 20).astype(np.float32))
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(np.random.randint(0, 255, (20, 30, 30, 3)).astype(np.uint8), isVector=True),
                    str(d / "bad_09_rgb.nrrd"))
    return d


def _rows(path):
    return sorted((Path(r["file"]).name, int(r["slice"]), r["predicted_ssim"]) for r in csv.DictReader(open(path)))


def test_fifty_files_ten_bad(batch50, tiny_model_file, tmp_path):
    out = tmp_path / "all.csv"
    r = subprocess.run(_cmd() + ["score", str(batch50), "--model", str(tiny_model_file), "-o", str(out), "--quiet",
                                 "--device", "cpu"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    err = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(err) == 10, r.stderr
    assert all(l.startswith("ssimquality: error: ") and "bad_" in l for l in err)
    files = {f for f, _, _ in _rows(out)}
    assert len(files) == 40 and all(f.startswith("good_") for f in files)
    assert "40 of 50 volumes scored; 10 could not be scored" in r.stdout


@pytest.fixture(scope="module")
def batch_slow(tmp_path_factory):
    """Volumes large enough that a run lasts several seconds, so it can be interrupted halfway."""
    d = tmp_path_factory.mktemp("batch_slow")
    for i in range(48):
        vol = np.tile(_head(100 + i), (3, 3, 3))[:64, :144, :144]
        write_nifti(d / f"vol_{i:02d}.nii.gz", vol.T.copy(), (1.0, 1.0, 2.0))
    return d


def _slow_score(batch_slow, tiny_model_file):
    # --batch-size 1 keeps each volume slow enough (~64 model calls) for the run to be caught halfway.
    return _cmd() + ["score", str(batch_slow), "--model", str(tiny_model_file), "--quiet", "--device", "cpu",
                     "--workers", "1", "--batch-size", "1"]


@pytest.fixture(scope="module")
def slow_reference(batch_slow, tiny_model_file, tmp_path_factory):
    ref = tmp_path_factory.mktemp("slow_ref") / "ref.csv"
    subprocess.run(_slow_score(batch_slow, tiny_model_file) + ["-o", str(ref)], capture_output=True, text=True,
                   cwd=ROOT)
    return ref


@pytest.mark.parametrize("sig, shard", [(signal.SIGINT, None), (signal.SIGTERM, "1/1")], ids=["ctrl-c", "scheduler"])
def test_interrupt_then_resume_equals_one_run(sig, shard, batch_slow, tiny_model_file, slow_reference, tmp_path):
    """Ctrl-C, or the SIGTERM a cluster's scheduler sends at a time limit: the finished volumes are kept, a shard's
    record says it did not finish (merge refuses it), and --resume completes the run as one run would."""
    from SSIMQualityLib.records import read_record

    base = _slow_score(batch_slow, tiny_model_file) + (["--shard", shard] if shard else [])
    out = tmp_path / "part.csv"
    env = {**os.environ, "SSIMQUALITY_SAVE_EVERY_S": "0"}
    # SIGINT back to its default in the child: a test run started in the background (nohup, `&`) ignores SIGINT,
    # and children inherit that, so Ctrl-C would never reach the scorer.
    proc = subprocess.Popen(base + ["-o", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, env=env, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    summary = tmp_path / "part.summary.csv"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if summary.exists() and len(summary.read_text(encoding="utf-8").splitlines()) > 2:
            break
        time.sleep(0.002)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == (143 if sig == signal.SIGTERM else 130), stderr
    assert "--resume" in stderr and "Traceback" not in stderr
    done = {f for f, _, _ in _rows(out)}
    assert 2 <= len(done) < 48, "interrupted halfway, finished volumes kept"
    if shard:
        assert not read_record(out).finished
        merged = tmp_path / "merged.csv"
        r = subprocess.run(_cmd() + ["merge", str(out), "-o", str(merged)], capture_output=True, text=True, cwd=ROOT)
        assert r.returncode == 1 and f"did not finish ({len(done)} of 48 volumes)" in r.stderr and not merged.exists()
    r = subprocess.run(base + ["-o", str(out), "--resume"], capture_output=True, text=True, cwd=ROOT)
    assert "resuming:" in r.stdout
    assert _rows(out) == _rows(slow_reference)
    if shard:
        assert read_record(out).finished
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == [], "no temporary files left"


def _sha(p):
    return hashlib.sha256(Path(p).read_bytes()).hexdigest() if Path(p).is_file() else None


BAD_ARGS = [
    # (id, argv builder, expected words in the one stderr line)
    ("score-missing", lambda d, m, o: ["score", str(d / "nope.nii.gz"), "--model", m], "does not exist"),
    ("score-bad-model-path", lambda d, m, o: ["score", str(d / "good_00.nii.gz"), "--model", str(d / "x.pt")], "no such model file, and no catalogued model of that name"),
    ("score-shard-bad-model", lambda d, m, o: ["score", str(d / "good_00.nii.gz"), "--shard", "1/2", "-o", str(o.with_name("p.csv")), "--model", str(d / "x.pt")], "no such model file, and no catalogued model of that name"),
    ("score-model-not-ckpt", lambda d, m, o: ["score", str(d / "good_00.nii.gz"), "--model", str(d / "bad_02_text.nii")], "cannot be loaded"),
    ("score-output-exists", lambda d, m, o: ["score", str(d / "good_00.nii.gz"), "--model", m, "-o", str(o)], "exists already"),
    ("score-bad-format", lambda d, m, o: ["score", str(d / "good_00.nii.gz"), "--model", m, "-o", str(o.with_suffix(".xls"))], "unknown results format"),
    ("score-output-is-a-folder", lambda d, m, o: ["score", str(d / "good_00.nii.gz"), "--model", m, "-o", str(o.parent)], "is a folder, not a results file. Give a file in it, e.g."),
    ("iqm-output-is-a-folder", lambda d, m, o: ["iqm", str(d / "good_00.nii.gz"), "-o", str(o.parent)], "is a folder, not a results file"),
    ("score-resume-force", lambda d, m, o: ["score", str(d / "good_00.nii.gz"), "--model", m, "-o", str(o), "--resume", "--force"], "give one of the two"),
    ("score-resume-no-output", lambda d, m, o: ["score", str(d / "good_00.nii.gz"), "--model", m, "--resume"], "--resume needs"),
    ("score-cuda-missing", lambda d, m, o: ["score", str(d / "good_00.nii.gz"), "--model", m, "--device", "cuda"], "CUDA"),
    ("score-frame-out-of-range", lambda d, m, o: ["score", str(d / "bad_04_fourd.nii.gz"), "--model", m, "--frame", "9"], "frame 9 does not exist"),
    ("corrupt-output-exists", lambda d, m, o: ["corrupt", str(d / "good_00.nii.gz"), str(o.with_name("existing.nii.gz"))], "exists already"),
    ("corrupt-bad-suffix", lambda d, m, o: ["corrupt", str(d / "good_00.nii.gz"), str(o.with_suffix(".png"))], "unknown output format"),
    ("corrupt-missing-folder", lambda d, m, o: ["corrupt", str(d / "good_00.nii.gz"), str(d / "no" / "x.nii")], "output folder does not exist"),
    ("corrupt-rgb", lambda d, m, o: ["corrupt", str(d / "bad_09_rgb.nrrd"), str(o.with_name("n.nii"))], "RGB"),
    ("corrupt-const", lambda d, m, o: ["corrupt", str(d / "bad_07_const.nii.gz"), str(o.with_name("n.nii"))], "same value"),
    ("corrupt-tiny", lambda d, m, o: ["corrupt", str(d / "bad_08_tiny.nii.gz"), str(o.with_name("n.nii"))], "too small"),
    ("corrupt-negative-seed", lambda d, m, o: ["corrupt", str(d / "good_00.nii.gz"), str(o.with_name("n.nii")), "--seed", "-1"], "seed must be a whole number of 0 or more (leave --seed out"),
    ("corrupt-header-only", lambda d, m, o: ["corrupt", str(d / "bad_03_header_only.nii"), str(o.with_name("n.nii"))], "not a readable image"),
    ("iqm-output-exists", lambda d, m, o: ["iqm", str(d / "good_00.nii.gz"), "-o", str(o)], "exists already"),
    ("iqm-missing", lambda d, m, o: ["iqm", str(d / "nope.nii")], "does not exist"),
    ("iqm-4d", lambda d, m, o: ["iqm", str(d / "bad_04_fourd.nii.gz")], "4-D"),
    ("iqm-empty", lambda d, m, o: ["iqm", str(d / "bad_01_empty.nii.gz")], "empty"),
    ("iqm-bad-format", lambda d, m, o: ["iqm", str(d / "good_00.nii.gz"), "-o", str(o.with_suffix(".txt"))], "unknown results format"),
    ("evaluate-bad-model", lambda d, m, o: ["evaluate", "--model", str(d / "bad_02_text.nii"), "-n", "4", "--out", str(o.parent / "ev")], "cannot be loaded"),
    # Outputs that cannot be written, refused before any work (o is the user's existing.csv, a file).
    ("corrupt-output-is-input", lambda d, m, o: ["corrupt", str(d / "good_00.nii.gz"), str(d / "good_00.nii.gz"), "--force"], "the output is the input"),
    ("corrupt-report-is-input", lambda d, m, o: ["corrupt", str(d / "good_00.nii.gz"), str(o.with_name("n.nii")), "--report", str(d / "good_00.nii.gz")], "the report is the input"),
    ("corrupt-folder-is-a-file", lambda d, m, o: ["corrupt", str(d / "good_00.nii.gz"), str(o / "n.nii")], "is a file, not a folder"),
    ("corrupt-folder-unwritable", lambda d, m, o: ["corrupt", str(d / "good_00.nii.gz"), "/proc/n.nii"], "cannot be written to"),
    ("score-report-dir-is-a-file", lambda d, m, o: ["score", str(d / "good_00.nii.gz"), "--model", m, "--report-dir", str(o)], "is a file, not a folder"),
    ("evaluate-out-is-a-file", lambda d, m, o: ["evaluate", "-n", "4", "--out", str(o)], "is a file, not a folder"),
    ("evaluate-no-samples", lambda d, m, o: ["evaluate", "-n", "0"], "at least 1"),
    ("score-batch-size-zero", lambda d, m, o: ["score", "--batch-size", "0", "x.nii"], "--batch-size: must be at least 1"),
    ("score-workers-negative", lambda d, m, o: ["score", "--workers", "-1", "x.nii"], "--workers: must be a whole number of 0 or more"),
    ("evaluate-negative-max-slices", lambda d, m, o: ["evaluate", "--max-slices", "-1"], "--max-slices: must be a whole number of 0 or more"),
    # Command lines argparse refuses: one line too (not the usage block), naming the --help to read.
    ("score-shard-zero", lambda d, m, o: ["score", str(d / "good_00.nii.gz"), "--shard", "0/3"], "K must be between 1 and N. See ssimquality score --help"),
    ("score-no-paths", lambda d, m, o: ["score"], "required: paths. See ssimquality score --help"),
    ("score-unknown-option", lambda d, m, o: ["score", "x.nii", "--bogus"], "unrecognized arguments: --bogus. See ssimquality score --help"),
    # train's options, refused before the minutes of making samples (a negative rate or 0 steps failed after them,
    # as an "unexpected ZeroDivisionError"; --steps 0 ran 3000 steps).
    ("train-lr-negative", lambda d, m, o: ["train", "--out", "norun", "--lr", "-1"], "--lr: must be a number above 0"),
    ("train-steps-zero", lambda d, m, o: ["train", "--out", "norun", "--steps", "0"], "--steps: must be at least 1"),
    ("train-fewer-samples-than-a-batch", lambda d, m, o: ["train", "--out", "norun", "--train-samples", "32"],
     "--train-samples 32 is fewer than one batch (--batch-size 64)"),
    ("train-init-missing", lambda d, m, o: ["train", "--out", "norun", "--init", "nope.pt"], "no such model file, and no catalogued model of that name. Give a checkpoint file or one of: resnet18-synthetic-v12"),
    ("models-add-bundled-name", lambda d, m, o: ["models", "add", "model.pt", "resnet18-synthetic-v12"], "is the name of a bundled model"),
    ("models-add-not-a-checkpoint", lambda d, m, o: ["models", "add", str(d / "bad_02_text.nii"), "site"], "not a PyTorch checkpoint, or a damaged one"),
    ("command-misspelt", lambda d, m, o: ["scor"], "invalid choice: 'scor'"),
    ("demo-figure-exists", lambda d, m, o: ["demo", "--out", str(o.parent)], "corruption_kspace.png: output file exists"),
    # Files that are not results of `score`, given where results are read back.
    ("score-resume-not-results", lambda d, m, o: ["score", str(d / "good_00.nii.gz"), "--model", m, "-o", str(o), "--resume"], "not a results file"),
    ("merge-not-results", lambda d, m, o: ["merge", str(o), "-o", str(o.with_name("m.csv"))], "not a results file"),
    ("merge-summary-given", lambda d, m, o: ["merge", str(o.with_name("existing.summary.csv")), "-o", str(o.with_name("m.csv"))], "summary half"),
    ("merge-an-image", lambda d, m, o: ["merge", str(d / "good_00.nii.gz"), "-o", str(o.with_name("m.csv"))], "not a results file"),
]


def _assert_refused(argv, words, watched, env=None):
    """One run: non-zero exit, one stderr line with ``words``, no traceback, no watched file changed."""
    before = {p: _sha(p) for p in watched}
    r = subprocess.run(_cmd() + argv + ["--quiet"] * (argv[0] in ("score", "corrupt", "iqm")), capture_output=True,
                       text=True, cwd=ROOT, env={**os.environ, **(env or {})})
    assert r.returncode not in (0, None), r.stdout
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, r.stderr
    assert words in lines[0], lines[0]
    # The line names the file (or the folder) at fault; option-only problems (--resume without -o, a missing
    # GPU, a negative seed) and a bad setting in the environment (which the line names) have none to name.
    named = [n for a in argv if os.sep in a for n in (Path(a).name, str(Path(a).parent))]
    setting = any(lines[0].startswith(f"ssimquality: error: {name}=") for name in (env or {}))
    if named and not {"--resume", "--device", "--seed"} & set(argv) and not setting:
        assert any(n in lines[0] for n in named), f"the line names the file: {lines[0]}"
    assert "Traceback" not in r.stderr
    assert {p: _sha(p) for p in before} == before, "no pre-existing file changed"
    return lines[0]


@pytest.mark.parametrize("case", BAD_ARGS, ids=[c[0] for c in BAD_ARGS])
def test_bad_input_table(case, batch50, tiny_model_file, tmp_path):
    _, build, words = case
    existing = tmp_path / "existing.csv"
    existing.write_text("user data\n")
    (tmp_path / "existing.summary.csv").write_text("user summary\n")
    (tmp_path / "existing.nii.gz").write_bytes(b"user volume")
    (tmp_path / "corruption_kspace.png").write_bytes(b"user figure")  # a name the demo writes
    watched = list(batch50.iterdir()) + [existing, tmp_path / "existing.summary.csv", tmp_path / "existing.nii.gz",
                                         tmp_path / "corruption_kspace.png"]
    before = set(tmp_path.iterdir())
    _assert_refused(build(batch50, str(tiny_model_file), existing), words, watched)
    assert set(tmp_path.iterdir()) == before, "refused before anything was made (no folder, no file)"


@pytest.fixture(scope="module")
def mixed_dicom(tmp_path_factory, sample):
    """A folder holding two DICOM series (as archives often do) and a copy of the sample."""
    import shutil

    d = tmp_path_factory.mktemp("mixed")
    a = write_dicom_series(sample, d / "a", series_uid=UID_A)
    b = write_dicom_series(sample, d / "b", n_slices=8, series_uid=UID_B)
    mixed = d / "mixed"
    mixed.mkdir()
    for folder, tag in ((a, "a"), (b, "b")):
        for f in folder.iterdir():
            shutil.move(str(f), str(mixed / f"{tag}_{f.name}"))
        folder.rmdir()
    shutil.copy(sample.path, d / "sample.nii.gz")
    import nibabel as nib

    voxels = (np.random.default_rng(0).random((30, 30, 20)) * 100).astype(np.float32)
    sheared = np.eye(4)
    sheared[0, 1] = 0.5
    nib.save(nib.Nifti1Image(voxels, sheared), str(d / "sheared.nii.gz"))
    header = nib.Nifti1Image(voxels, np.eye(4)).header
    header["qform_code"], header["sform_code"], header["srow_z"] = 0, 1, [0, 0, 0, 0]  # a flattened axis
    nib.save(nib.Nifti1Image(voxels, None, header), str(d / "singular.nii.gz"))
    return d


UID_A = "1.2.826.0.1.3680043.2.1125.1"
UID_B = "1.2.826.0.1.3680043.2.1125.7"
SMALL_MEMORY = {"SSIMQUALITY_MEMORY_LIMIT_GB": "0.2"}

BAD_ARGS_MORE = [
    # (id, argv builder (folder, model, existing output), expected words, environment)
    ("score-dicom-mixed", lambda x, m, o: ["score", str(x / "mixed"), "--model", m], "holds 2 DICOM series", None),
    ("score-dicom-mixed-names-the-option", lambda x, m, o: ["score", str(x / "mixed"), "--model", m], "(--series UID", None),
    ("score-dicom-unknown-uid", lambda x, m, o: ["score", str(x / "mixed"), "--model", m, "--series", "1.2.3"],
     "no DICOM series with UID 1.2.3", None),
    ("corrupt-dicom-mixed", lambda x, m, o: ["corrupt", str(x / "mixed"), str(o.with_name("n.nii"))], "holds 2 DICOM series", None),
    ("iqm-dicom-mixed", lambda x, m, o: ["iqm", str(x / "mixed")], "holds 2 DICOM series", None),
    ("score-over-memory", lambda x, m, o: ["score", str(x / "sample.nii.gz"), "--model", m],
     "GB is allowed by SSIMQUALITY_MEMORY_LIMIT_GB. Raise SSIMQUALITY_MEMORY_LIMIT_GB", SMALL_MEMORY),
    ("corrupt-over-memory", lambda x, m, o: ["corrupt", str(x / "sample.nii.gz"), str(o.with_name("n.nii"))], "GB of memory",
     SMALL_MEMORY),
    ("iqm-over-memory", lambda x, m, o: ["iqm", str(x / "sample.nii.gz")], "GB of memory", SMALL_MEMORY),
    # Settings from the environment: checked before any work (a bad one refused every volume, one line each, or
    # was an "unexpected ValueError" once the model had loaded).
    ("score-memory-setting-not-a-number", lambda x, m, o: ["score", str(x / "sample.nii.gz"), "--model", m, "-o",
                                                           str(o.with_name("r.csv"))],
     "SSIMQUALITY_MEMORY_LIMIT_GB='4G' is not a positive number of gigabytes", {"SSIMQUALITY_MEMORY_LIMIT_GB": "4G"}),
    ("iqm-memory-setting-negative", lambda x, m, o: ["iqm", str(x / "sample.nii.gz")],
     "SSIMQUALITY_MEMORY_LIMIT_GB='-1' is not a positive", {"SSIMQUALITY_MEMORY_LIMIT_GB": "-1"}),
    ("score-save-every-not-a-number", lambda x, m, o: ["score", str(x / "sample.nii.gz"), "--model", m, "-o",
                                                       str(o.with_name("r.csv"))],
     "SSIMQUALITY_SAVE_EVERY_S='abc' is not a number of seconds", {"SSIMQUALITY_SAVE_EVERY_S": "abc"}),
    ("score-sheared", lambda x, m, o: ["score", str(x / "sheared.nii.gz"), "--model", m], "sheared or singular", None),
    ("corrupt-singular", lambda x, m, o: ["corrupt", str(x / "singular.nii.gz"), str(o.with_name("n.nii"))],
     "sheared or singular", None),
]


@pytest.mark.parametrize("case", BAD_ARGS_MORE, ids=[c[0] for c in BAD_ARGS_MORE])
def test_bad_input_table_dicom_memory(case, mixed_dicom, tiny_model_file, tmp_path):
    _, build, words, env = case
    existing = tmp_path / "existing.csv"
    existing.write_text("user data\n")
    watched = [p for p in mixed_dicom.rglob("*") if p.is_file()] + [existing]
    line = _assert_refused(build(mixed_dicom, str(tiny_model_file), existing), words, watched, env)
    if "DICOM" in words:
        assert UID_A in line and UID_B in line, "the message lists the series to choose from"
    assert not (tmp_path / "n.nii").exists() and not (tmp_path / "r.csv").exists(), "refused before writing"


def test_series_flag_picks_one_series(mixed_dicom, tiny_model_file, tmp_path):
    out = tmp_path / "r.csv"
    r = subprocess.run(_cmd() + ["score", str(mixed_dicom / "mixed"), "--model", str(tiny_model_file), "--series", UID_B,
                                 "-o", str(out), "--quiet"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert len(_rows(out)) == 8, "the 8-slice series B was scored"
    vol = tmp_path / "a.nii.gz"
    r = subprocess.run(_cmd() + ["corrupt", str(mixed_dicom / "mixed"), str(vol), "--series", UID_A, "--seed", "1",
                                 "--quiet"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    import nibabel as nib

    assert nib.load(str(vol)).shape[2] == 12, "the 12-slice series A was corrupted"


@pytest.mark.parametrize("unbuffered", ["", "1"])
def test_a_reader_that_goes_away_ends_the_run_quietly(sample_path, unbuffered):
    """`ssimquality score ... | head`: an 'unexpected BrokenPipeError ... report it' before; now the exit code
    of a program stopped by SIGPIPE, and nothing on stderr (with Python's output buffered or not)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = unbuffered
    proc = subprocess.Popen(_cmd() + ["score", str(sample_path), "--quiet", "--device", "cpu"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader has gone before the first line
    err = proc.communicate(timeout=600)[1].decode()
    assert proc.returncode == 141 and err.strip() == "", (proc.returncode, err)
