"""Past one process: torchrun training (DDP, gloo on the CPU) and sharded archive scoring.

Each test starts real processes: ``python -m torch.distributed.run`` (torchrun)
with two CPU ranks, or one ``ssimquality score --shard K/N`` per shard.
"""
import csv
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from SSIMQualityLib.cli import main

ROOT = Path(__file__).resolve().parent.parent


def _run(args, cwd=ROOT):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _torchrun(*cli_args):
    return _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                 "-m", "SSIMQualityLib.cli", *cli_args])


def _rows(path):
    return list(csv.DictReader(open(path, encoding="utf-8")))


def _same_tables(a, b):
    ra, rb = _rows(a), _rows(b)
    assert [(r["file"], r["slice"]) for r in ra] == [(r["file"], r["slice"]) for r in rb]
    for x, y in zip(ra, rb):
        px, py = x["predicted_ssim"], y["predicted_ssim"]
        assert (px == py == "") or abs(float(px) - float(py)) <= 1e-6  # empty: a slice without head
        assert {k: v for k, v in x.items() if k != "predicted_ssim"} == {k: v for k, v in y.items() if k != "predicted_ssim"}


@pytest.fixture(scope="module")
def archive(tmp_path_factory, sample_path):
    """Five small real volumes (nibabel's T1 under three names, the sample, a crop of it) and one bad file."""
    import nibabel
    import numpy as np

    d = tmp_path_factory.mktemp("archive")
    anat = Path(nibabel.__file__).parent / "tests" / "data" / "anatomical.nii"
    for name in ("a_t1.nii", "b_t1.nii", "d_t1.nii"):
        shutil.copy(anat, d / name)
    shutil.copy(sample_path, d / "c_sample.nii.gz")
    img = nibabel.load(str(sample_path))
    nibabel.save(nibabel.Nifti1Image(np.asarray(img.dataobj)[:, :, 20:50], img.affine), str(d / "e_crop.nii.gz"))
    return d


