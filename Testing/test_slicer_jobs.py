"""The Slicer module's settings in its parameter node, and its long work out of process, on a real MRML scene."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from slicer_scene import make_scene, table_column  # noqa: E402  (puts the shim on the path first)

import slicer  # noqa: E402


def test_parameter_node_round_trip(scene, module, sample_path, tmp_path):
    logic = module.SSIMQualityLogic()
    volume = logic.loadVolumeFile(sample_path, "sample")
    assert logic.getParameters()["severity"] == 0.5 and logic.getParameters()["showKspace"] is False  # defaults
    logic.setParameters(inputVolume=volume, model="my-site-model", device="cpu", method="torchio", severity=0.8,
                        seed=7, showKspace=True, contrastKind="sigmoid", contrastParameter=4.5,
                        fineTuneFolder="/data/site", fineTuneName="site-v1", fineTuneSteps=120)
    saved = logic.getParameters()
    scene_file = tmp_path / "scene.mrml"
    scene.SetURL(str(scene_file))
    scene.Commit()
    assert scene_file.is_file()
    # A fresh scene, loaded from the file: every setting comes back, typed.
    fresh, _, _ = make_scene()
    fresh.SetURL(str(scene_file))
    assert fresh.Connect()
    restored = module.SSIMQualityLogic().getParameters()
    for key, value in saved.items():
        if key == "inputVolume":
            assert restored[key] is not None and restored[key].GetName() == "sample"
        else:
            assert restored[key] == value and type(restored[key]) is type(value), key
    # Checked before anything is stored: one clear line, and none of the call's values kept.
    from SSIMQualityLib.errors import SSIMQualityError

    for bad, words in (({"sevrity": 0.1}, "unknown SSIM Quality setting 'sevrity'"), ({"showKspace": "no"}, "True or False"),
                       ({"severity": 1.5}, "between 0 and 1"), ({"method": "bogus"}, "one of kspace"),
                       ({"device": "gpu"}, "auto, cpu or cuda"), ({"fineTuneSteps": -5}, "between 10 and 100000"),
                       ({"seed": 1.7}, "whole number"), ({"seed": -2}, "between -1 and 999999"),
                       ({"contrastKind": "clahe"}, "one of"),
                       # values the panel's widgets cannot show (they changed when another control was touched) or
                       # a job cannot run ("cuda:3" failed in the CLI module's argparse)
                       ({"seed": 10 ** 9}, "between -1 and 999999"), ({"contrastParameter": 0.0}, "between 0.005 and 15"),
                       ({"contrastParameter": 500}, "between 0.005 and 15"), ({"fineTuneSteps": 1}, "between 10"),
                       ({"device": "cuda:3"}, "auto, cpu or cuda"),
                       ({"inputVolume": "MRHead"}, "must be a volume node")):
        with pytest.raises(SSIMQualityError, match=words):
            logic.setParameters(**{"contrastParameter": 2.0, **bad})
        assert logic.getParameters()["contrastParameter"] == saved["contrastParameter"], bad  # the valid one not stored
    logic.setParameters(showKspace="false", seed=-1, fineTuneSteps=40.0)  # the node's own spellings
    got = logic.getParameters()
    assert got["showKspace"] is False and got["seed"] == -1 and got["fineTuneSteps"] == 40


def test_setting_ranges_are_the_panels(module):
    """What the parameter node accepts is what the panel's widgets can show (their .ui minimum and maximum)."""
    import xml.etree.ElementTree as ET

    root = ET.parse(Path(module.__file__).parent / "Resources" / "UI" / "SSIMQuality.ui").getroot()
    widgets = {"severity": "severitySlider", "seed": "seedSpinBox", "contrastParameter": "contrastParameterSlider",
               "fineTuneSteps": "fineTuneStepsSpinBox"}
    assert set(widgets) == set(module.SETTING_RANGES)
    for setting, name in widgets.items():
        (w,) = [w for w in root.iter("widget") if w.get("name") == name]
        prop = {p.get("name"): float(p[0].text) for p in w.findall("property") if p.get("name") in ("minimum", "maximum")}
        assert (prop["minimum"], prop["maximum"]) == module.SETTING_RANGES[setting], setting
        low, high = module.SETTING_RANGES[setting]
        assert low <= module.PARAMETER_DEFAULTS[setting] <= high, setting


