"""`ssimquality score` and the Slicer CLI module (batch scoring)."""
import csv
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import write_dicom_series, write_nifti
from SSIMQualityLib.cli import main

ROOT = Path(__file__).resolve().parent.parent
CLI_DIR = ROOT / "SSIMQualityCLI"


@pytest.fixture(scope="module")
def archive(tmp_path_factory, sample_path, sample):
    """A folder: the sample, a corrupted copy, a DICOM series of the sample's first 12 slices."""
    d = tmp_path_factory.mktemp("archive")
    (d / "clean.nii.gz").write_bytes(sample_path.read_bytes())
    assert main(["corrupt", str(sample_path), str(d / "moved.nii.gz"), "--severity", "0.8", "--seed", "3",
                 "--quiet"]) == 0
    write_dicom_series(sample, d / "dicom_series")
    return d


def _run(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_score_folder_csv_json_and_report(archive, tmp_path, capsys, sample):
    csv_out, json_out, rep = tmp_path / "r.csv", tmp_path / "r.json", tmp_path / "report"
    code, out, err = _run(["score", archive, "-o", csv_out, "--report-dir", rep, "--quiet"], capsys)
    assert code == 0, err
    code, out, err = _run(["score", archive, "-o", json_out, "--quiet"], capsys)
    assert code == 0, err
    doc = json.loads(json_out.read_text(encoding="utf-8"))
    # With -o the per-volume lines go to the file; the screen gets the tally, naming the volumes to rescan.
    tally = [line for line in out.splitlines() if line.startswith("verdicts: ")]
    verdicts = [v["verdict"] for v in doc["volumes"]]
    assert len(tally) == 1 and sum(int(w.split()[0]) for w in tally[0][10:].split(", ") if w[0].isdigit()) == 3
    for v in set(verdicts):
        assert f"{verdicts.count(v)} {v}" in tally[0]
    rescan = [Path(v["file"]).name for v in doc["volumes"] if v["verdict"] == "rescan"]
    assert all(name in tally[0] for name in rescan)
    rows = list(csv.DictReader(csv_out.open(encoding="utf-8")))
    by_file = {}
    for r in rows:
        by_file.setdefault(Path(r["file"]).name, []).append(r)
    assert set(by_file) == {"clean.nii.gz", "moved.nii.gz", "dicom_series"}
    assert len(by_file["clean.nii.gz"]) == sample.shape[0]
    assert len(by_file["dicom_series"]) == 12
    assert set(rows[0]) >= {"file", "axis", "slice", "predicted_ssim", "clinical_class", "class3", "class5", "class10",
                            "foreground"}
    summary = {Path(r["file"]).name: r for r in csv.DictReader((tmp_path / "r.summary.csv").open(encoding="utf-8"))}
    assert float(summary["moved.nii.gz"]["mean_predicted_ssim"]) < float(summary["clean.nii.gz"]["mean_predicted_ssim"])
    doc = json.loads(json_out.read_text(encoding="utf-8"))
    for vol in doc["volumes"]:
        name = Path(vol["file"]).name
        assert vol["mean_predicted_ssim"] == pytest.approx(float(summary[name]["mean_predicted_ssim"]), abs=1e-6)
        csv_vals = [float(r["predicted_ssim"]) if r["predicted_ssim"] else None for r in by_file[name]]
        json_vals = [r["predicted_ssim"] for r in vol["slice_scores"]]
        assert len(csv_vals) == len(json_vals)
        for a, b in zip(csv_vals, json_vals):
            assert (a is None and b is None) or a == pytest.approx(b, abs=1e-6)
    pngs = sorted(p.name for p in rep.glob("*.png"))
    assert len(pngs) == 3
    index = (rep / "index.html").read_text(encoding="utf-8")
    assert all(p in index for p in pngs)
    # worst first: the corrupted copy is listed before the clean one
    assert index.index("moved.nii.gz") < index.index("clean.nii.gz")


def test_a_resumed_run_continues_its_report(archive, tmp_path, capsys, sample):
    """--resume with --report-dir keeps the earlier figures and lists every volume of the results; two volumes of
    one name (in different folders) get figures of their own; a new run into the report needs --force."""
    from SSIMQualityLib.volumes import read_volume

    scans, rep, out = tmp_path / "scans", tmp_path / "rep", tmp_path / "r.csv"
    for sub, source in (("s1", sample), ("s2", read_volume(archive / "moved.nii.gz"))):
        (scans / sub).mkdir(parents=True)
        write_nifti(scans / sub / "t1.nii.gz", source.array[30:42].T)  # 12 slices through the head
    (scans / "s2").rename(tmp_path / "later")  # s2 arrives after the first run
    code, _, err = _run(["score", scans, "--recursive", "-o", out, "--report-dir", rep, "--quiet"], capsys)
    assert code == 0, err
    first = (rep / "0000_t1.png").read_bytes()
    (tmp_path / "later").rename(scans / "s2")
    code, _, err = _run(["score", scans, "--recursive", "-o", tmp_path / "new.csv", "--report-dir", rep, "--quiet"],
                        capsys)
    assert code == 1 and "index.html" in err and "--force" in err  # another run's report is not replaced silently
    code, out_text, err = _run(["score", scans, "--recursive", "-o", out, "--report-dir", rep, "--quiet", "--resume"],
                               capsys)
    assert code == 0, err
    assert "1 to score" in out_text
    assert sorted(p.name for p in rep.glob("*.png")) == ["0000_t1.png", "0001_t1.png"]
    assert (rep / "0000_t1.png").read_bytes() == first  # the earlier figure kept, not overwritten by s2's
    index = (rep / "index.html").read_text(encoding="utf-8")
    assert index.count("<tr><td>") == 2 and "0000_t1.png" in index and "0001_t1.png" in index
    assert index.index("s2/t1.nii.gz") < index.index("s1/t1.nii.gz")  # worst first: the moved one
    entries = json.loads((rep / "index.json").read_text(encoding="utf-8"))
    assert {Path(e["file"]).parent.name: e["png"] for e in entries} == {"s1": "0000_t1.png", "s2": "0001_t1.png"}
    # A report whose entries were lost still lists every volume of the results; the new figure is numbered on.
    (rep / "index.json").unlink()
    write_nifti(scans / "s1" / "t2.nii.gz", sample.array[34:40].T)
    code, _, err = _run(["score", scans, "--recursive", "-o", out, "--report-dir", rep, "--quiet", "--resume"], capsys)
    assert code == 0, err
    index = (rep / "index.html").read_text(encoding="utf-8")
    assert index.count("<tr><td>") == 3 and index.count("no figure here") == 2 and "0002_t2.png" in index
    # An unreadable index is one line naming it, before any work.
    (rep / "index.json").write_text("{not json", encoding="utf-8")
    write_nifti(scans / "s1" / "t3.nii.gz", sample.array[34:40].T)
    code, _, err = _run(["score", scans, "--recursive", "-o", out, "--report-dir", rep, "--quiet", "--resume"], capsys)
    assert code == 1 and "index.json" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (rep / "0003_t3.png").exists()


def test_a_report_lists_the_results_own_scores_and_only_figures_that_are_there(tmp_path):
    """An index older than the results (a run stopped before writing it, then a --force run) must not lend its
    scores to them: a carried line is the results' summary, with the index's figure only if the file is there;
    a new run replaces an earlier run's index, and the figures it named, when it writes its own (not before: a
    run that stops first or scores nothing leaves the earlier report whole)."""
    from SSIMQualityLib.report import INDEX_DATA, ReportFolder

    old = [{"file": "a.nii", "mean_predicted_ssim": 0.95, "min_predicted_ssim": 0.9, "verdict": "good", "png": "0000_a.png"},
           {"file": "b.nii", "mean_predicted_ssim": 0.97, "min_predicted_ssim": 0.9, "verdict": "good", "png": "0001_b.png"}]
    (tmp_path / INDEX_DATA).write_text(json.dumps(old), encoding="utf-8")
    (tmp_path / "0000_a.png").write_bytes(b"png")
    now = [{"file": "a.nii", "mean_predicted_ssim": "0.41", "min_predicted_ssim": "0.30", "verdict": "rescan"},
           {"file": "b.nii", "mean_predicted_ssim": "0.90", "min_predicted_ssim": "0.80", "verdict": "good"}]
    report = ReportFolder(tmp_path, carried=now)
    assert [(e["verdict"], e["mean_predicted_ssim"], e["png"]) for e in report.entries] == [
        ("rescan", "0.41", "0000_a.png"), ("good", "0.90", None)]
    assert report.figure_path("c.nii").name == "0001_c.png"
    index = report.write().read_text(encoding="utf-8")
    assert "0.410" in index and "0.950" not in index and index.count("no figure here") == 1
    (tmp_path / "0001_c.png").write_bytes(b"png")  # the figure drawn for c, listed below
    report.entries.append({"file": "c.nii", "mean_predicted_ssim": 0.8, "min_predicted_ssim": 0.7,
                           "verdict": "sufficient", "png": "0001_c.png"})
    report.write()
    fresh = ReportFolder(tmp_path)  # a new run (not resumed): nothing goes until it writes
    assert (tmp_path / INDEX_DATA).exists() and (tmp_path / "0000_a.png").exists()
    assert fresh.figure_path("d.nii").name == "0000_d.png"  # the earlier run's numbers are not continued
    fresh.entries.append({"file": "d.nii", "mean_predicted_ssim": 0.9, "min_predicted_ssim": 0.9,
                          "verdict": "good", "png": None})
    fresh.write()
    assert [e["file"] for e in json.loads((tmp_path / INDEX_DATA).read_text(encoding="utf-8"))] == ["d.nii"]
    assert not (tmp_path / "0000_a.png").exists() and not (tmp_path / "0001_c.png").exists()


def test_bad_files_are_reported_and_skipped(archive, tmp_path, capsys, sample_path):
    d = tmp_path / "mixed"
    d.mkdir()
    (d / "good.nii.gz").write_bytes(sample_path.read_bytes())
    data = sample_path.read_bytes()
    (d / "truncated.nii.gz").write_bytes(data[: len(data) // 2])
    (d / "renamed.nii").write_text("name,age\nA,3\n" * 30)
    write_nifti(d / "fourd.nii.gz", np.random.rand(30, 30, 20, 3).astype(np.float32))
    (d / "empty.nii.gz").write_bytes(b"")
    out = tmp_path / "mixed.csv"
    code, stdout, err = _run(["score", d, "-o", out, "--quiet"], capsys)
    assert code != 0
    assert "Traceback" not in err
    lines = [l for l in err.strip().splitlines() if l]
    assert len(lines) == 4, err
    for name, words in [("truncated.nii.gz", "truncated"), ("renamed.nii", "not a readable image"),
                        ("fourd.nii.gz", "4-D"), ("empty.nii.gz", "empty")]:
        line = [l for l in lines if name in l]
        assert len(line) == 1 and words in line[0], (name, lines)
    files = {Path(r["file"]).name for r in csv.DictReader(out.open(encoding="utf-8"))}
    assert files == {"good.nii.gz"}
    assert "1 of 5 volumes scored; 4 could not be scored" in stdout


def test_existing_output_refused_before_work_and_atomic(archive, tmp_path, capsys):
    out = tmp_path / "r.csv"
    out.write_text("precious\n")
    before = hashlib.sha256(out.read_bytes()).hexdigest()
    code, _, err = _run(["score", archive, "-o", out, "--quiet"], capsys)
    assert code != 0 and "exists already" in err and "--force" in err
    assert hashlib.sha256(out.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.csv"], "refused before anything was written"
    code, _, err = _run(["score", archive / "clean.nii.gz", "-o", out, "--force", "--quiet"], capsys)
    assert code == 0 and out.read_text(encoding="utf-8") != "precious\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.csv", "r.csv.record.json", "r.summary.csv"], \
        "no temporary files left"
    code, _, err = _run(["score", archive, "-o", tmp_path / "r.xlsx", "--quiet"], capsys)
    assert code != 0 and "unknown results format" in err


def _xml_params():
    import ctk_cli

    module = ctk_cli.CLIModule(str(CLI_DIR / "SSIMQualityCLI.xml"))
    return module, list(module.parameters())


def test_cli_xml_parses_and_follows_our_rules():
    import ctk_cli

    module, params = _xml_params()
    assert module.category == "Quality Assurance" and module.title and module.description and module.contributor
    assert {p.name for p in params} == {"inputVolume", "outputTable", "inputFolder", "summaryTable", "model", "device",
                                        "batchSize", "fast"}
    for p in params:
        assert p.label and p.description, p.name
        assert p.index is not None or p.flag or p.longflag, p.name
        if p.typ in ("image", "file", "table", "geometry", "transform"):
            assert p.channel in ("input", "output"), p.name
    parser = ctk_cli.CLIArgumentParser(str(CLI_DIR / "SSIMQualityCLI.xml"))
    ns = parser.parse_args(["in.nrrd", "out.tsv", "--device", "cpu", "--batch-size", "8"])
    assert ns.inputVolume == "in.nrrd" and ns.batchSize == 8 and ns.device == "cpu"
    kinds = {p.name: p.typ for p in params}
    assert kinds["inputFolder"] == "directory" and kinds["summaryTable"] == "table"


def test_cli_runs_like_slicer_runs_it(tmp_path, sample_path, sample):
    out = tmp_path / "scores.tsv"
    # Slicer passes booleans bare (--fast), positional files last.
    cmd = [sys.executable, str(CLI_DIR / "SSIMQualityCLI.py"), "--device", "cpu", "--batch-size", "16", "--fast",
           str(sample_path), str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ""})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("<filter-start>") and lines[-1].startswith("<filter-end>")
    progress = [float(l[len("<filter-progress>"):-len("</filter-progress>")]) for l in lines
                if l.startswith("<filter-progress>")]
    assert progress == sorted(progress) and progress[-1] == 1.0 and len(progress) > 3
    assert any(l.startswith("<filter-progress-text>") for l in lines)
    assert any(l.startswith("<filter-comment>") for l in lines)
    # The table is what Slicer's table storage node reads.
    sys.path.insert(0, str(ROOT / "Testing"))
    from slicer_scene import make_scene
    import slicer

    make_scene()
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode")
    storage = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableStorageNode")
    storage.SetFileName(str(out))
    assert storage.ReadData(node)
    assert node.GetNumberOfRows() == sample.shape[0]
    assert node.GetColumnName(2) == "predicted_ssim"
    # typed by the schema beside it: without one every column was text (no plot, no numeric sort)
    types = {name: node.GetTable().GetColumnByName(name).GetClassName() for name in ("slice", "predicted_ssim")}
    assert types == {"slice": "vtkTypeInt32Array", "predicted_ssim": "vtkTypeFloat64Array"}, types


def test_cli_bad_input_one_line(tmp_path):
    bad = tmp_path / "x.nii"
    bad.write_text("nope")
    r = subprocess.run([sys.executable, str(CLI_DIR / "SSIMQualityCLI.py"), str(bad), str(tmp_path / "o.tsv")],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and str(bad) in r.stderr


def test_cli_module_scores_a_folder(tmp_path, sample_path):
    """Folder mode, as Slicer runs it: one summary row per volume; a bad file is reported, the rest kept."""
    import csv
    import shutil

    import nibabel

    folder = tmp_path / "series"
    folder.mkdir()
    shutil.copy(Path(nibabel.__file__).parent / "tests" / "data" / "anatomical.nii", folder / "a.nii")
    shutil.copy(sample_path, folder / "b.nii.gz")
    slices, summary = tmp_path / "slices.tsv", tmp_path / "volumes.tsv"
    cmd = [sys.executable, str(CLI_DIR / "SSIMQualityCLI.py"), "--inputFolder", str(folder), "--summaryTable",
           str(summary), "--device", "cpu", str(slices)]
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ""})
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(summary.open(encoding="utf-8"), delimiter="\t"))
    assert [Path(x["file"]).name for x in rows] == ["a.nii", "b.nii.gz"]
    assert all(0 < float(x["mean_predicted_ssim"]) <= 1.05 and x["verdict"] for x in rows)
    per_slice = list(csv.DictReader(slices.open(encoding="utf-8"), delimiter="\t"))
    assert {Path(x["file"]).name for x in per_slice} == {"a.nii", "b.nii.gz"}
    progress = [float(l[len("<filter-progress>"):-len("</filter-progress>")]) for l in r.stdout.splitlines()
                if l.startswith("<filter-progress>")]
    assert progress == sorted(progress) and progress[-1] == 1.0 and len(progress) >= 4  # over volumes
    # A bad file among good ones: exit 0, or Slicer would not read the tables back at all (it loads a CLI
    # module's outputs only after status 0; the good volumes were lost with the bad one). The bad file is one
    # line on stderr and a "not scored" row.
    (folder / "c_bad.nii.gz").write_bytes(b"broken")
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ""})
    assert r.returncode == 0
    assert len(r.stderr.strip().splitlines()) == 1 and "c_bad.nii.gz" in r.stderr
    rows = list(csv.DictReader(summary.open(encoding="utf-8"), delimiter="\t"))
    assert [(Path(x["file"]).name, x["verdict"] == "not scored") for x in rows] == [
        ("a.nii", False), ("b.nii.gz", False), ("c_bad.nii.gz", True)]
    assert "2 of 3 volumes scored; 1 could not be" in r.stdout
    # Nothing scored: that is an error.
    only_bad = tmp_path / "bad_only"
    only_bad.mkdir()
    (only_bad / "c_bad.nii.gz").write_bytes(b"broken")
    r = subprocess.run([*cmd[:3], str(only_bad), *cmd[4:]], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": ""})
    assert r.returncode == 1 and "c_bad.nii.gz" in r.stderr
    # One volume: its summary row too (--summaryTable was ignored outside folder mode).
    one = tmp_path / "one.tsv"
    r = subprocess.run([sys.executable, str(CLI_DIR / "SSIMQualityCLI.py"), "--summaryTable", str(one), "--device",
                        "cpu", str(folder / "a.nii"), str(tmp_path / "a_slices.tsv")], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": ""})
    assert r.returncode == 0, r.stderr
    (row,) = list(csv.DictReader(one.open(encoding="utf-8"), delimiter="\t"))
    assert Path(row["file"]).name == "a.nii" and row["verdict"] == rows[0]["verdict"]


def _masked_head_with_overshoot(sample):
    """The sample on a zero background (its head masked, holes filled), and the same with a quarter of the air
    slightly negative (up to 3 % of its p99.5): a resampled template's interpolation overshoot."""
    from scipy import ndimage as ndi

    a = np.asarray(sample.array, np.float32)
    top = np.percentile(a, 99.5)
    mask = np.stack([ndi.binary_fill_holes(s) for s in ndi.binary_opening(a > 0.05 * top, iterations=2)])
    head = np.where(mask, a, 0).astype(np.float32)
    rng = np.random.default_rng(0)
    air = ~mask & (rng.random(a.shape) < 0.25)
    over = head.copy()
    over[air] = -rng.uniform(0, 0.03 * top, int(air.sum()))
    return head, over


def test_overshoot_scored_as_its_magnitude_signed_volume_warned(sample, tmp_path, capsys):
    """Interpolation overshoot is not what the network saw in training: the volume is scored as its magnitude
    (exactly the masked head's scores; without the rule the overshoot moves them), the caller's array untouched.
    Signed intensities are scored as they are, with one warning line naming the file."""
    from SSIMQualityLib.models import load_bundled_model
    from SSIMQualityLib.scoring import score_array

    head, over = _masked_head_with_overshoot(sample)
    model = load_bundled_model()
    kept = over.copy()
    base, got = score_array(model, head, sample.spacing), score_array(model, over, sample.spacing)
    np.testing.assert_array_equal(got.predicted, base.predicted)
    np.testing.assert_array_equal(over, kept)
    assert got.signed_share == 0 and got.warning("x.nii") is None
    zscored = (head - head.mean()) / head.std()
    write_nifti(tmp_path / "zscored.nii.gz", zscored, sample.spacing)
    write_nifti(tmp_path / "overshoot.nii.gz", over, sample.spacing)
    code, out, err = _run(["score", tmp_path / "zscored.nii.gz", tmp_path / "overshoot.nii.gz", "--quiet"], capsys)
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "zscored.nii.gz" in warnings[0] and "magnitude" in warnings[0], err
    assert "overshoot.nii.gz: " in out and "Traceback" not in err
    # From Python the same volume raises a warning the caller sees (it was said only by .warning(name)), as does
    # corrupting it (negatives set to 0 without a word); a magnitude image with overshoot raises none.
    import warnings as py_warnings

    from SSIMQualityLib.corruption import corrupt_volume
    from SSIMQualityLib.slices import SignedIntensityWarning

    with pytest.warns(SignedIntensityWarning, match="not reliable: score the magnitude image"):
        score_array(model, zscored[30:34], sample.spacing)
    with pytest.warns(SignedIntensityWarning, match="corrupt the magnitude image instead"):
        corrupt_volume(zscored[30:34], 0, severity=0.0, seed=0)
    with py_warnings.catch_warnings():
        py_warnings.simplefilter("error")
        score_array(model, over[30:34], sample.spacing)
        corrupt_volume(over[30:34], 0, severity=0.0, seed=0)


def test_what_is_not_a_volume_is_refused_in_one_line_saying_what_to_pass(sample):
    """A Volume, a file name or the model in the volume's place read "expected a 3-D volume, got 0-D"; an empty
    axis was an IndexError from numpy; score_volumes passed NaN patches and infinities on unchecked."""
    from SSIMQualityLib.corruption import corrupt_volume
    from SSIMQualityLib.errors import BadParameterError, SSIMQualityError, UnsupportedImageError
    from SSIMQualityLib.models import build_model
    from SSIMQualityLib.scoring import score_array, score_volumes

    model = build_model("resnet18", 32).eval()
    for wrong, words in ((sample, "Pass vol.array and vol.spacing"), ("scan.nii.gz", "Read it first"),
                         (model, "The model comes first")):
        with pytest.raises(BadParameterError, match=words):
            score_array(model, wrong, sample.spacing)
    with pytest.raises(UnsupportedImageError, match="no voxels"):
        score_array(model, np.zeros((0, 40, 40)), sample.spacing)
    patched = sample.array[30:34].astype(np.float32)
    patched[:, :10, :10] = np.nan
    inf = sample.array[30:34].astype(np.float32)
    inf[0, 0, 0] = np.inf
    out = dict(score_volumes([("nan", patched, sample.spacing, None), ("inf", inf, sample.spacing, None),
                              ("good", sample.array[30:34], sample.spacing, None)], model))
    assert isinstance(out["nan"], UnsupportedImageError) and "NaN or infinite" in out["nan"].one_line()
    assert isinstance(out["inf"], UnsupportedImageError)
    assert np.isfinite(out["good"].predicted[out["good"].foreground]).all()  # the others go on
    huge = sample.array[30:34].astype(np.float64) * 1e305  # finite, beyond float32: a RuntimeError in torch
    for call in (lambda: score_array(model, huge, sample.spacing), lambda: corrupt_volume(huge, 0, seed=0)):
        with pytest.raises(UnsupportedImageError, match="beyond what float32 holds"):
            call()
    # and what failed deep inside torch, numpy or range(): one line each
    from SSIMQualityLib.scoring import predict_slices
    from SSIMQualityLib.volumes import read_volume

    for call, words in ((lambda: score_array(model, sample.array[30:34], sample.spacing, batch_size=2.5),
                         "batch_size must be a whole number of 1 or more, got 2.5"),
                        (lambda: score_array(model, sample.array[30:34], sample.spacing, device="mps"),
                         "unknown device 'mps'"),
                        (lambda: score_array(model, sample.array[30:34], sample.spacing, direction=(1, 0, 0)),
                         "9 numbers"),
                        (lambda: predict_slices(model, sample.array[30]), "For one slice pass slice"),
                        (lambda: read_volume(sample.path, frame="1"), "frame must be a whole number")):
        with pytest.raises(SSIMQualityError, match=words):
            call()


def test_a_slab_is_scored_across_its_thin_axis_and_arrays_are_checked_as_files(sample, tmp_path, capsys):
    """One sagittal slice (or a slab of four) stored in an axial file was scored as 80 strips one voxel wide,
    with a verdict: now the default axis gives way to the thin one, and an axis that would cut such strips is
    refused in one line naming the axis to use.  ``score_array`` checks an array as a file is checked."""
    from SSIMQualityLib.errors import UnsupportedImageError
    from SSIMQualityLib.models import load_bundled_model
    from SSIMQualityLib.scoring import score_array

    k, j, i = sample.shape
    for width in (1, 4):
        slab = sample.array[:, :, i // 2:i // 2 + width]  # (k, j, width): slices of k x j along the file's i axis
        write_nifti(tmp_path / f"slab{width}.nii.gz", slab.T, sample.spacing)
        code, out, err = _run(["score", tmp_path / f"slab{width}.nii.gz"], capsys)
        assert code == 0, err
        assert f"slab{width}.nii.gz: {width} slice{'s' if width > 1 else ''} scored" in out and "-> good" in out
        code, out, err = _run(["score", tmp_path / f"slab{width}.nii.gz", "--axis", "0"], capsys)
        lines = err.strip().splitlines()
        assert code == 1 and len(lines) == 1 and "Traceback" not in err
        assert f"slab{width}.nii.gz: slices along axis 0 are {j} x {width} voxels" in lines[0] and "--axis 2" in lines[0]
    model = load_bundled_model()
    nan = sample.array.astype(np.float32)
    nan[0, 50, 50] = np.nan  # scored as "no foreground" on every slice before
    for bad, words in ((nan, "1 of"), (np.ones((8, 8, 8), np.float32), "too small"), (np.arange(10.0), "3-D")):
        with pytest.raises(UnsupportedImageError, match=words):
            score_array(model, bad, sample.spacing)
    assert score_array(model, sample.array[:, :, i // 2:i // 2 + 1], sample.spacing).axis == 2
    # Slices a caller chose (evaluate --real's crops into the head, some under 16 voxels) are scored as given.
    from SSIMQualityLib.scoring import predict_slices

    crops = np.ascontiguousarray(sample.array[40:42, 60:73, 50:67])
    assert np.isfinite(predict_slices(model, crops)).sum() == 2
    # A device that is not there: the project's one line from every function that takes a device, not torch's
    # error from deep inside the first copy to it.
    import torch

    from SSIMQualityLib.corruption import corrupt_volume
    from SSIMQualityLib.errors import SSIMQualityError

    calls = [lambda: score_array(model, sample.array, sample.spacing, device="gpu"),
             lambda: corrupt_volume(sample.array[:4], 0, device="gpu"), lambda: load_bundled_model(device="gpu")]
    words = ["unknown device 'gpu'"] * 3
    if not torch.cuda.is_available():
        calls += [lambda: score_array(model, sample.array, sample.spacing, device="cuda"),
                  lambda: corrupt_volume(sample.array[:4], 0, device=torch.device("cuda")),
                  lambda: load_bundled_model(device="cuda")]
        words += ["no GPU is available"] * 3
    # Other misuse of the library's two entry points: one line each, before any work.
    calls += [lambda: score_array(model, sample.array, sample.spacing, batch_size=-1),
              lambda: score_array("resnet18-synthetic-v12", sample.array, sample.spacing),
              lambda: corrupt_volume(nan[:4], 0), lambda: corrupt_volume(sample.array[30:34], 3),
              lambda: corrupt_volume(sample.array[30:34], 1), lambda: corrupt_volume(sample.array[30:34], 0, batch_size=0),
              lambda: score_array(model, sample.array, (1.0, 1.0)),  # were accepted, or numpy's "convert 'a'"
              lambda: corrupt_volume(sample.array[30:34], None, spacing="abc"),
              lambda: corrupt_volume(sample.array[30:34], 0, method="k-space"),  # a ValueError before
              lambda: corrupt_volume(sample.array[30:34], 0, severity=2)]
    words += ["batch_size must be a whole number of 1 or more", "must be a loaded network", "NaN", "axis must be 0, 1, 2",
              "slices along axis 1 are 4 x", "batch_size must be a whole number of 1 or more"]
    words += ["spacing must be three positive voxel sizes"] * 2 + ["unknown method 'k-space'", "severity must be in"]
    for call, word in zip(calls, words):
        with pytest.raises(SSIMQualityError, match=word):
            call()
    # axis None: the acquisition axis from the spacing, as score picks it (unit spacing was assumed before).
    assert corrupt_volume(sample.array[30:34].T, None, spacing=sample.spacing[::-1], seed=1).axis == 2
    listed = corrupt_volume(sample.array[30:34].tolist(), 0, seed=1)  # a nested list is an array too
    np.testing.assert_array_equal(listed.ssim, corrupt_volume(sample.array[30:34], 0, seed=1).ssim)


def test_iqm_goes_on_past_odd_files_and_debug_follows_the_command(sample_path, tmp_path, capsys):
    """A complex-valued and a 5-D file are one line each, naming the file and what is wrong, and the batch's good
    volume is still measured; `--debug` after the command shows the traceback as it does before it."""
    d = tmp_path / "odd"
    d.mkdir()
    (d / "good.nii.gz").write_bytes(sample_path.read_bytes())
    rng = np.random.default_rng(0)
    write_nifti(d / "complex.nii.gz", (rng.random((20, 20, 10)) + 1j * rng.random((20, 20, 10))).astype(np.complex64))
    write_nifti(d / "fived.nii.gz", rng.random((20, 20, 10, 2, 2)).astype(np.float32))
    out = tmp_path / "iqm.csv"
    code, _, err = _run(["iqm", d, "-o", out, "--frame", 1, "--quiet"], capsys)
    assert code != 0 and "Traceback" not in err
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 2, err
    assert any("complex.nii.gz" in l and "complex numbers" in l and "magnitude" in l for l in lines), lines
    assert any("fived.nii.gz" in l and "5-D" in l and "split it into 3-d volumes" in l.lower() for l in lines), lines
    assert [Path(r["file"]).name for r in csv.DictReader(out.open(encoding="utf-8"))] == ["good.nii.gz"]
    from SSIMQualityLib.errors import SSIMQualityError

    with pytest.raises(SSIMQualityError, match="unknown results format"):
        main(["score", str(d / "good.nii.gz"), "-o", str(tmp_path / "r.txt"), "--debug"])


def test_evaluate_leaves_no_folder_behind_when_its_data_is_bad(tmp_path, capsys):
    out = tmp_path / "ev"
    code, _, err = _run(["evaluate", "--data", tmp_path / "missing.nii.gz", "-n", 4, "--out", out, "--quiet"], capsys)
    assert code != 0 and "missing.nii.gz: file does not exist" in err
    assert not out.exists()
    out.mkdir()  # a folder the user made stays
    code, _, err = _run(["evaluate", "--data", tmp_path / "missing.nii.gz", "-n", 4, "--out", out, "--quiet"], capsys)
    assert code != 0 and out.is_dir()


def test_subfolders_left_out_are_named(sample_path, tmp_path, capsys):
    """Without --recursive a folder's sub-folders of image files are not scored, and the user is told which."""
    d = tmp_path / "archive"
    (d / "site1").mkdir(parents=True)
    (d / "top.nii.gz").write_bytes(sample_path.read_bytes())
    (d / "site1" / "deep.nii.gz").write_bytes(sample_path.read_bytes())
    code, out, err = _run(["iqm", d, "--quiet"], capsys)
    assert code == 0 and "top.nii.gz" in out and "deep.nii.gz" not in out
    assert [l for l in err.splitlines() if l.strip()] == [
        f"note: 1 sub-folder with image files not searched ({d / 'site1'}); add --recursive to include them"]
    code, out, err = _run(["iqm", d, "--recursive", "--quiet"], capsys)
    assert code == 0 and "deep.nii.gz" in out and not err.strip()
    # A BIDS root (images two levels down, none at the top) is told the same, not only the DICOM sentence.
    bids = tmp_path / "bids"
    for sub in ("sub-01", "sub-02"):
        (bids / sub / "anat").mkdir(parents=True)
        (bids / sub / "anat" / f"{sub}_T1w.nii.gz").write_bytes(sample_path.read_bytes())
    (bids / "dataset_description.json").write_text("{}", encoding="utf-8")
    code, out, err = _run(["score", bids, "--quiet"], capsys)
    assert code == 1
    assert (f"note: 2 sub-folders with image files not searched ({bids / 'sub-01'}, {bids / 'sub-02'}); add "
            "--recursive to include them") in err


def test_cli_module_fast_mode_says_when_it_changes_nothing(tmp_path):
    """The XML promises "faster"; on a CPU without native bfloat16 it ran float32 without a word."""
    import nibabel

    from SSIMQualityLib.precision import BFLOAT16, fast_precision

    scan = Path(nibabel.__file__).parent / "tests" / "data" / "anatomical.nii"
    r = subprocess.run([sys.executable, str(CLI_DIR / "SSIMQualityCLI.py"), "--fast", "--device", "cpu", str(scan),
                        str(tmp_path / "s.tsv")], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ""})
    assert r.returncode == 0, r.stderr
    said = [line for line in r.stderr.splitlines() if "fast mode" in line]
    if fast_precision("cpu") == BFLOAT16:
        assert said == []
    else:
        assert len(said) == 1 and said[0].startswith("warning: fast mode: keeping float32")


def test_noise_and_a_shuffled_scan_are_warned_not_silently_scored(sample, tmp_path, capsys):
    """White noise got "good" and a voxel-shuffled copy of the sample "rescan", without a word: the foreground
    test is relative to each slice's own range, so every noise slice is "head".  Now they are flagged in one
    line naming the file (the commands, the Slicer CLI module) or as a NoiseLikeWarning (Python); the sample
    and its motion-corrupted copy are not."""
    import warnings as py_warnings

    from SSIMQualityLib.corruption import corrupt_volume
    from SSIMQualityLib.models import load_bundled_model
    from SSIMQualityLib.scoring import score_array
    from SSIMQualityLib.slices import NoiseLikeWarning
    from SSIMQualityLib.vocabulary import MIN_NEIGHBOUR_CORRELATION

    rng = np.random.default_rng(0)
    noise = rng.normal(100.0, 20.0, sample.array.shape).clip(0).astype(np.float32)
    shuffled = rng.permutation(sample.array.ravel()).reshape(sample.array.shape)
    moved = corrupt_volume(sample.array, None, "kspace", 1.0, seed=1, spacing=sample.spacing).array
    for name, a in (("noise", noise), ("shuffled", shuffled), ("moved", moved)):
        write_nifti(tmp_path / f"{name}.nii.gz", a, sample.spacing)
    code, out, err = _run(["score", tmp_path / "noise.nii.gz", tmp_path / "shuffled.nii.gz",
                           tmp_path / "moved.nii.gz", "--quiet"], capsys)
    assert code == 0, err
    warned = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warned) == 2 and "Traceback" not in err, err
    assert "noise.nii.gz: neighbouring voxels are hardly correlated" in warned[0]
    assert "shuffled.nii.gz: neighbouring voxels are hardly correlated" in warned[1]
    model = load_bundled_model()
    with pytest.warns(NoiseLikeWarning, match="not an image"):
        got = score_array(model, noise[30:34], sample.spacing)
    assert abs(got.neighbour_correlation) < 0.05 and got.summary()["slices_scored"] == 4  # scored, flagged
    with py_warnings.catch_warnings():
        py_warnings.simplefilter("error")
        for a in (sample.array, moved):
            assert score_array(model, a, sample.spacing).neighbour_correlation > 3 * MIN_NEIGHBOUR_CORRELATION


def test_the_tables_say_what_the_screen_said(sample, tmp_path, capsys):
    """A mask or noise graded "good" was flagged on stderr only: the CSV, JSON and report showed a clean
    "good".  A file that could not be scored was missing from the summary.  Now the summary's ``note`` holds the
    warning (or why a file was not scored), a --resume retries the "not scored" files and keeps the notes, and
    its carried entries hold numbers, not text ("0.94" beside 0.94 in index.json)."""
    scans = tmp_path / "scans"
    scans.mkdir()
    labels = np.digitize(sample.array, np.percentile(sample.array, [50, 70, 90])).astype(np.uint8)
    write_nifti(scans / "mask.nii.gz", labels[30:40].T, sample.spacing)
    write_nifti(scans / "t1.nii.gz", sample.array[30:40].T, sample.spacing)
    (scans / "broken.nii.gz").write_bytes(b"not a volume")
    out, rep = tmp_path / "r.csv", tmp_path / "rep"
    code, _, err = _run(["score", scans, "-o", out, "--report-dir", rep, "--quiet"], capsys)
    assert code == 1, err  # one file failed
    with open(tmp_path / "r.summary.csv", encoding="utf-8") as fh:
        rows = {Path(r["file"]).name: r for r in csv.DictReader(fh)}
    assert set(rows) == {"mask.nii.gz", "t1.nii.gz", "broken.nii.gz"}
    assert rows["mask.nii.gz"]["note"].startswith("the voxels take only 4 distinct values")
    assert rows["t1.nii.gz"]["note"] == "" and rows["t1.nii.gz"]["verdict"] == "good"
    assert rows["broken.nii.gz"]["verdict"] == "not scored" and rows["broken.nii.gz"]["note"]
    assert "distinct values" in (rep / "index.html").read_text(encoding="utf-8")
    code, _, err = _run(["score", scans, "-o", tmp_path / "r.json", "--quiet"], capsys)
    doc = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert {Path(v["file"]).name: bool(v["note"]) for v in doc["volumes"]} == {"mask.nii.gz": True, "t1.nii.gz": False}
    # Fixed, then resumed: the broken file is tried again, the others carried with their notes and numbers.
    write_nifti(scans / "broken.nii.gz", sample.array[40:46].T, sample.spacing)
    code, text, err = _run(["score", scans, "-o", out, "--report-dir", rep, "--quiet", "--resume"], capsys)
    assert code == 0 and "2 volumes already in" in text and "1 to score" in text, (text, err)
    with open(tmp_path / "r.summary.csv", encoding="utf-8") as fh:
        rows = {Path(r["file"]).name: r for r in csv.DictReader(fh)}
    assert rows["broken.nii.gz"]["verdict"] != "not scored" and rows["mask.nii.gz"]["note"]
    entries = json.loads((rep / "index.json").read_text(encoding="utf-8"))
    assert all(isinstance(e["mean_predicted_ssim"], float) and isinstance(e["slices"], int) for e in entries)


def test_resume_scores_again_a_volume_replaced_since_and_keeps_one_gone(archive, sample, tmp_path, capsys):
    """A scan replaced after the run kept its old verdict on --resume ("2 of 2 volumes scored", 0 were); one
    deleted since was listed without a word."""
    from SSIMQualityLib.volumes import read_volume

    scans, out = tmp_path / "scans", tmp_path / "r.csv"
    scans.mkdir()
    for name in ("a", "b", "c"):
        write_nifti(scans / f"{name}.nii.gz", sample.array[30:40].T, sample.spacing)
    code, _, err = _run(["score", scans, "-o", out, "--quiet"], capsys)
    assert code == 0, err
    moved = read_volume(archive / "moved.nii.gz")  # severity 0.8
    write_nifti(scans / "a.nii.gz", moved.array[30:40].T, sample.spacing)
    later = os.path.getmtime(out) + 5
    os.utime(scans / "a.nii.gz", (later, later))
    (scans / "c.nii.gz").unlink()
    code, text, err = _run(["score", scans, "-o", out, "--quiet", "--resume"], capsys)
    assert code == 0, err
    assert "note: 1 volume changed since" in err and "a.nii.gz" in err.split("changed since")[1].splitlines()[0]
    assert "note: 1 volume in" in err and "no longer found: its results are kept (" in err and "c.nii.gz" in err
    assert "1 to score" in text
    with open(tmp_path / "r.summary.csv", encoding="utf-8") as fh:
        rows = {Path(r["file"]).name: r for r in csv.DictReader(fh)}
    assert set(rows) == {"a.nii.gz", "b.nii.gz", "c.nii.gz"}
    assert float(rows["a.nii.gz"]["mean_predicted_ssim"]) < float(rows["b.nii.gz"]["mean_predicted_ssim"]) - 0.05


def test_a_forced_report_replaces_its_figures_and_no_empty_report_blocks_a_rerun(sample, tmp_path, capsys):
    """--force into a report folder left the earlier run's figures beside the new ones (numbered on, listed
    nowhere); a run that scored nothing wrote an empty report, which then refused the corrected rerun."""
    scans, rep = tmp_path / "scans", tmp_path / "rep"
    scans.mkdir()
    for name in ("a", "b"):
        write_nifti(scans / f"{name}.nii.gz", sample.array[30:36].T, sample.spacing)
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    code, text, err = _run(["score", tmp_path / "empty.nii.gz", "--report-dir", rep, "--quiet"], capsys)
    assert code == 1 and not (rep / "index.html").exists(), (text, err)
    code, _, err = _run(["score", scans, "--report-dir", rep, "--quiet"], capsys)
    assert code == 0, err
    (rep / "mine.png").write_bytes(b"a user's own file")
    code, _, err = _run(["score", scans / "a.nii.gz", "--report-dir", rep, "--quiet", "--force"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in rep.glob("*.png")) == ["0000_a.png", "mine.png"]


def test_a_forced_report_that_scores_nothing_leaves_the_earlier_report_whole(sample, tmp_path, capsys):
    """Its figures went when the folder was opened, before any work: a typo then left a page of broken images."""
    rep = tmp_path / "rep"
    write_nifti(tmp_path / "a.nii.gz", sample.array[30:36].T, sample.spacing)
    assert _run(["score", tmp_path / "a.nii.gz", "--report-dir", rep, "--quiet"], capsys)[0] == 0
    before = sorted(p.name for p in rep.iterdir())
    code, _, err = _run(["score", tmp_path / "typo.nii.gz", "--report-dir", rep, "--quiet", "--force"], capsys)
    assert code == 1 and sorted(p.name for p in rep.iterdir()) == before and "0000_a.png" in before


def test_merge_takes_the_scored_volume_over_a_parts_failure(sample, tmp_path, capsys):
    """A site's run in which a file failed, joined with the run that scored it after the fix, was refused as
    "in two parts" once the summaries listed failures; and the failure must not be reported as unscored."""
    scans = tmp_path / "scans"
    scans.mkdir()
    write_nifti(scans / "a.nii.gz", sample.array[30:36].T, sample.spacing)
    (scans / "b.nii.gz").write_bytes(b"broken")
    assert _run(["score", scans, "-o", tmp_path / "first.csv", "--quiet"], capsys)[0] == 1
    write_nifti(scans / "b.nii.gz", sample.array[36:42].T, sample.spacing)
    assert _run(["score", scans / "b.nii.gz", "-o", tmp_path / "again.csv", "--quiet"], capsys)[0] == 0
    code, text, err = _run(["merge", tmp_path / "first.csv", tmp_path / "again.csv", "-o", tmp_path / "all.csv"],
                           capsys)
    assert code == 0 and "could not be scored" not in text, (text, err)
    with open(tmp_path / "all.summary.csv", encoding="utf-8") as fh:
        rows = {Path(r["file"]).name: r["verdict"] for r in csv.DictReader(fh)}
    assert set(rows) == {"a.nii.gz", "b.nii.gz"} and "not scored" not in rows.values()