@pytest.fixture(scope="module")
def one_process(archive, tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "all.csv"
    assert main(["score", str(archive), "-o", str(out), "--quiet", "--device", "cpu"]) == 0
    assert len({r["file"] for r in _rows(out)}) == 5
    return out


def test_shards_and_merge_equal_one_process(archive, one_process, tmp_path):
    parts = []
    for k in (1, 2):
        part = tmp_path / f"part-{k}.csv"
        r = _run([sys.executable, "-m", "SSIMQualityLib.cli", "score", str(archive), "--shard", f"{k}/2",
                  "-o", str(part), "--quiet", "--device", "cpu"])
        assert r.returncode == 0, r.stderr
        parts.append(part)
    assert {len({x["file"] for x in _rows(p)}) for p in parts} == {2, 3}
    merged = tmp_path / "merged.csv"
    assert main(["merge", *map(str, parts), "-o", str(merged)]) == 0
    _same_tables(merged, one_process)
    assert _rows(merged.with_name("merged.summary.csv")) == _rows(one_process.with_name("all.summary.csv"))
    # The parts overlap with themselves: refused, in one line.
    assert main(["merge", str(parts[0]), str(parts[0]), "-o", str(tmp_path / "twice.csv")]) == 1
    # A volume given twice (again inside its folder, and as ./name) is scored once, on one shard, with one note;
    # before, it was scored twice and the shards of that run could not be merged.
    repeated = [str(archive), str(sorted(archive.glob("*.nii.gz"))[0]), "./" + os.path.relpath(archive, ROOT)]
    again = []
    for k in (1, 2):
        part = tmp_path / f"again-{k}.csv"
        r = _run([sys.executable, "-m", "SSIMQualityLib.cli", "score", *repeated, "--shard", f"{k}/2", "-o", str(part),
                  "--quiet", "--device", "cpu"])
        assert r.returncode == 0 and "note: 6 repeated paths to volumes already listed left out" in r.stderr, r.stderr
        again.append(part)
    assert main(["merge", *map(str, again), "-o", str(tmp_path / "again.csv")]) == 0
    _same_tables(tmp_path / "again.csv", one_process)


def test_torchrun_scoring_equals_one_process(archive, one_process, tmp_path):
    out = tmp_path / "tr.csv"
    r = _torchrun("score", str(archive), "-o", str(out), "--device", "cpu")
    assert r.returncode == 0, r.stderr[-2000:]
    _same_tables(out, one_process)
    # the parts are gone; the merged output has its record, as a one-process run's output has
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tr.csv", "tr.csv.record.json", "tr.summary.csv"]
    from SSIMQualityLib.records import read_record

    rec, alone = read_record(out), read_record(one_process)
    assert (rec.part, rec.parts, rec.finished, rec.made["merged_from"]) == (1, 1, True, 2)
    assert rec.files == alone.files and rec.run == alone.run


def test_bad_file_in_one_shard_keeps_the_other(archive, one_process, tmp_path):
    folder = tmp_path / "with_bad"
    shutil.copytree(archive, folder)
    (folder / "a_bad.nii.gz").write_bytes(b"not an image")  # sorts first: lands in shard 1
    parts = [tmp_path / "p1.csv", tmp_path / "p2.csv"]
    codes = []
    for k, part in enumerate(parts, 1):
        r = _run([sys.executable, "-m", "SSIMQualityLib.cli", "score", str(folder), "--shard", f"{k}/2",
                  "-o", str(part), "--quiet", "--device", "cpu"])
        codes.append(r.returncode)
        if k == 1:
            # One line, no traceback; the whole stderr shown if not (once, in CI, a second line came that no
            # local run has reproduced since).
            assert "a_bad.nii.gz" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert codes == [1, 0]
    merged = tmp_path / "merged.csv"
    # Written, and exit status 1 as score's: the bad file could not be scored in its part.
    assert main(["merge", *map(str, parts), "-o", str(merged)]) == 1 and merged.is_file()
    assert {Path(r["file"]).name for r in _rows(merged)} == {Path(r["file"]).name for r in _rows(one_process)}


def test_torchrun_training_writes_one_model_and_resumes(tmp_path):
    out = tmp_path / "run"
    common = ["train", "--out", str(out), "--input-size", "32", "--batch-size", "8", "--steps", "6",
              "--train-samples", "32", "--val-samples", "16", "--val-every", "2", "--workers", "1", "--device", "cpu"]
    first = _torchrun(*common, "--max-minutes", "0.00001")  # cut off after its first step
    assert first.returncode == 0, first.stderr[-2000:]
    assert "time limit reached at step 1" in first.stdout and "distributed: 2 processes (gloo)" in first.stdout
    # Each rank made its own samples; only rank 0 made validation samples.
    from SSIMQualityLib.data import DATA_VERSION as v
    from SSIMQualityLib.factory import FACTORY_VERSION as f

    assert sorted(p.name for p in out.glob("cache_*")) == [f"cache_train_v{v}f{f}_s100001_n32_32.pt",
                                                           f"cache_train_v{v}f{f}_s1_n32_32.pt",
                                                           f"cache_val_v{v}f{f}_s999_n16_32.pt"]
    second = _torchrun(*common)
    assert second.returncode == 0, second.stderr[-2000:]
    assert second.stdout.count("resumed from") == 1 and "at step 1" in second.stdout
    assert second.stdout.count("model written to") == 1
    steps = [int(r["step"]) for r in _rows(out / "log.csv")]
    assert steps == [1, 2, 4, 6]  # one log, written by rank 0 only, continued where it stopped
    from SSIMQualityLib.models import load_model

    assert load_model(out / "model.pt").input_size == 32


def test_batches_span_volumes_and_results_keep_their_order(sample):
    """Small volumes share network batches; each volume's scores equal scoring it alone; errors pass in order."""
    import numpy as np
    import torch

    from SSIMQualityLib.errors import SSIMQualityError
    from SSIMQualityLib.models import build_model
    from SSIMQualityLib.scoring import score_array, score_volumes

    torch.manual_seed(0)
    model = build_model("resnet18", 32).eval()
    calls = []
    model.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    vols = [np.ascontiguousarray(sample.array[30 + 10 * k:40 + 10 * k]) for k in range(3)]  # 10 slices each, axis 0
    alone = [score_array(model, v, (3.0, 1.0, 1.0), batch_size=16) for v in vols]
    fg = [int(a.foreground.sum()) for a in alone]
    assert fg == [10, 10, 10]
    calls.clear()
    items = [("a", vols[0], (3.0, 1.0, 1.0), None), ("unreadable", None, None, None),
             ("b", vols[1], (3.0, 1.0, 1.0), None), ("bad axis", vols[1], (3.0, 1.0, 1.0), 7),
             ("c", vols[2], (3.0, 1.0, 1.0), None)]
    out = list(score_volumes(items, model, batch_size=16))
    assert calls == [16, 14]  # 30 slices in two calls, not three calls of 10
    assert [k for k, _ in out] == ["a", "unreadable", "b", "bad axis", "c"]
    assert out[1][1] is None and isinstance(out[3][1], SSIMQualityError)
    for (_, got), ref in zip([out[0], out[2], out[4]], alone):
        np.testing.assert_allclose(got.predicted, ref.predicted, atol=1e-6)
        assert (got.foreground == ref.foreground).all()


def test_reading_in_worker_processes_gives_the_same_results(archive):
    """The GPU path decodes in spawned worker processes: same volumes, same order, same scores as threads."""
    import numpy as np
    import torch

    from SSIMQualityLib.batch import score_files
    from SSIMQualityLib.models import build_model
    from SSIMQualityLib.volumes import list_volume_paths

    torch.manual_seed(0)
    model = build_model("resnet18", 32).eval()
    paths = list_volume_paths([archive])
    threads = list(score_files(paths, model, workers=2))
    procs = list(score_files(paths, model, workers=2, processes=True))
    assert [r.file for r in procs] == [r.file for r in threads]
    for a, b in zip(threads, procs):
        np.testing.assert_array_equal(a.score.predicted, b.score.predicted)


def test_a_shard_of_only_bad_files_still_leaves_its_part(archive, tmp_path):
    """A part holds its shard's errors (JSON), so the merge has every part and lists every failure."""
    import json

    folder = tmp_path / "with_bad"
    shutil.copytree(archive, folder)
    (folder / "z_bad.nii.gz").write_bytes(b"not an image")  # sorts last: shard 3 of 3 holds only it and e_crop
    (folder / "e_crop.nii.gz").unlink()
    parts = [tmp_path / f"p{k}.json" for k in (1, 2, 3)]
    codes = [main(["score", str(folder), "--shard", f"{k}/3", "-o", str(p), "--quiet", "--device", "cpu"])
             for k, p in enumerate(parts, 1)]
    assert codes == [0, 0, 1] and all(p.is_file() for p in parts)
    assert json.loads(parts[2].read_text())["volumes"] == []
    merged = tmp_path / "all.json"
    assert main(["merge", *map(str, parts), "-o", str(merged)]) == 1  # written; a volume failed, as score says
    doc = json.loads(merged.read_text())
    assert len(doc["volumes"]) == 4 and [Path(e["file"]).name for e in doc["errors"]] == ["z_bad.nii.gz"]


def _copies(folder, *names):
    """Copies of nibabel's small T1 (33 × 41 × 25) in ``folder``."""
    import nibabel

    folder.mkdir(parents=True, exist_ok=True)
    anat = Path(nibabel.__file__).parent / "tests" / "data" / "anatomical.nii"
    for name in names:
        shutil.copy(anat, folder / name)
    return folder


@pytest.fixture()
def three_shards(tmp_path):
    """Three copies of nibabel's small T1 scored as shards 1/3 – 3/3 (one volume each), and the folder."""
    folder = _copies(tmp_path / "scans", "a.nii", "b.nii", "c.nii")
    parts = [tmp_path / f"part-{k}.csv" for k in (1, 2, 3)]
    for k, p in enumerate(parts, 1):
        assert main(["score", str(folder), "--shard", f"{k}/3", "-o", str(p), "--quiet", "--device", "cpu"]) == 0
    return folder, parts


def _files(path):
    return [Path(r["file"]).name for r in _rows(path.with_name(path.stem + ".summary.csv"))]


def test_merge_checks_every_shard_is_there_once_and_finished(three_shards, tmp_path, capsys):
    """Each part's .record.json says which shard it is: merge joins them in shard order whatever the glob's
    order, and refuses (one line naming it) a missing, doubled or unfinished shard unless --partial."""
    from SSIMQualityLib.records import read_record, record_path, write_record

    folder, (p1, p2, p3) = three_shards
    rec = read_record(p2)
    assert (rec.part, rec.parts, rec.finished, rec.errors) == (2, 3, True, {})
    assert [Path(f).name for f in rec.files] == ["b.nii"]

    merged = tmp_path / "merged.csv"
    assert main(["merge", str(p3), str(p1), str(p2), "-o", str(merged)]) == 0
    assert _files(merged) == ["a.nii", "b.nii", "c.nii"]  # shard order, not the order given
    capsys.readouterr()

    def refused_as(out, *argv):
        before = out.read_bytes() if out.exists() else None
        assert main(["merge", *map(str, argv), "-o", str(out)]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and (out.read_bytes() if out.exists() else None) == before
        return err

    def refused(*argv):
        return refused_as(tmp_path / "refused.csv", *argv)

    assert "shard 2 of 3 is missing" in refused(p1, p3) and "--partial" in refused(p1, p3)
    assert main(["merge", str(p1), str(p3), "-o", str(tmp_path / "partial.csv"), "--partial"]) == 0
    assert "shard 2 of 3 is missing" in capsys.readouterr().err
    assert _files(tmp_path / "partial.csv") == ["a.nii", "c.nii"]
    # Merged again, that partial table says what it is ("did not finish (2 of 2 volumes)" read as a riddle).
    assert "the run did not finish (a --partial merge: it leaves out volumes)" in refused(tmp_path / "partial.csv")

    twin = tmp_path / "twin.csv"  # the same shard given twice, under another name
    for a, b in ((p1, twin), (p1.with_name("part-1.summary.csv"), twin.with_name("twin.summary.csv")),
                 (record_path(p1), record_path(twin))):
        shutil.copy(a, b)
    assert "are both shard 1 of 3" in refused(p1, twin, p2, p3)

    assert "is given twice" in refused(p1, p2, p3, p3.with_name("./part-3.csv"))
    other = tmp_path / "other.csv"  # a part of another run, split 4 ways
    assert main(["score", str(folder), "--shard", "4/4", "-o", str(other), "--quiet", "--device", "cpu"]) == 0
    assert "other.csv: belongs to another run (shard 4 of 4, over 3 volumes)" in refused(p1, p2, p3, other)
    # The input grew between two tasks: shard 3 of 3 now cuts another list (c.nii would be scored twice, or a
    # volume by no shard), and the same shard with another --axis.
    shutil.copy(folder / "a.nii", folder / "d.nii")
    grown = tmp_path / "grown.csv"
    assert main(["score", str(folder), "--shard", "3/3", "-o", str(grown), "--quiet", "--device", "cpu"]) == 0
    assert "grown.csv: belongs to another run (shard 3 of 3, over 4 volumes)" in refused(p1, p2, grown)
    (folder / "d.nii").unlink()
    axis = tmp_path / "axis.csv"
    assert main(["score", str(folder), "--shard", "3/3", "-o", str(axis), "--axis", "0", "--quiet",
                 "--device", "cpu"]) == 0
    assert "axis.csv: was scored with other settings than the other parts (axis: default in the others, 0 here)" in refused(p1, p2, axis)
    for out in (p1, p2.with_name("part-2.summary.csv"), record_path(p3)):
        assert "would write over this part" in refused_as(out, p1, p2, p3, "--force")
    # What `merge part-*.csv` expands to: the summaries come along and are left out.
    assert main(["merge", *sorted(map(str, tmp_path.glob("part-*.csv"))), "-o", str(tmp_path / "glob.csv")]) == 0
    assert _files(tmp_path / "glob.csv") == ["a.nii", "b.nii", "c.nii"]
    capsys.readouterr()

    # A job its cluster killed: its record, written before the first volume, still says "not finished".
    write_record(p2, rec._replace(finished=False, files=rec.files + [str(folder / "z.nii")]))
    err = refused(p1, p2, p3)
    assert "shard 2 of 3 did not finish (1 of 2 volumes)" in err and str(p2) in err and "--resume" in err

    # Parts without records (older outputs) are joined as given, with a note that nothing could be checked.
    for p in (p1, p2, p3):
        record_path(p).unlink()
    assert main(["merge", str(p3), str(p1), "-o", str(tmp_path / "unchecked.csv")]) == 0
    assert "cannot check that none is missing" in capsys.readouterr().err
    assert _files(tmp_path / "unchecked.csv") == ["c.nii", "a.nii"]


def test_a_killed_shard_says_so_and_resume_keeps_its_place(three_shards, tmp_path, monkeypatch, capsys):
    """A shard stopped before its first save leaves nothing of its own (an earlier run's part stays whole); one
    stopped later leaves a record that says unfinished (merge refuses it); --resume with another K/N, other
    options, without --shard or after the input changed is refused; resumed from another folder, the part keeps
    its names and scores nothing twice."""
    import SSIMQualityLib.batch as batch
    from SSIMQualityLib.records import read_record, record_path

    folder, (p1, p2, p3) = three_shards
    real = batch.score_files

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt
        yield  # a generator, as score_files

    def refused(argv, text):
        assert main(argv) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and text in err, err

    monkeypatch.setattr(batch, "score_files", stopped)
    killed = tmp_path / "killed.csv"
    assert main(["score", str(folder), "--shard", "2/3", "-o", str(killed), "--quiet", "--device", "cpu"]) == 130
    assert not killed.exists() and read_record(killed) is None
    # It says so, not "finished results were kept ... --resume" (nothing was).
    assert f"interrupted; stopped before the first save: {killed} was not written" in capsys.readouterr().err
    before = {f: f.read_bytes() for f in (p2, p2.with_name("part-2.summary.csv"), record_path(p2))}
    assert main(["score", str(folder), "--shard", "2/3", "-o", str(p2), "--axis", "1", "--force", "--quiet",
                 "--device", "cpu"]) == 130
    assert {f: f.read_bytes() for f in before} == before, "a rerun stopped before its first save changed nothing"
    monkeypatch.setattr(batch, "score_files", real)
    capsys.readouterr()
    refused(["merge", str(p1), str(p3), "-o", str(tmp_path / "m.csv")], "shard 2 of 3 is missing")
    refused(["score", str(folder), "--shard", "2/3", "-o", str(p2), "--resume", "--axis", "1", "--quiet",
             "--device", "cpu"], "was started with other settings (axis: default then, 1 now)")
    refused(["score", str(folder), "--shard", "1/3", "-o", str(p2), "--resume", "--quiet", "--device", "cpu"],
            "holds shard 2/3, not shard 1/3")
    refused(["score", str(folder), "-o", str(p2), "--resume", "--quiet", "--device", "cpu"],
            "holds shard 2/3 of a sharded run. Resume it with --shard 2/3")
    shutil.copy(folder / "a.nii", folder / "aa.nii")  # four volumes now: shard 1 of 3 holds a and aa
    refused(["score", str(folder), "--shard", "1/3", "-o", str(p1), "--resume", "--quiet", "--device", "cpu"],
            "was started over another list of volumes (the input changed since: 3 volumes then, 4 now)")
    (folder / "aa.nii").unlink()

    # A part whose record does not name its results (a run stopped between writing them, a full disk, results
    # gone): refused by merge and by --resume; started again with --force.
    shutil.copy(record_path(p2), record_path(killed))
    refused(["merge", str(p1), str(killed), str(p3), "-o", str(tmp_path / "m.csv")],
            "the results and their record disagree")
    refused(["score", str(folder), "--shard", "2/3", "-o", str(killed), "--quiet", "--device", "cpu"],
            "an earlier run left its record here. Pass --resume")
    refused(["score", str(folder), "--shard", "2/3", "-o", str(killed), "--resume", "--quiet", "--device", "cpu"],
            "the results and their record disagree")
    p1_summary = p1.with_name("part-1.summary.csv")
    kept = p1_summary.read_bytes()
    p1_summary.write_bytes(kept.replace(b"sufficient", b"good"))  # an edited (or half-written) part
    refused(["merge", str(p1), str(p2), str(p3), "-o", str(tmp_path / "m.csv")], "part-1.csv: the results and their record disagree")
    p1_summary.write_bytes(kept)
    assert main(["score", str(folder), "--shard", "2/3", "-o", str(killed), "--force", "--quiet",
                 "--device", "cpu"]) == 0
    assert read_record(killed).finished
    assert main(["merge", str(p1), str(killed), str(p3), "-o", str(tmp_path / "all.csv")]) == 0
    assert _files(tmp_path / "all.csv") == ["a.nii", "b.nii", "c.nii"]

    # A whole run (part 1 of 1) stopped after its first volume, then resumed from another folder with another
    # relative spelling: it keeps its names and scores nothing twice.
    def first_then_stop(*args, **kwargs):
        for res in real(*args, **kwargs):
            yield res
            raise KeyboardInterrupt

    monkeypatch.setenv("SSIMQUALITY_SAVE_EVERY_S", "0")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(batch, "score_files", first_then_stop)
    assert main(["score", "scans", "-o", "whole.csv", "--quiet", "--device", "cpu"]) == 130
    assert not read_record(tmp_path / "whole.csv").finished and _files(tmp_path / "whole.csv") == ["a.nii"]
    assert "the finished volumes are in whole.csv" in capsys.readouterr().err
    monkeypatch.setattr(batch, "score_files", real)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    capsys.readouterr()
    assert main(["score", "../scans", "-o", "../whole.csv", "--resume", "--quiet", "--device", "cpu"]) == 0
    assert "1 volume already in ../whole.csv, 2 to score" in capsys.readouterr().out
    names = [r["file"] for r in _rows(tmp_path / "whole.summary.csv")]
    assert names == ["scans/a.nii", "scans/b.nii", "scans/c.nii"], "the results keep the names they started with"
    whole = read_record(tmp_path / "whole.csv")
    assert whole.files == names and whole.finished and (whole.part, whole.parts) == (1, 1)
    monkeypatch.chdir(tmp_path)
    assert main(["merge", "whole.csv", "-o", "whole_merged.csv"]) == 0
    # A shard's results scored again as a whole run (--force): the record says so.
    assert main(["score", str(folder), "-o", str(p1), "--force", "--quiet", "--device", "cpu"]) == 0
    assert (read_record(p1).part, read_record(p1).parts) == (1, 1) and _files(p1) == ["a.nii", "b.nii", "c.nii"]


def test_every_results_file_has_a_record_and_resume_checks_it(tmp_path, capsys):
    """A whole run's results carry a record too (part 1 of 1): how they were made, and the settings, so that
    --resume cannot mix another model or other options into them; the archive may grow between runs; the
    results of separate runs (two sites) merge in the order given, with the same settings only."""
    from SSIMQualityLib import __version__
    from SSIMQualityLib.models import build_model, bundled_model_entry, save_checkpoint
    from SSIMQualityLib.records import read_record

    site_a, site_b = _copies(tmp_path / "a", "a.nii", "b.nii"), _copies(tmp_path / "b", "c.nii")
    out = tmp_path / "site-a.csv"
    cpu = ["--quiet", "--device", "cpu"]
    assert main(["score", str(site_a), "-o", str(out), *cpu]) == 0
    rec = read_record(out)
    assert (rec.part, rec.parts, rec.finished, rec.errors, rec.folder) == (1, 1, True, {}, os.getcwd())
    assert [Path(f).name for f in rec.files] == ["a.nii", "b.nii"]
    assert rec.run["settings"]["model_sha256"] == bundled_model_entry()["sha256"]
    made = rec.made
    assert (made["model"], made["device"], made["precision"], made["ssimquality"]) == (
        bundled_model_entry()["name"], "cpu", "float32", __version__)
    assert made["started"] <= made["saved"]

    def refused(argv, text):
        before = {p: p.read_bytes() for p in tmp_path.glob("site-a*")}
        assert main(argv) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and text in err, err
        assert {p: p.read_bytes() for p in tmp_path.glob("site-a*")} == before

    other = tmp_path / "other.pt"
    save_checkpoint(other, build_model("resnet18", 32))
    capsys.readouterr()
    refused(["score", str(site_a), "-o", str(out), "--resume", "--axis", "0", *cpu],
            "site-a.csv: these results were started with other settings (axis: default then, 0 now)")
    refused(["score", str(site_a), "-o", str(out), "--resume", "--model", str(other), *cpu],
            "these results were started with other settings (model_sha256: ")
    refused(["score", str(site_a), "-o", str(out), "--resume", "--shard", "1/2", *cpu],
            "holds the results of a whole run, not shard 1/2. Resume it without --shard")
    refused(["score", str(site_a), "-o", str(out), "--resume", "--force", *cpu],  # --force was silently ignored
            "--resume keeps the volumes already in -o and --force replaces them: give one of the two")

    _copies(site_a, "d.nii")  # the archive grew: only the new volume is scored
    assert main(["score", str(site_a), "-o", str(out), "--resume", *cpu]) == 0
    assert "2 volumes already in" in capsys.readouterr().out and _files(out) == ["a.nii", "b.nii", "d.nii"]
    rec = read_record(out)
    assert [Path(f).name for f in rec.files] == ["a.nii", "b.nii", "d.nii"] and rec.finished
    assert rec.made["started"] == made["started"], "the record keeps when the results were first started"

    # Two sites scored apart, joined as given; the joined table gets its record; other settings are refused.
    b = tmp_path / "site-b.csv"
    assert main(["score", str(site_b), "-o", str(b), *cpu]) == 0
    joined = tmp_path / "joined.csv"
    assert main(["merge", str(b), str(out), "-o", str(joined)]) == 0
    assert _files(joined) == ["c.nii", "a.nii", "b.nii", "d.nii"]
    rec = read_record(joined)
    assert (rec.parts, rec.finished, len(rec.files), rec.made["merged_from"]) == (1, True, 4, 2)
    capsys.readouterr()
    refused(["score", str(site_a), "-o", str(joined), "--resume", "--iqm", *cpu],
            "these results were started with other settings (iqm: False then, True now)")
    c = tmp_path / "site-c.csv"
    assert main(["score", str(site_b), "-o", str(c), "--axis", "1", *cpu]) == 0
    capsys.readouterr()
    refused(["merge", str(out), str(c), "-o", str(tmp_path / "mixed.csv")],
            "site-c.csv: was scored with other settings than the other parts (axis: default in the others, 1 here)")


def test_records_hold_through_what_users_do_to_their_files(tmp_path, monkeypatch, capsys):
    """A copied project resumes without scoring anything twice; an earlier version's record, results renamed away
    from their record, a bad file since removed, merged runs from two folders, leftovers beside a merge's output
    and a merge of shards with a whole run each get one line that says what to do, never a silent mix."""
    from SSIMQualityLib.records import legacy_record_path, read_record, record_path, write_record

    cpu = ["--quiet", "--device", "cpu"]

    def refused(argv, text):
        assert main(argv) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and text in err, err

    # A copy of a project holds the same names for other files: refused, not taken as scored. Once the first
    # folder is gone (the project moved), the names are read from where it is now.
    first = tmp_path / "first"
    _copies(first / "scans", "a.nii", "b.nii")
    monkeypatch.chdir(first)
    assert main(["score", "scans", "-o", "r.csv", *cpu]) == 0
    shutil.copytree(first, tmp_path / "moved")
    monkeypatch.chdir(tmp_path / "moved")
    capsys.readouterr()
    refused(["score", "scans", "-o", "r.csv", "--resume", *cpu],
            f"r.csv: holds scans/a.nii from {first} (where its run started), and scans/a.nii here is another file")
    shutil.rmtree(first)
    assert main(["score", "scans", "-o", "r.csv", "--resume", *cpu]) == 0
    assert "2 volumes already in r.csv, 0 to score" in capsys.readouterr().out
    assert _files(tmp_path / "moved" / "r.csv") == ["a.nii", "b.nii"], "nothing scored twice"

    proj = tmp_path / "proj"
    _copies(proj / "scans", "a.nii", "b.nii")
    (proj / "scans" / "bad.nii.gz").write_text("not an image")
    monkeypatch.chdir(proj)
    assert main(["score", "scans", "-o", "r.csv", *cpu]) == 1  # the bad file fails; the others are kept
    assert set(read_record(proj / "r.csv").errors) == {"scans/bad.nii.gz"}
    (proj / "scans" / "bad.nii.gz").unlink()  # removed from the archive: the record can say finished
    capsys.readouterr()
    assert main(["score", "scans", "-o", "r.csv", "--resume", *cpu]) == 0
    assert "2 volumes already in r.csv, 0 to score" in capsys.readouterr().out
    rec = read_record(proj / "r.csv")
    assert rec.files == ["scans/a.nii", "scans/b.nii"] and rec.finished and rec.errors == {}
    # a volume not given this time but still there stays on the list: the record does not say finished
    _copies(proj / "scans", "z.nii")
    write_record("r.csv", rec._replace(files=rec.files + ["scans/z.nii"], finished=False).with_results("r.csv"))
    assert main(["score", "scans/a.nii", "scans/b.nii", "-o", "r.csv", "--resume", *cpu]) == 0
    assert read_record(proj / "r.csv").files[-1] == "scans/z.nii"
    capsys.readouterr()
    refused(["merge", "r.csv", "-o", str(tmp_path / "z.csv")], "the run did not finish (2 of 3 volumes)")
    assert main(["score", "scans", "-o", "r.csv", "--resume", *cpu]) == 0 and read_record(proj / "r.csv").finished
    (proj / "scans" / "z.nii").unlink()
    main(["score", "scans", "-o", "r.csv", "--force", *cpu])
    # resumed on another device: the record names both
    rec = read_record(proj / "r.csv")
    write_record("r.csv", rec._replace(made={**rec.made, "device": "cuda:0"}).with_results("r.csv"))
    assert main(["score", "scans", "-o", "r.csv", "--resume", *cpu]) == 0
    assert read_record(proj / "r.csv").made["device"] == "cuda:0, cpu"

    # Two sites, each scored from its own folder with the same relative names: merge names both folders; merged
    # anyway from absolute paths, the joined results cannot be resumed from relative names.
    other = tmp_path / "other-site"
    _copies(other / "scans", "a.nii")
    monkeypatch.chdir(other)
    assert main(["score", "scans", "-o", "r.csv", *cpu]) == 0
    monkeypatch.chdir(proj)
    capsys.readouterr()
    refused(["merge", "r.csv", str(other / "r.csv"), "-o", str(tmp_path / "both.csv")],
            f"scans/a.nii is in two parts (r.csv and {other / 'r.csv'}), each named from the folder its run "
            f"started in ({other}, {proj})")
    _copies(tmp_path / "site2", "c.nii")
    assert main(["score", str(tmp_path / "site2"), "-o", str(tmp_path / "site2.csv"), *cpu]) == 0
    monkeypatch.chdir(tmp_path)
    assert main(["score", "site2", "-o", "site2-rel.csv", *cpu]) == 0
    assert main(["merge", "proj/r.csv", "site2-rel.csv", "-o", "both.csv"]) == 0
    capsys.readouterr()
    refused(["score", "site2", "-o", "both.csv", "--resume", *cpu], "join runs started from different folders")
    # a leftover record beside merge's output is not replaced without --force
    for f in ("both.csv", "both.summary.csv"):
        (tmp_path / f).unlink()
    refused(["merge", "proj/r.csv", "site2-rel.csv", "-o", "both.csv"], "an earlier run left its record here")

    # an earlier version's record (.shard.json): refused, not taken for no record; --force replaces it
    old = tmp_path / "site2.csv"
    record_path(old).rename(legacy_record_path(old))
    refused(["score", "site2", "-o", str(old), "--resume", *cpu], "has the record of an earlier ssimquality")
    refused(["merge", str(old), "-o", "m.csv"], "has the record of an earlier ssimquality")
    assert main(["score", "site2", "-o", str(old), "--force", *cpu]) == 0
    assert not legacy_record_path(old).exists() and read_record(old).finished

    # results renamed without their record: resumed, with a note that their settings could not be checked
    for suffix in (".csv", ".summary.csv"):
        shutil.move(tmp_path / f"site2{suffix}", tmp_path / f"renamed{suffix}")
    capsys.readouterr()
    assert main(["score", "site2", "-o", "renamed.csv", "--resume", *cpu]) == 0
    assert "renamed.csv has no record (renamed.csv.record.json)" in capsys.readouterr().err

    # shards of a run beside a whole run: merge the shards first
    for k in (1, 2):
        assert main(["score", "proj/scans", "--shard", f"{k}/2", "-o", f"s{k}.csv", *cpu]) in (0, 1)
    capsys.readouterr()
    refused(["merge", "s1.csv", "s2.csv", "site2-rel.csv", "-o", "mix.csv"],
            "site2-rel.csv: holds a whole run's results (or merged shards) while other parts are shards of a run")

    # one volume under two names (a relative and an absolute path) is still one volume
    assert main(["score", str(tmp_path / "site2"), "-o", "absolute.csv", *cpu]) == 0
    capsys.readouterr()
    refused(["merge", "site2-rel.csv", "absolute.csv", "-o", "twice.csv"],
            f"{tmp_path / 'site2' / 'c.nii'} is in two parts (site2-rel.csv and absolute.csv)")
    # merged again with --force from a part without a record: the output's earlier record is not left behind
    assert main(["merge", "site2-rel.csv", "-o", "single.csv"]) == 0 and read_record(tmp_path / "single.csv")
    for suffix in (".csv", ".summary.csv"):
        shutil.copy(tmp_path / f"site2-rel{suffix}", tmp_path / f"norecord{suffix}")
    assert main(["merge", "norecord.csv", "-o", "single.csv", "--force"]) == 0
    assert not record_path(tmp_path / "single.csv").exists()


def test_two_runs_given_the_same_output_do_not_save_over_each_other(archive, tmp_path, capsys):
    """Two array tasks with the same -o both passed the start-up check and saved over each other, each saying
    'wrote'. Now the second is refused while the first runs, and the lock goes with its process however it ends
    (a killed task's results resume at once)."""
    from SSIMQualityLib.locks import lock_path

    out, report = tmp_path / "same.csv", tmp_path / "rep"
    held = [out, report]
    ready = tmp_path / "ready"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time, contextlib\n"
        "from pathlib import Path\n"
        "from SSIMQualityLib.locks import writer_lock\n"
        "with contextlib.ExitStack() as s:\n"
        "    for p in sys.argv[2:]: s.enter_context(writer_lock(p))\n"
        "    Path(sys.argv[1]).touch(); time.sleep(120)\n"), str(ready), *map(str, held)],
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        for _ in range(300):
            if ready.exists():
                break
            holder.poll()
            assert holder.returncode is None, "the lock holder died"
            time.sleep(0.1)
        cpu = ["--quiet", "--device", "cpu"]
        for argv, what in ((["-o", str(out)], "same.csv: another ssimquality run is writing these results now"),
                           (["-o", str(tmp_path / "own.csv"), "--report-dir", str(report)],
                            "rep: another ssimquality run is writing this report now")):
            for extra in ([], ["--force"], ["--resume"]):
                if extra == ["--resume"] and "--report-dir" in argv:
                    continue
                assert main(["score", str(archive / "a_t1.nii"), *argv, *extra, *cpu]) == 1
                err = capsys.readouterr().err.strip()
                assert len(err.splitlines()) == 1 and what in err and "its own -o and --report-dir" in err, err
        assert not out.exists() and not (tmp_path / "own.csv").exists() and not report.exists()
    finally:
        holder.kill()
        holder.wait()
    # Killed: its locks are gone with it, and the next run writes (and leaves no lock file behind).
    assert main(["score", str(archive / "a_t1.nii"), "-o", str(out), "--report-dir", str(report), *cpu]) == 0
    assert out.exists() and (report / "index.html").exists()
    assert not lock_path(out).exists() and not lock_path(report).exists()


def test_the_lock_stays_out_of_the_way_where_it_cannot_work(tmp_path, monkeypatch):
    """A file system that takes no locks (NFS mounted nolock: ENOLCK) made every score -o look taken; '.' as a
    folder crashed in the lock's name. Both run unguarded now, and refusals stay the output checks' own."""
    import errno
    import fcntl

    from SSIMQualityLib.locks import lock_path, writer_lock

    monkeypatch.chdir(tmp_path)
    with writer_lock("."), writer_lock("results.csv"):  # '.' resolved: the lock sits beside the folder
        assert lock_path(tmp_path).exists() and lock_path(tmp_path / "results.csv").exists()
    assert not lock_path(tmp_path).exists()

    def no_locks(*args):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "lockf", no_locks)
    with writer_lock(tmp_path / "r.csv"):
        pass
    assert not lock_path(tmp_path / "r.csv").exists()
    with writer_lock("/proc/r.csv"), writer_lock("/"):  # cannot be made there: the output checks say why
        pass