def test_the_contrast_parameter_belongs_to_its_kind(scene, module, sample):
    """The panel's defaults (gamma 1.0) changed nothing, and its one slider kept gamma's 1.8 when the kind became
    AHE, whose clip limit must lie in (0, 1]: the button then failed.  A value written into the node by hand (or
    by an older version) reached the jobs unchecked."""
    from SSIMQualityLib.contrast import make_contrast
    from SSIMQualityLib.errors import SSIMQualityError
    from SSIMQualityLib.slices import normalize
    from SSIMQualityLib.vocabulary import CONTRAST_PARAMETERS

    logic = module.SSIMQualityLogic()
    node = slicer.util.addVolumeFromArray(np.ascontiguousarray(sample.array[36:40]), name="t1")
    p = logic.getParameters()
    out = slicer.util.arrayFromVolume(logic.augmentContrast(node, kind=p["contrastKind"],
                                                            parameter=p["contrastParameter"]))
    plain = np.stack([normalize(s) for s in sample.array[36:40].astype(np.float32)])
    assert np.abs(out - plain).max() > 0.2  # the defaults show a change
    logic.setParameters(contrastKind="ahe", contrastParameter=p["contrastParameter"])  # the panel's slider: stale
    assert logic.getParameters()["contrastParameter"] == CONTRAST_PARAMETERS["ahe"][0]
    logic.augmentContrast(node, kind="ahe", parameter=logic.getParameters()["contrastParameter"])
    logic.setParameters(contrastKind="sigmoid", contrastParameter=4.5123)  # a console user's own value is kept
    assert logic.getParameters()["contrastParameter"] == 4.5123
    logic.setParameters(contrastKind="ahe", contrastParameter=4.512)  # the panel's slider shows 3 decimals
    assert logic.getParameters()["contrastParameter"] == CONTRAST_PARAMETERS["ahe"][0]
    logic.setParameters(contrastKind="sigmoid", contrastParameter=4.5)
    with pytest.raises(SSIMQualityError, match="between 0.005 and 1 for ahe"):
        logic.setParameters(contrastKind="ahe", contrastParameter=1.8)
    assert logic.getParameters()["contrastKind"] == "sigmoid"  # nothing of the refused call stored
    parameterNode = logic.getParameterNode()
    for name, text in (("contrastKind", "ahe"), ("contrastParameter", "1.8"), ("severity", "7.5"),
                       ("method", "bogus")):
        parameterNode.SetParameter(name, text)
    got = logic.getParameters()
    assert (got["contrastParameter"], got["severity"], got["method"]) == (CONTRAST_PARAMETERS["ahe"][0], 0.5, "kspace")
    low_all, high_all = module.SETTING_RANGES["contrastParameter"]
    for kind, (default, low, high, step) in CONTRAST_PARAMETERS.items():
        assert low_all <= low < default < high <= high_all and step <= low and abs(round((default - low) / step) - (default - low) / step) < 1e-6, kind
        for value in (low, default, high):
            make_contrast(kind, value)  # each accepts its whole range
    assert min(v[1] for v in CONTRAST_PARAMETERS.values()) == low_all
    assert max(v[2] for v in CONTRAST_PARAMETERS.values()) == high_all


def test_scoring_job_fills_the_table_out_of_process(scene, module, sample_path):
    logic = module.SSIMQualityLogic()
    node = logic.loadVolumeFile(sample_path, "sample")
    seen = {}
    job = logic.startScoring(node, device="cpu", onDone=lambda j, t: seen.update(job=j, table=t))
    assert job.state == "running"  # started, not finished: the caller's thread is free
    job.wait(timeout=600)
    assert job.state == "done", job.errors
    table = seen["table"]
    assert table is not None and table.GetNumberOfRows() == slicer.util.arrayFromVolume(node).shape[0]
    assert 0.0 < job.progress <= 1.0 and job.progress == 1.0
    in_process = logic.scoreVolume(node, model=logic.loadModel(device="cpu"))
    np.testing.assert_allclose(table_column(table, "predicted_ssim"), table_column(in_process, "predicted_ssim"),
                               atol=1e-5, equal_nan=True)
    assert table.GetAttribute("SSIMQuality.verdict") == in_process.GetAttribute("SSIMQuality.verdict")
    # what was scored, by which model: with the result (a re-score was just "sample quality_1")
    from SSIMQualityLib.models import bundled_model_entry

    entry = bundled_model_entry()
    assert table.GetAttribute("SSIMQuality.volume") == "sample"
    assert (table.GetAttribute("SSIMQuality.model"), table.GetAttribute("SSIMQuality.model_sha256")) == (
        entry["name"], entry["sha256"])
    named = logic.scoreVolume(node, model=entry["name"], device="cpu")
    assert named.GetAttribute("SSIMQuality.model_sha256") == entry["sha256"]
    # scored again into it by a network given as such: no model's name left from before
    logic.scoreVolume(node, model=logic.loadModel(device="cpu"), tableNode=named)
    assert named.GetAttribute("SSIMQuality.model") is None and named.GetAttribute("SSIMQuality.model_sha256") is None
    assert slicer.mrmlScene.GetNodeByID(table.GetAttribute("SSIMQuality.ChartNodeID")) is not None


