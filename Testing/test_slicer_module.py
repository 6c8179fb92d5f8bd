"""The Slicer module's Logic on a real MRML scene (slicer-core), its self-test, and its .ui file."""
import os
import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from slicer_scene import ROOT, table_column  # noqa: E402  (puts the shim on the path first)

import slicer  # noqa: E402

MODULE_DIR = os.path.join(ROOT, "SSIMQuality")


@pytest.fixture()
def tiny_model():
    from SSIMQualityLib.models import build_model

    return build_model("resnet18", 64).eval()


def _matrix(node):
    import vtk

    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(i, j) for j in range(4)] for i in range(4)])


def test_load_and_score_sample(scene, module, sample_path, sample, tiny_model):
    logic = module.SSIMQualityLogic()
    node = logic.loadVolumeFile(sample_path)
    arr, spacing = logic.volumeArray(node)
    np.testing.assert_array_equal(arr, sample.array)  # Slicer's (k, j, i) order = ours
    table = logic.scoreVolume(node, model=tiny_model)
    axis = int(table.GetAttribute("SSIMQuality.axis"))
    assert axis == 0  # thickest spacing (2 mm slices)
    assert table.GetNumberOfRows() == arr.shape[axis]
    cols = [table.GetColumnName(i) for i in range(table.GetNumberOfColumns())]
    assert cols == ["slice", "predicted_ssim", "clinical_class", "class3", "class5", "class10", "foreground"]
    p = table_column(table, "predicted_ssim")
    fg = table_column(table, "foreground").astype(bool)
    assert np.all((p[fg] >= 0) & (p[fg] <= 1)) and np.all(np.isnan(p[~fg]))
    assert fg.sum() > 0.6 * len(fg)
    assert float(table.GetAttribute("SSIMQuality.mean_predicted_ssim")) == pytest.approx(np.nanmean(p[fg]))
    chart = scene.GetNodeByID(table.GetAttribute("SSIMQuality.ChartNodeID"))
    assert chart.IsA("vtkMRMLPlotChartNode") and chart.GetNumberOfPlotSeriesNodes() == 3
    # Cancel from the progress callback: nothing returned.
    assert logic.scoreVolume(node, model=tiny_model, progress=lambda done, total: False) is None
    # Scored again into the same table: its chart is replaced, not left beside a new one (five nodes a time).
    count = scene.GetNumberOfNodes()
    again = logic.scoreVolume(node, model=tiny_model, tableNode=table)
    assert again is table and scene.GetNumberOfNodes() == count
    assert scene.GetNodeByID(chart.GetID()) is None
    assert scene.GetNodeByID(table.GetAttribute("SSIMQuality.ChartNodeID")).GetNumberOfPlotSeriesNodes() == 3
    # ... but what the user added stays: another volume's table and series put on this chart to compare them
    other = logic.scoreVolume(node, model=tiny_model)
    theirs = scene.GetNodeByID(other.GetAttribute("SSIMQuality.ChartNodeID")).GetNthPlotSeriesNode(0)
    mine = scene.GetNodeByID(table.GetAttribute("SSIMQuality.ChartNodeID"))
    mine.AddAndObservePlotSeriesNodeID(theirs.GetID())
    logic.scoreVolume(node, model=tiny_model, tableNode=table)
    assert scene.GetNodeByID(other.GetID()) is other and scene.GetNodeByID(theirs.GetID()) is theirs
    assert scene.GetNodeByID(mine.GetID()) is mine and mine.GetNumberOfPlotSeriesNodes() == 1  # only theirs left


