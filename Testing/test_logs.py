"""Quiet logs: with stderr not a terminal, no progress-bar fragments, one line per bad input, no ITK noise."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _cli(*args, env_extra=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2"}
    env.pop("SSIMQUALITY_PROGRESS", None)
    env.update(env_extra or {})
    r = subprocess.run([sys.executable, "-m", "SSIMQualityLib.cli", *args], cwd=ROOT, env=env,
                       capture_output=True, timeout=300)
    # Bytes decoded by hand: text mode would turn the bars' carriage returns into newlines.
    return subprocess.CompletedProcess(r.args, r.returncode, r.stdout.decode(), r.stderr.decode())


def test_bad_input_is_one_line_and_nothing_is_written(tmp_path):
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"\x1f\x8b not really gzip")
    out = tmp_path / "res.csv"
    r = _cli("score", str(bad), "-o", str(out), "--device", "cpu")
    assert r.returncode == 1
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ssimquality: error: ") and "broken.nii.gz" in lines[0], r.stderr
    assert "\r" not in r.stderr and "\x1b" not in r.stderr and "%|" not in r.stderr  # no bar fragments
    assert not out.exists() and not out.with_name("res.summary.csv").exists()
    assert "nothing was scored" in r.stdout


def test_no_bars_in_a_pipe_unless_asked(tmp_path, sample_path):
    quiet = _cli("score", str(sample_path), "-o", str(tmp_path / "a.csv"), "--device", "cpu")
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    shown = _cli("score", str(sample_path), "-o", str(tmp_path / "b.csv"), "--device", "cpu", "--progress")
    assert shown.returncode == 0 and "slice/s" in shown.stderr and "\r" in shown.stderr  # a bar was drawn
    forced = _cli("score", str(sample_path), "-o", str(tmp_path / "c.csv"), "--device", "cpu",
                  env_extra={"SSIMQUALITY_PROGRESS": "1"})
    assert "slice/s" in forced.stderr


def test_a_folder_that_is_not_dicom_gives_our_line_not_itks(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "readme.txt").write_text("not an image")
    r = _cli("score", str(folder), "--device", "cpu")
    assert r.returncode == 1
    assert len(r.stderr.splitlines()) == 1 and "notes" in r.stderr, r.stderr
    assert "GDCM" not in r.stderr and "WARNING" not in r.stderr