def test_a_catalogued_model_picked_by_name_is_checked_in_and_out_of_process(scene, module, sample_path, tmp_path,
                                                                           monkeypatch):
    """The panel names a catalogued model; a file replaced since it was catalogued is refused both ways (the
    Logic used to turn the name into a bare path, and a path has no checksum to check)."""
    from SSIMQualityLib.errors import BadModelFileError
    from SSIMQualityLib.models import build_model, find_model, register_user_model, save_checkpoint

    monkeypatch.setenv("SSIMQUALITY_USER_DIR", str(tmp_path / "user"))
    save_checkpoint(tmp_path / "a.pt", build_model("resnet18", 32))
    save_checkpoint(tmp_path / "b.pt", build_model("resnet18", 32))
    register_user_model(tmp_path / "a.pt", "site-a")
    shutil.copy(tmp_path / "b.pt", find_model("site-a")["path"])  # other weights under the catalogued name
    logic = module.SSIMQualityLogic()
    node = logic.loadVolumeFile(sample_path, "sample")
    with pytest.raises(BadModelFileError, match="checksum mismatch"):
        logic.scoreVolume(node, model="site-a", device="cpu")
    job = logic.startScoring(node, model="site-a", device="cpu")
    assert job.args[job.args.index("--model") + 1] == "site-a"
    job.wait(timeout=600)
    assert job.state == "failed" and "checksum mismatch" in job.error_message


def test_job_warnings_reach_the_caller_and_are_not_errors():
    """What a command prints as ``warning:`` on stderr is the job's ``warnings`` (the panel shows them); the job
    still succeeds, and its error message is not a warning."""
    import sys

    from SSIMQualityLib.jobs import Job

    code = ("import sys; print('warning: z.nii: 40% of the voxels are well below zero', file=sys.stderr); "
            "print('some log line', file=sys.stderr)")
    job = Job([sys.executable, "-c", code]).start().wait(timeout=60)
    assert job.state == "done" and job.warnings == ["warning: z.nii: 40% of the voxels are well below zero"]
    failing = Job([sys.executable, "-c", code + "; print('SSIMQuality: error: broken', file=sys.stderr); "
                   "sys.exit(1)"]).start().wait(timeout=60)
    assert failing.state == "failed" and failing.error_message == "SSIMQuality: error: broken"
    assert len(failing.warnings) == 1


def test_a_job_names_the_users_node_not_its_temporary_file():
    """The panel's progress read "corrupting input.nrrd" (the job's copy), as its warnings once named the copy's
    whole path."""
    import sys

    from SSIMQualityLib.jobs import Job

    path = "/tmp/SSIMQuality-x1/input.nrrd"
    code = (f"import sys; print('<filter-progress-text>corrupting input.nrrd</filter-progress-text>'); "
            f"print('warning: {path}: something', file=sys.stderr)")
    job = Job([sys.executable, "-c", code], names={path: "MRHead"}).start().wait(timeout=60)
    assert job.state == "done" and job.text == "corrupting MRHead" and job.warnings == ["warning: MRHead: something"]