@pytest.mark.parametrize("stored", ["as_ras", "as_dicom"])
def test_a_loaded_volume_scores_as_its_file_does(scene, module, tiny_model, sample, tmp_path, stored):
    """The node's orientation reaches the network as the file's does (slices turned as a viewer shows them), so
    the panel and `ssimquality score` agree on a scan however it is stored, and on its twin stored otherwise."""
    import dataclasses

    from SSIMQualityLib.scoring import score_array
    from SSIMQualityLib.volumes import read_volume, write_volume

    from helpers import stored_otherwise

    vol = dataclasses.replace(sample, direction=(-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0))
    vol = stored_otherwise(vol) if stored == "as_dicom" else vol
    path = write_volume(vol.array, vol, tmp_path / f"{stored}.nii.gz")
    from_file = read_volume(path)
    logic = module.SSIMQualityLogic()
    node = logic.loadVolumeFile(path)
    np.testing.assert_allclose(logic.volumeDirection(node), from_file.direction, atol=1e-6)
    table = logic.scoreVolume(node, model=tiny_model)
    expected = score_array(tiny_model, from_file.array, from_file.spacing, direction=from_file.direction).predicted
    np.testing.assert_allclose(table_column(table, "predicted_ssim"), expected, atol=1e-5, equal_nan=True)


def test_score_volume_takes_a_model_by_name_or_file_as_jobs_do(scene, module, sample):
    """scoreVolume(model=...) takes what startScoring takes (a catalogue name or a file), not only a loaded model
    (a name gave AttributeError: 'str' object has no attribute 'parameters')."""
    from SSIMQualityLib.models import bundled_model_entry

    logic = module.SSIMQualityLogic()
    node = slicer.util.addVolumeFromArray(np.ascontiguousarray(sample.array[34:40]), name="few")
    node.SetSpacing(*sample.spacing[::-1])
    default = table_column(logic.scoreVolume(node), "predicted_ssim")
    by_name = table_column(logic.scoreVolume(node, model=bundled_model_entry()["name"]), "predicted_ssim")
    by_file = table_column(logic.scoreVolume(node, model=logic.modelPath("")), "predicted_ssim")
    assert np.isfinite(default).sum() >= 4
    np.testing.assert_array_equal(by_name, default)
    np.testing.assert_array_equal(by_file, default)


def test_axis_follows_geometry_for_oblique_lps_volume(scene, module, tiny_model):
    """Thick spacing along i (the last array axis), oblique direction, LPS-like origin."""
    import vtk

    logic = module.SSIMQualityLogic()
    arr = np.zeros((40, 36, 12), np.float32)
    arr[5:35, 5:31, :] = np.random.default_rng(0).random((30, 26, 12)) * 100 + 50
    node = slicer.util.addVolumeFromArray(arr, name="oblique")
    node.SetSpacing(0.9, 0.9, 0.9)
    node.SetSpacing(4.0, 0.9, 0.9)  # (i, j, k): i is thick
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASDirectionMatrix(m)
    c, s = np.cos(0.3), np.sin(0.3)
    for i, row in enumerate([[-c, s, 0], [-s, -c, 0], [0, 0, 1]]):
        for j, v in enumerate(row):
            m.SetElement(i, j, v)
    node.SetIJKToRASDirectionMatrix(m)
    node.SetOrigin(120.0, 110.0, -60.0)
    table = logic.scoreVolume(node, model=tiny_model)
    assert int(table.GetAttribute("SSIMQuality.axis")) == 2
    assert table.GetNumberOfRows() == 12
    out, true_table = logic.corruptVolume(node, severity=0.5, seed=1)
    np.testing.assert_allclose(_matrix(out), _matrix(node))
    assert true_table.GetNumberOfRows() == 12