def test_corruptions_say_how_they_were_made_and_replace_their_own_table(scene, module, sample):
    """Both paths (in process, a job) name, tag and tabulate a corruption alike; made again into one volume it
    replaced nothing (three tables called "moved true SSIM", two orphaned); the job turned seed 1.5 into 1 where
    corruptVolume refused it, and started a process for the panel's -1 that failed in the command's words; a
    table as the output failed deep in VTK, a label map took the image."""
    from SSIMQualityLib.errors import SSIMQualityError

    logic = module.SSIMQualityLogic()
    node = slicer.util.addVolumeFromArray(np.ascontiguousarray(sample.array[36:42]), name="t1")
    out, table = logic.corruptVolume(node, method="kspace", severity=0.7, seed=5)
    assert out.GetName() == "t1 motion (kspace 0.7)"
    assert out.GetAttribute("SSIMQuality.Corruption") == "kspace 0.7, seed 5, from t1"
    seen = {}
    job = logic.startCorruption(node, method="torchio", severity=0.4, seed=6, outputNode=out,
                                onDone=lambda j, r: seen.update(result=r)).wait(timeout=600)
    assert job.state == "done", job.errors
    again, table2 = seen["result"]
    assert again is out and table2 is table and table2.GetAttribute("SSIMQuality.seed") == "6"
    assert table2.GetAttribute("SSIMQuality.axis") == table.GetAttribute("SSIMQuality.axis") == "0"
    assert out.GetAttribute("SSIMQuality.Corruption").startswith("torchio 0.4, seed 6")
    assert len(slicer.util.getNodesByClass("vtkMRMLTableNode")) == 1
    # Scored, the corrupted volume's summary puts the prediction beside the truth over the same slices.
    job = logic.startScoring(out, device="cpu", onDone=lambda j, t: seen.update(scored=t)).wait(timeout=600)
    assert job.state == "done", job.errors
    scored = seen["scored"]
    predicted, true = table_column(scored, "predicted_ssim"), table_column(table, "ssim")
    counted = (table_column(table, "foreground") == 1) & np.isfinite(predicted)
    line = (f"over the {counted.sum()} slices of its true-SSIM table: predicted mean {predicted[counted].mean():.3f}, "
            f"true mean {true[counted].mean():.3f}")
    assert scored.GetAttribute("SSIMQuality.truth").startswith(line)
    assert scored.GetAttribute("SSIMQuality.Summary").splitlines()[1] == scored.GetAttribute("SSIMQuality.truth")
    plain = logic.scoreVolume(node)  # a volume nobody corrupted: no such line
    assert plain.GetAttribute("SSIMQuality.truth") == ""
    for start in (logic.corruptVolume, logic.startCorruption):
        for bad in (1.5, True, "7", -1):
            with pytest.raises(SSIMQualityError, match="seed must be a whole number"):
                start(node, seed=bad)
    fresh, freshTable = logic.corruptVolume(node, severity=0.2, seed=None)  # a new draw, said in the table
    assert 0 <= int(freshTable.GetAttribute("SSIMQuality.seed")) <= module.SETTING_RANGES["seed"][1]
    label = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    for wrong in (table, label):
        for call in (lambda o: logic.corruptVolume(node, outputNode=o), lambda o: logic.kspaceVolume(node, outputNode=o),
                     lambda o: logic.augmentContrast(node, outputNode=o), lambda o: logic.startCorruption(node, outputNode=o)):
            with pytest.raises(SSIMQualityError, match="the output must be a scalar volume, not a vtkMRML"):
                call(wrong)


def test_corruption_job_and_cancel(scene, module, sample_path):
    from SSIMQualityLib.corruption import corrupt_volume

    logic = module.SSIMQualityLogic()
    node = logic.loadVolumeFile(sample_path, "sample")
    seen = {}
    job = logic.startCorruption(node, method="kspace", severity=0.6, seed=3,
                                onDone=lambda j, r: seen.update(result=r)).wait(timeout=600)
    assert job.state == "done", job.errors
    assert job.error_message == ""  # not "the job ended with exit code 0"
    assert not Path(job.args[job.args.index("corrupt") + 1]).parent.exists()  # its copy of the volume is gone
    out, table = seen["result"]
    arr = slicer.util.arrayFromVolume(node)
    ref = corrupt_volume(arr, 0, method="kspace", severity=0.6, seed=3, out_dtype=arr.dtype)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(out), ref.array)
    np.testing.assert_allclose(table_column(table, "ssim"), ref.ssim, atol=1e-6)
    # Cancel: the process stops, nothing is added, onDone is not called, and the job's temporary copy of the
    # volume (a patient's scan, in the system's temporary folder) goes with it.
    called = []
    job = logic.startScoring(node, device="cpu", onDone=lambda j, t: called.append(t))
    folder = Path(job.args[-2]).parent
    assert folder.name.startswith("SSIMQuality-") and any(folder.iterdir())
    job.cancel()
    assert not job.poll() and job.state == "cancelled" and called == []
    assert not folder.exists()


def test_fine_tuning_job_catalogues_a_model_that_loads(scene, module, tmp_path, monkeypatch):
    import nibabel

    import torch

    from SSIMQualityLib.models import load_model, model_entries, open_model, read_checkpoint

    monkeypatch.setenv("SSIMQUALITY_USER_DIR", str(tmp_path / "user"))
    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(Path(nibabel.__file__).parent / "tests" / "data" / "anatomical.nii", site / "t1.nii")
    logic = module.SSIMQualityLogic()
    seen = {}
    job = logic.startFineTuning(str(site), "site-v1", steps=2, samples=16, device="cpu",
                                onDone=lambda j, e: seen.update(entry=e),
                                extraArgs=["--batch-size", "8"]).wait(timeout=900)
    assert job.state == "done", job.errors[-5:]
    entry = seen["entry"]
    assert entry["name"] == "site-v1" and len(entry["sha256"]) == 64
    listed = {e["name"]: e for e in model_entries()}
    assert listed["site-v1"]["where"] == "user"
    assert Path(listed["site-v1"]["path"]).parent == tmp_path / "user" / "models"  # not the extension's folder
    model = open_model("site-v1")  # checked against its SHA-256
    assert model.input_size == 128
    assert logic.modelPath("site-v1") == listed["site-v1"]["path"]
    # --freeze-norm: the batch-norm statistics are the starting model's, the weights are not
    start, tuned = load_model(logic.modelPath("")).state_dict(), model.state_dict()
    assert torch.equal(start["net.layer2.0.bn1.running_var"], tuned["net.layer2.0.bn1.running_var"])
    assert not torch.equal(start["net.layer2.0.conv1.weight"], tuned["net.layer2.0.conv1.weight"])
    # at a fine-tuning rate, not train's from-scratch default
    (run,) = (tmp_path / "user" / "runs").glob("site-v1-*")
    meta = json.loads(read_checkpoint(run / "model.pt")["meta"])
    assert meta["train_config"]["lr"] == module.FINE_TUNE_LR < 1e-3
    from SSIMQualityLib.errors import OutputExistsError, SSIMQualityError

    with pytest.raises(SSIMQualityError, match="give the new model a name"):
        logic.startFineTuning(str(site), "")
    # a name already taken is refused before minutes of training, not when the model is to be catalogued
    with pytest.raises(OutputExistsError, match="already in your catalogue"):
        logic.startFineTuning(str(site), "site-v1", steps=2, samples=16, device="cpu")
    # a name is not a path: one that looks like one is refused, and the run's folder stays in the user's runs/,
    # one for each name
    with pytest.raises(SSIMQualityError, match="must not look like a file path"):
        logic.startFineTuning(str(site), "../../escape", steps=2, samples=16, device="cpu")
    outs = []
    for name in ("..", "site v2", "site_v2"):
        job = logic.startFineTuning(str(site), name, steps=2, samples=16, device="cpu")
        outs.append(Path(job.args[job.args.index("--out") + 1]))
        job.cancel()
    assert all(o.parent == tmp_path / "user" / "runs" for o in outs) and len(set(outs)) == 3


def test_scoring_job_warns_of_signed_intensities_by_the_node_name(scene, module, caplog):
    """A z-scored volume scored out of process: the job succeeds, and its one warning names the node (not the
    temporary file the job was given); the same warning the Logic logs when it scores in process."""
    logic = module.SSIMQualityLogic()
    rng = np.random.default_rng(0)
    head = np.zeros((6, 48, 48), np.float32)
    head[:, 8:40, 10:38] = 100 + 10 * rng.standard_normal((6, 32, 28))
    node = slicer.util.addVolumeFromArray((head - head.mean()) / head.std(), name="zscored")
    job = logic.startScoring(node, device="cpu").wait(timeout=600)
    assert job.state == "done", job.errors
    assert len(job.warnings) == 1 and job.warnings[0].startswith("warning: zscored: ")
    assert "magnitude" in job.warnings[0]
    with caplog.at_level("WARNING"):
        logic.scoreVolume(node, model=logic.loadModel(device="cpu"))
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == job.warnings