def test_corrupt_kspace_contrast(scene, module, sample_path):
    logic = module.SSIMQualityLogic()
    node = logic.loadVolumeFile(sample_path)
    arr, _ = logic.volumeArray(node)
    out, table = logic.corruptVolume(node, method="kspace", severity=0.0, seed=0)
    assert np.all(table_column(table, "ssim") == 1.0)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(out), arr)
    out2, table2 = logic.corruptVolume(node, method="torchio", severity=0.7, seed=2)
    assert table2.GetNumberOfRows() == arr.shape[0]
    s = table_column(table2, "ssim")
    assert np.all((s > 0) & (s <= 1)) and s.mean() < 0.99
    np.testing.assert_allclose(_matrix(out2), _matrix(node))
    assert scene.GetNodeByID(out2.GetAttribute("SSIMQuality.TrueSSIMTableID")) is table2
    # A range of severities (one drawn per slice) is a valid setting: named as the CLI writes it (it crashed
    # while naming the output, after the work).
    out3, table3 = logic.corruptVolume(node, method="kspace", severity=(0.2, 0.6), seed=4)
    assert out3.GetName().endswith(" motion (kspace 0.2,0.6)") and "severity 0.2,0.6" in table3.GetAttribute("SSIMQuality.Summary")
    k = logic.kspaceVolume(node)
    karr = slicer.util.arrayFromVolume(k)
    assert karr.shape == arr.shape and karr.min() >= 0
    np.testing.assert_allclose(_matrix(k), _matrix(node))
    c = logic.augmentContrast(node, kind="sigmoid", parameter=10.0)
    carr = slicer.util.arrayFromVolume(c)
    assert carr.min() >= 0 and carr.max() <= 1 and carr.shape == arr.shape
    r1 = slicer.util.arrayFromVolume(logic.augmentContrast(node, kind="gamma", seed=3))
    r2 = slicer.util.arrayFromVolume(logic.augmentContrast(node, kind="gamma", seed=3))
    np.testing.assert_array_equal(r1, r2)


def test_a_corruption_without_a_seed_says_the_seed_that_repeats_it(scene, module, sample):
    """Seed -1 in the panel (a new draw each time) left no way to make a liked teaching example again."""
    logic = module.SSIMQualityLogic()
    node = slicer.util.addVolumeFromArray(np.ascontiguousarray(sample.array[30:34]), name="few")
    out, table = logic.corruptVolume(node, severity=0.6)
    seed = int(table.GetAttribute("SSIMQuality.seed"))
    assert f"seed {seed}" in table.GetAttribute("SSIMQuality.Summary")
    logic.setParameters(seed=seed)  # typed back into the panel's seed box (a seed above its range was refused)
    again, _ = logic.corruptVolume(node, severity=0.6, seed=logic.getParameters()["seed"])
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(again), slicer.util.arrayFromVolume(out))


def _zscored_and_plain(size):
    """Nodes "zscored" (signed intensities) and "plain" (its magnitude image): a noisy box of head on air."""
    rng = np.random.default_rng(0)
    head = np.zeros((6, size, size), np.float32)
    head[:, 8:size - 8, 10:size - 10] = 100 + 10 * rng.standard_normal((6, size - 16, size - 20))
    return (slicer.util.addVolumeFromArray((head - head.mean()) / head.std(), name="zscored"),
            slicer.util.addVolumeFromArray(head, name="plain"))


def test_signed_volume_is_corrupted_with_one_warning(scene, module, caplog):
    """A z-scored volume is not a magnitude image: the Logic corrupts it and logs the CLI's warning line once;
    a magnitude volume gets none."""
    logic = module.SSIMQualityLogic()
    signed, plain = _zscored_and_plain(40)
    with caplog.at_level("WARNING"):
        out, _ = logic.corruptVolume(signed, severity=0.5, seed=1)
    lines = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(lines) == 1 and lines[0].startswith("warning: zscored:") and "magnitude" in lines[0]
    assert slicer.util.arrayFromVolume(out).min() >= 0  # the negatives were zeroed, as the line says
    caplog.clear()
    with caplog.at_level("WARNING"):
        logic.corruptVolume(plain, severity=0.5, seed=1)
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_a_signed_volumes_warning_stays_with_its_scores(scene, module, tiny_model, caplog):
    """The warning was logged and shown until the panel's label changed; the table said "-> good" with no
    caveat. Now it is in the table's attributes and below its summary line (saved with the scene)."""
    logic = module.SSIMQualityLogic()
    signed, plain = _zscored_and_plain(48)
    with caplog.at_level("WARNING"):
        table = logic.scoreVolume(signed, model=tiny_model)
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        table.GetAttribute("SSIMQuality.warnings")]
    assert table.GetAttribute("SSIMQuality.warnings").startswith("warning: zscored: ")
    assert table.GetAttribute("SSIMQuality.Summary").endswith(table.GetAttribute("SSIMQuality.warnings"))
    quiet = logic.scoreVolume(plain, model=tiny_model)
    assert quiet.GetAttribute("SSIMQuality.warnings") == "" and "\n" not in quiet.GetAttribute("SSIMQuality.Summary")


def test_a_mask_loaded_as_an_image_is_scored_with_a_warning(scene, module, tiny_model, sample, caplog):
    """A segmentation loaded without "LabelMap" ticked is a scalar volume: it got a verdict and no word."""
    import warnings

    from SSIMQualityLib.scoring import score_array
    from SSIMQualityLib.slices import FewValuesWarning

    labels = np.digitize(sample.array, np.percentile(sample.array, [50, 70, 90])).astype(np.uint8)
    node = slicer.util.addVolumeFromArray(np.ascontiguousarray(labels[30:36]), name="seg")
    with caplog.at_level("WARNING"):
        table = module.SSIMQualityLogic().scoreVolume(node, model=tiny_model)
    assert "4 distinct values (a label map or a mask?)" in table.GetAttribute("SSIMQuality.warnings")
    assert table.GetAttribute("SSIMQuality.warnings").startswith("warning: seg: ")
    with pytest.warns(FewValuesWarning):
        score_array(tiny_model, labels[30:36], sample.spacing)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        score_array(tiny_model, sample.array[30:36], sample.spacing)  # the image itself: nothing to say


def test_a_noise_volume_is_scored_with_a_warning_kept_with_its_table(scene, module, tiny_model, sample, caplog):
    """A failed reconstruction or a noise calibration series loaded by mistake got a verdict and no word."""
    rng = np.random.default_rng(2)
    node = slicer.util.addVolumeFromArray(rng.normal(50.0, 9.0, (6, 64, 64)).clip(0).astype(np.float32),
                                          name="noisecal")
    with caplog.at_level("WARNING"):
        table = module.SSIMQualityLogic().scoreVolume(node, model=tiny_model)
    line = table.GetAttribute("SSIMQuality.warnings")
    assert line.startswith("warning: noisecal: neighbouring voxels are hardly correlated") and "not an image" in line
    assert table.GetAttribute("SSIMQuality.Summary").endswith(line)
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [line]


def test_the_summary_line_counts_slices_and_cannot_contradict_its_verdict(scene, module):
    """41 good and 10 rescan of 51 is 19.6 % rescan: "good", printed as "rescan 20% -> good"."""
    from SSIMQualityLib.labels import all_classes
    from SSIMQualityLib.scoring import VolumeScore

    p = np.array([0.95] * 41 + [0.5] * 10)
    table = module.SSIMQualityLogic()._fillScoreTable(
        VolumeScore(0, p, np.ones(51, bool), all_classes(p)), "v")
    line = table.GetAttribute("SSIMQuality.Summary")
    assert "41 good, 0 sufficient, 10 rescan -> good" in line and "rescan from 20% rescan slices" in line
    assert "%," not in line.split("->")[0]


def test_the_panels_first_choice_is_a_volume_it_can_score(scene, module):
    """A label map added first was picked (GetFirstNodeByClass returns subclasses) while the selector showed
    another volume; scoring then failed with "is a label map"."""
    logic = module.SSIMQualityLogic()
    assert logic.firstScorableVolume() is None
    scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "brain labels")
    image = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "T1")
    assert logic.firstScorableVolume() is image


def test_clear_errors_for_odd_nodes(scene, module, tiny_model):
    from SSIMQualityLib.errors import SSIMQualityError

    logic = module.SSIMQualityLogic()
    empty = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    with pytest.raises(SSIMQualityError, match="no image data"):
        logic.scoreVolume(empty, model=tiny_model)
    vec = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "rgb")
    with pytest.raises(SSIMQualityError, match="vector"):
        logic.scoreVolume(vec, model=tiny_model)
    seq = slicer.util.addVolumeFromArray(np.random.rand(10, 20, 20).astype(np.float32), name="frame")
    seq.SetAttribute("SequenceBrowser.ProxyNode", "1")
    with pytest.raises(SSIMQualityError, match="4-D sequence"):
        logic.scoreVolume(seq, model=tiny_model)
    with pytest.raises(SSIMQualityError, match="no input volume"):
        logic.scoreVolume(None, model=tiny_model)
    const = slicer.util.addVolumeFromArray(np.ones((10, 20, 20), np.float32), name="const")
    with pytest.raises(SSIMQualityError, match="same value"):
        logic.corruptVolume(const)


def test_module_self_test_runs(scene, module):
    t = module.SSIMQualityTest()
    t.runTest()


def test_module_metadata(module):
    class Parent:
        pass

    m = module.SSIMQuality(Parent())
    assert m.parent.categories == ["Quality Assurance"]
    assert "rescan" in m.parent.helpText and "Limits" in m.parent.helpText
    assert m.parent.contributors and m.parent.acknowledgementText.strip()


def test_ui_parses_and_has_every_widget_the_widget_uses():
    ui = os.path.join(MODULE_DIR, "Resources", "UI", "SSIMQuality.ui")
    tree = ET.parse(ui)
    names = {w.get("name") for w in tree.iter("widget")}
    source = open(os.path.join(MODULE_DIR, "SSIMQuality.py"), encoding="utf-8").read()
    used = set(re.findall(r"self\.ui\.(\w+)", source))
    assert used, "the widget binds names from the .ui"
    assert used <= names, f"missing in .ui: {sorted(used - names)}"
    declared = {c.findtext("class") for c in tree.iter("customwidget")}
    custom = {w.get("class") for w in tree.iter("widget")} - {"QLabel", "QPushButton", "QComboBox", "QProgressBar",
                                                               "QSpinBox", "QCheckBox", "QLineEdit"}
    assert custom <= declared


def test_module_resources_exist():
    for rel in ("Resources/Icons/SSIMQuality.png", "Resources/requirements.txt", "CMakeLists.txt"):
        assert os.path.isfile(os.path.join(MODULE_DIR, rel)), rel
    cm = open(os.path.join(MODULE_DIR, "CMakeLists.txt"), encoding="utf-8").read().replace("${MODULE_NAME}", "SSIMQuality")
    assert "slicerMacroBuildScriptedModule" in cm and "SSIMQuality.ui" in cm and "SSIMQuality.png" in cm
    req = open(os.path.join(MODULE_DIR, "Resources", "requirements.txt"), encoding="utf-8").read()
    for pkg in ("torchio", "scikit-image", "torchvision"):
        assert pkg in req


def test_extension_cmakelists():
    text = open(os.path.join(ROOT, "CMakeLists.txt"), encoding="utf-8").read()
    for field in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
                  "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS", "EXTENSION_DEPENDS"):
        assert re.search(rf'set\({field} "[^"]+"\)', text), field
    assert 'EXTENSION_DEPENDS "PyTorch"' in text
    assert "add_subdirectory(SSIMQuality)" in text and "add_subdirectory(SSIMQualityCLI)" in text


# -- the Logic's bad-input table (reliability issue) ---------------------------
# Each case: (id, call(logic, nodes, files, model), words in the one-line message, what the message must name).

def _bad_logic_nodes(scene):
    import slicer

    nodes = {"head": slicer.util.addVolumeFromArray((np.random.default_rng(0).random((12, 40, 40)) * 100).astype(np.float32), name="head"),
             "empty": scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "emptyvol"),
             "rgb": scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "rgbvol"),
             "const": slicer.util.addVolumeFromArray(np.ones((10, 20, 20), np.float32), name="constvol"),
             "nan": slicer.util.addVolumeFromArray(np.full((10, 20, 20), np.nan, np.float32), name="nanvol"),
             "tiny": slicer.util.addVolumeFromArray(np.random.rand(20, 8, 8).astype(np.float32), name="tinyvol"),
             "frame": slicer.util.addVolumeFromArray(np.random.rand(10, 20, 20).astype(np.float32), name="framevol"),
             "labels": slicer.util.addVolumeFromArray((np.random.rand(10, 20, 20) * 4).astype(np.int16), name="labelvol",
                                                      nodeClassName="vtkMRMLLabelMapVolumeNode"),
             "table": scene.AddNewNodeByClass("vtkMRMLTableNode", "tablenode")}
    nodes["frame"].SetAttribute("SequenceBrowser.ProxyNode", "1")
    return nodes


def _bad_logic_files(folder, sample_path):
    data = sample_path.read_bytes()
    files = {"empty": folder / "empty.nii.gz", "text": folder / "notes.nii", "trunc": folder / "cut.nii.gz",
             "missing": folder / "nope.nii.gz", "model_text": folder / "model.pt"}
    files["empty"].write_bytes(b"")
    files["text"].write_text("not an image\n" * 40, encoding="utf-8")
    files["trunc"].write_bytes(data[: len(data) // 3])
    files["model_text"].write_text("not a model\n", encoding="utf-8")
    return files


BAD_LOGIC = [
    ("score-none", lambda lg, n, f, m: lg.scoreVolume(None, model=m), "no input volume", None),
    ("score-no-image", lambda lg, n, f, m: lg.scoreVolume(n["empty"], model=m), "no image data", "emptyvol"),
    ("score-vector", lambda lg, n, f, m: lg.scoreVolume(n["rgb"], model=m), "vector", "rgbvol"),
    ("score-sequence-frame", lambda lg, n, f, m: lg.scoreVolume(n["frame"], model=m), "4-D sequence", "framevol"),
    ("score-constant", lambda lg, n, f, m: lg.scoreVolume(n["const"], model=m), "same value", "constvol"),
    ("score-nan", lambda lg, n, f, m: lg.scoreVolume(n["nan"], model=m), "NaN", "nanvol"),
    ("score-tiny", lambda lg, n, f, m: lg.scoreVolume(n["tiny"], model=m), "too small", "tinyvol"),
    ("score-bad-axis", lambda lg, n, f, m: lg.scoreVolume(n["head"], model=m, axis=5), "axis must be", "head"),
    ("score-label-map", lambda lg, n, f, m: lg.scoreVolume(n["labels"], model=m), "label map", "labelvol"),
    ("score-table", lambda lg, n, f, m: lg.scoreVolume(n["table"], model=m), "not a volume", "tablenode"),
    ("corrupt-label-map", lambda lg, n, f, m: lg.corruptVolume(n["labels"]), "label map", "labelvol"),
    ("start-corruption-none", lambda lg, n, f, m: lg.startCorruption(None), "no input volume", None),
    ("score-model-name-unknown", lambda lg, n, f, m: lg.scoreVolume(n["head"], model=str(f["missing"])), "no such model file, and no catalogued model of that name", "nope.nii.gz"),
    ("corrupt-constant", lambda lg, n, f, m: lg.corruptVolume(n["const"]), "same value", "constvol"),
    ("corrupt-severity", lambda lg, n, f, m: lg.corruptVolume(n["head"], severity=1.5), "severity", "head"),
    ("corrupt-method", lambda lg, n, f, m: lg.corruptVolume(n["head"], method="shake"), "unknown method", "head"),
    ("corrupt-severity-text", lambda lg, n, f, m: lg.corruptVolume(n["head"], severity="0.5"), "severity", "head"),
    ("corrupt-seed-negative", lambda lg, n, f, m: lg.corruptVolume(n["head"], seed=-1), "seed must be a whole number", None),
    ("contrast-seed-negative", lambda lg, n, f, m: lg.augmentContrast(n["head"], seed=-1), "seed must be a whole number", None),
    ("corrupt-into-input", lambda lg, n, f, m: lg.corruptVolume(n["head"], outputNode=n["head"]), "input volume", "head"),
    ("kspace-no-image", lambda lg, n, f, m: lg.kspaceVolume(n["empty"]), "no image data", "emptyvol"),
    ("kspace-into-input", lambda lg, n, f, m: lg.kspaceVolume(n["head"], outputNode=n["head"]), "input volume", "head"),
    ("contrast-kind", lambda lg, n, f, m: lg.augmentContrast(n["head"], kind="posterize"), "unknown contrast kind", "head"),
    ("contrast-kind-random", lambda lg, n, f, m: lg.augmentContrast(n["head"], kind="posterize", seed=1), "unknown contrast kind", "head"),
    ("contrast-gamma-negative", lambda lg, n, f, m: lg.augmentContrast(n["head"], kind="gamma", parameter=-1), "gamma", "head"),
    ("contrast-into-input", lambda lg, n, f, m: lg.augmentContrast(n["head"], outputNode=n["head"]), "input volume", "head"),
    ("load-missing", lambda lg, n, f, m: lg.loadVolumeFile(f["missing"]), "does not exist", "nope.nii.gz"),
    ("load-empty", lambda lg, n, f, m: lg.loadVolumeFile(f["empty"]), "empty", "empty.nii.gz"),
    ("load-text", lambda lg, n, f, m: lg.loadVolumeFile(f["text"]), "not a readable image", "notes.nii"),
    ("load-truncated", lambda lg, n, f, m: lg.loadVolumeFile(f["trunc"]), "truncated", "cut.nii.gz"),
    ("model-missing", lambda lg, n, f, m: lg.loadModel(f["missing"]), "no such model file, and no catalogued model of that name", "nope.nii.gz"),
    ("model-not-checkpoint", lambda lg, n, f, m: lg.loadModel(f["model_text"]), "cannot be loaded", "model.pt"),
]


def _node_state(scene):
    """IDs of every node and a checksum of every volume's voxels."""
    import hashlib

    import slicer

    state = {}
    for i in range(scene.GetNumberOfNodes()):
        node = scene.GetNthNode(i)
        digest = None
        if node.IsA("vtkMRMLScalarVolumeNode") and node.GetImageData() is not None:
            digest = hashlib.sha256(np.ascontiguousarray(slicer.util.arrayFromVolume(node)).tobytes()).hexdigest()
        state[node.GetID()] = digest
    return state


@pytest.mark.parametrize("case", BAD_LOGIC, ids=[c[0] for c in BAD_LOGIC])
def test_logic_bad_input_table(case, scene, module, tiny_model, sample_path, tmp_path):
    import hashlib

    from SSIMQualityLib.errors import SSIMQualityError

    _, call, words, names = case
    logic = module.SSIMQualityLogic()
    nodes = _bad_logic_nodes(scene)
    files = _bad_logic_files(tmp_path, sample_path)
    before_files = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.iterdir()}
    before_nodes = _node_state(scene)
    with pytest.raises(SSIMQualityError) as info:
        call(logic, nodes, files, tiny_model)
    line = info.value.one_line()
    assert "\n" not in line and words in line, line
    if names is not None:
        assert names in line, f"the message names what is wrong: {line}"
    assert _node_state(scene) == before_nodes, "no node added, no voxel of any volume changed"
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.iterdir()} == before_files
