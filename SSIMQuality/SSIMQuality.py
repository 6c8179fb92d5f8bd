"""SSIMQuality: reference-free motion-artefact quality of MR brain volumes, inside 3D Slicer.

Module (metadata), Widget (thin Qt layer), Logic (MRML in, MRML out, usable
from the Python console with no GUI; every step is done by SSIMQualityLib)
and Test (Slicer's self-test), in the layout of Slicer's scripted-module
template.  Qt is imported only inside the Widget so that the Logic and the
Test run wherever MRML does.
"""
import os
import sys

import numpy as np
import vtk

import slicer
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)

# SSIMQualityLib sits next to this module once installed, and one folder up in a source checkout.
_HERE = os.path.dirname(os.path.abspath(__file__))
for _candidate in (_HERE, os.path.dirname(_HERE)):
    if os.path.isdir(os.path.join(_candidate, "SSIMQualityLib")) and _candidate not in sys.path:
        sys.path.insert(0, _candidate)
        break

#: Python packages the module needs beyond what Slicer ships (import name → pip requirement).
REQUIRED_PACKAGES = {"torch": "torch", "torchvision": "torchvision", "torchio": "torchio", "skimage": "scikit-image"}


#
# Module
#

class SSIMQuality(ScriptedLoadableModule):
    """Module metadata (title, category, help); nothing else."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "SSIM Quality"
        self.parent.categories = ["Quality Assurance"]
        self.parent.dependencies = []
        self.parent.contributors = ["SSIMQuality developers"]
        self.parent.helpText = """
Scores MR brain volumes for motion artefacts without a reference image. A ResNet looks at each 2-D slice
(along the acquisition axis) and predicts the SSIM the slice would have against its motion-free twin.
Predicted SSIM is binned into clinical classes: good (&ge; 0.85), sufficient (0.60&ndash;0.85) and rescan (&lt; 0.60).
<br><br>The module also simulates motion (our k-space algorithm, the paper's variant, TorchIO's model), shows the
log-magnitude k-space of each slice, and applies contrast changes, for teaching.
<br><br><b>Limits:</b> the bundled model was trained on synthetic contrasts made from the MNI152 template; check it on
your own scans before relying on it. Slices with little head are flagged, not scored. It rates motion artefacts
only, not other image problems.
"""
        self.parent.acknowledgementText = """
Method: reference-free image quality assessment by regressing SSIM (ResNet on synthetic motion with contrast
augmentation). Motion simulation uses TorchIO (P&eacute;rez-Garc&iacute;a et al., 2021; Shaw et al., 2019). Training data
are synthesised from the MNI ICBM152 2009 template (Fonov et al., 2009/2011) shipped with nilearn.
"""


#
# Widget
#

class SSIMQualityWidget(ScriptedLoadableModuleWidget):
    """Thin Qt layer: binds the .ui widgets to Logic calls."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        self.logic = None
        self.ui = None
        self._cancel = False

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SSIMQuality.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = SSIMQualityLogic()
        for kind in CONTRAST_KINDS:
            self.ui.contrastKindComboBox.addItem(kind)
        for method in CORRUPTION_METHODS:
            self.ui.methodComboBox.addItem(method)
        self.ui.deviceComboBox.addItems(["auto", "cpu", "cuda"])
        self.ui.scoreButton.connect("clicked(bool)", self.onScore)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.corruptButton.connect("clicked(bool)", self.onCorrupt)
        self.ui.kspaceButton.connect("clicked(bool)", self.onKspace)
        self.ui.contrastButton.connect("clicked(bool)", self.onContrast)
        self.ui.inputSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.updateButtons)
        self.ui.progressBar.setVisible(False)
        self.ui.cancelButton.setEnabled(False)
        self.updateButtons()

    def updateButtons(self, *_):
        has = self.ui.inputSelector.currentNode() is not None
        for b in (self.ui.scoreButton, self.ui.corruptButton, self.ui.kspaceButton, self.ui.contrastButton):
            b.setEnabled(has)

    def ensureDependencies(self):
        """Ask before installing anything; torch through the PyTorch extension where present."""
        missing = self.logic.missingPackages()
        if not missing:
            return True
        hasEnsure = hasattr(slicer, "packaging") and hasattr(slicer.packaging, "pip_ensure")  # Slicer 5.12+
        if not hasEnsure and not slicer.util.confirmOkCancelDisplay(
                "SSIM Quality needs these Python packages: " + ", ".join(missing)
                + ".\nInstall them now? (This downloads several hundred MB and may take minutes.)"):
            return False
        if "torch" in missing:
            try:
                import PyTorchUtils

                if PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=True,
                                                                torchvisionVersionRequirement=">=0.13") is None:
                    return False
            except ImportError:
                slicer.util.pip_install("torch torchvision")
        requirementsFile = self.resourcePath("requirements.txt")
        if hasEnsure:
            from packaging.requirements import Requirement

            with open(requirementsFile, encoding="utf-8") as fh:
                lines = [line.strip() for line in fh if line.strip() and not line.lstrip().startswith("#")]
            slicer.packaging.pip_ensure([Requirement(line) for line in lines], requester="SSIM Quality")
        else:
            slicer.util.pip_install(f"-r {requirementsFile}")
        return not self.logic.missingPackages()

    def _progress(self, done, total):
        self.ui.progressBar.setMaximum(total)
        self.ui.progressBar.setValue(done)
        slicer.app.processEvents()
        return not self._cancel

    def onCancel(self):
        self._cancel = True

    def onScore(self):
        with slicer.util.tryWithErrorDisplay("Scoring failed.", waitCursor=True):
            if not self.ensureDependencies():
                return
            self._cancel = False
            self.ui.progressBar.setVisible(True)
            self.ui.cancelButton.setEnabled(True)
            try:
                model = self.logic.loadModel(self.ui.modelPathLineEdit.currentPath or None,
                                             self.ui.deviceComboBox.currentText)
                table = self.logic.scoreVolume(self.ui.inputSelector.currentNode(), model=model,
                                               device=self.ui.deviceComboBox.currentText, progress=self._progress)
            finally:
                self.ui.progressBar.setVisible(False)
                self.ui.cancelButton.setEnabled(False)
            if table is None:
                return  # cancelled
            self.showResults(table)

    def showResults(self, table):
        chartId = table.GetAttribute("SSIMQuality.ChartNodeID")
        slicer.app.layoutManager().setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpPlotTableView)
        selection = slicer.app.applicationLogic().GetSelectionNode()
        selection.SetActiveTableID(table.GetID())
        selection.SetActivePlotChartID(chartId)
        slicer.app.applicationLogic().PropagateTableSelection()
        slicer.app.applicationLogic().PropagatePlotChartSelection()
        self.ui.summaryLabel.setText(table.GetAttribute("SSIMQuality.Summary") or "")

    def _showSideBySide(self, inputNode, outputNode):
        slicer.app.layoutManager().setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView)
        red = slicer.app.layoutManager().sliceWidget("Red").sliceLogic().GetSliceCompositeNode()
        yellow = slicer.app.layoutManager().sliceWidget("Yellow").sliceLogic().GetSliceCompositeNode()
        red.SetBackgroundVolumeID(inputNode.GetID())
        yellow.SetBackgroundVolumeID(outputNode.GetID())
        for name in ("Red", "Yellow"):
            slicer.app.layoutManager().sliceWidget(name).sliceLogic().FitSliceToAll()

    def onCorrupt(self):
        with slicer.util.tryWithErrorDisplay("Corruption failed.", waitCursor=True):
            if not self.ensureDependencies():
                return
            seed = self.ui.seedSpinBox.value if self.ui.seedSpinBox.value >= 0 else None
            inputNode = self.ui.inputSelector.currentNode()
            out, table = self.logic.corruptVolume(inputNode, method=self.ui.methodComboBox.currentText,
                                                  severity=self.ui.severitySlider.value, seed=seed)
            self._showSideBySide(inputNode, out)
            self.ui.summaryLabel.setText(table.GetAttribute("SSIMQuality.Summary") or "")
            if self.ui.showKspaceCheckBox.checked:
                self._showSideBySide(out, self.logic.kspaceVolume(out))

    def onKspace(self):
        with slicer.util.tryWithErrorDisplay("k-space display failed.", waitCursor=True):
            inputNode = self.ui.inputSelector.currentNode()
            self._showSideBySide(inputNode, self.logic.kspaceVolume(inputNode))

    def onContrast(self):
        with slicer.util.tryWithErrorDisplay("Contrast change failed.", waitCursor=True):
            if not self.ensureDependencies():
                return
            inputNode = self.ui.inputSelector.currentNode()
            out = self.logic.augmentContrast(inputNode, kind=self.ui.contrastKindComboBox.currentText,
                                             parameter=self.ui.contrastParameterSlider.value)
            self._showSideBySide(inputNode, out)


#
# Logic
#

CONTRAST_KINDS = ("gamma", "log", "sigmoid", "ahe")
CORRUPTION_METHODS = ("kspace", "paper", "torchio", "random")


class SSIMQualityLogic(ScriptedLoadableModuleLogic):
    """MRML nodes and plain values in and out; no Qt.  Usable from the Python console::

        logic = slicer.modules.ssimquality.widgetRepresentation().self().logic  # or SSIMQualityLogic()
        table = logic.scoreVolume(getNode("MRHead"))
        print(table.GetAttribute("SSIMQuality.Summary"))
    """

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self._model = None
        self._modelKey = None

    # -- dependencies -------------------------------------------------------

    @staticmethod
    def missingPackages():
        """pip names of required packages that cannot be imported."""
        import importlib.util

        return [pip for mod, pip in REQUIRED_PACKAGES.items() if importlib.util.find_spec(mod) is None]

    def _requireLibrary(self):
        missing = self.missingPackages()
        if missing:
            from SSIMQualityLib.errors import MissingDependencyError

            raise MissingDependencyError("Python packages missing: " + ", ".join(missing),
                                         hint="open the SSIM Quality module to install them, or run "
                                              "slicer.util.pip_install('" + " ".join(missing) + "')")

    # -- volumes <-> arrays ---------------------------------------------------

    @staticmethod
    def volumeArray(volumeNode):
        """(array in (k, j, i) order as float32, spacing per array axis) with clear errors for odd nodes."""
        from SSIMQualityLib.errors import UnsupportedImageError
        from SSIMQualityLib.volumes import Volume, check_volume

        if volumeNode is None:
            raise UnsupportedImageError("no input volume selected", hint="select a volume")
        name = volumeNode.GetName()
        if volumeNode.IsA("vtkMRMLSequenceNode") or volumeNode.GetAttribute("SequenceBrowser.ProxyNode") is not None \
                or volumeNode.IsA("vtkMRMLMultiVolumeNode"):
            raise UnsupportedImageError("this is one frame of a 4-D sequence", name,
                                        "choose a single 3-D volume (e.g. copy the current frame)")
        if volumeNode.IsA("vtkMRMLVectorVolumeNode") or volumeNode.IsA("vtkMRMLDiffusionWeightedVolumeNode"):
            raise UnsupportedImageError("vector, RGB or diffusion volumes cannot be scored", name,
                                        "convert it to a scalar volume first")
        image = volumeNode.GetImageData()
        if image is None or image.GetNumberOfPoints() == 0:
            raise UnsupportedImageError("volume has no image data", name, "load or compute the image first")
        if image.GetNumberOfScalarComponents() != 1:
            raise UnsupportedImageError(f"volume has {image.GetNumberOfScalarComponents()} components per voxel",
                                        name, "convert it to a scalar volume first")
        array = slicer.util.arrayFromVolume(volumeNode)
        spacing = tuple(float(s) for s in volumeNode.GetSpacing()[::-1])  # (i, j, k) -> per array axis
        check_volume(Volume(array=array, spacing=spacing, path=name))
        return np.asarray(array), spacing

    @staticmethod
    def _checkOutput(inputNode, outputNode):
        """Refuse, before any work, an output that would overwrite the user's input volume."""
        if outputNode is not None and inputNode is not None and outputNode.GetID() == inputNode.GetID():
            from SSIMQualityLib.errors import OutputExistsError

            raise OutputExistsError("the output volume is the input volume: the original would be lost",
                                    inputNode.GetName(), "choose another output volume or create a new one")

    @staticmethod
    def _parameters(name, make, *args):
        """``make(*args)`` with the library's ValueError for a bad setting turned into one clear error."""
        try:
            return make(*args)
        except ValueError as exc:
            from SSIMQualityLib.errors import SSIMQualityError

            raise SSIMQualityError(str(exc), name, "change the setting and try again") from None

    @staticmethod
    def _outputVolume(inputNode, outputNode, array, suffix):
        """Put ``array`` into ``outputNode`` (new if None) with the input's geometry."""
        if outputNode is None:
            outputNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode",
                                                            slicer.mrmlScene.GenerateUniqueName(inputNode.GetName() + suffix))
        m = vtk.vtkMatrix4x4()
        inputNode.GetIJKToRASMatrix(m)
        outputNode.SetIJKToRASMatrix(m)
        slicer.util.updateVolumeFromArray(outputNode, np.ascontiguousarray(array))
        if outputNode.GetDisplayNode() is None:
            outputNode.CreateDefaultDisplayNodes()
        return outputNode

    @staticmethod
    def loadVolumeFile(path, name=None):
        """Load a volume through a storage node (works with or without the application)."""
        from SSIMQualityLib.volumes import check_file

        check_file(path)  # missing, empty or truncated files get the library's specific message
        storage = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
        storage.SetFileName(str(path))
        node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name or os.path.basename(str(path)).split(".")[0])
        node.SetAndObserveStorageNodeID(storage.GetID())
        if not storage.ReadData(node):
            slicer.mrmlScene.RemoveNode(node)
            slicer.mrmlScene.RemoveNode(storage)
            from SSIMQualityLib.errors import UnreadableFileError

            raise UnreadableFileError("Slicer could not read the volume", str(path),
                                      "check the file; 4-D files load as sequences and sheared ones are refused")
        return node

    # -- model ----------------------------------------------------------------

    def loadModel(self, path=None, device="auto"):
        """The scoring model: ``path`` or the bundled one (cached between calls)."""
        self._requireLibrary()
        from SSIMQualityLib.models import load_bundled_model, load_model, resolve_device

        dev = resolve_device(device)
        key = (str(path), str(dev))
        if self._model is None or self._modelKey != key:
            self._model = load_bundled_model(device=dev) if path is None else load_model(path, device=dev)
            self._modelKey = key
        return self._model

    # -- scoring --------------------------------------------------------------

    def scoreVolume(self, volumeNode, model=None, axis=None, device="auto", progress=None, tableNode=None):
        """Predicted SSIM per slice → a vtkMRMLTableNode (and a plot chart with the clinical thresholds).

        Columns: slice, predicted_ssim, clinical_class, class3, class5, class10, foreground.  The
        volume summary is stored as node attributes ``SSIMQuality.*``; the chart's ID in
        ``SSIMQuality.ChartNodeID``.  ``progress(done, total)`` returning False cancels (returns None).
        """
        self._requireLibrary()
        from SSIMQualityLib.scoring import score_array
        from SSIMQualityLib.slices import slicing_axis

        array, spacing = self.volumeArray(volumeNode)
        ax = slicing_axis(spacing, axis, volumeNode.GetName())
        model = model if model is not None else self.loadModel(device=device)
        dev = next(model.parameters()).device
        state = {"done": 0, "cancelled": False}

        class _Cancelled(Exception):
            pass

        def _step(n):
            state["done"] += n
            if progress is not None and progress(state["done"], total) is False:
                state["cancelled"] = True
                raise _Cancelled()

        total = array.shape[ax]
        try:
            result = score_array(model, array, spacing, axis=ax, device=dev, progress=_step)
        except _Cancelled:
            return None
        if tableNode is None:
            tableNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode",
                                                           slicer.mrmlScene.GenerateUniqueName(volumeNode.GetName() + " quality"))
        rows = result.rows()
        columns = {"slice": [r["slice"] for r in rows],
                   "predicted_ssim": [r["predicted_ssim"] for r in rows],
                   "clinical_class": [r["clinical_class"] for r in rows],
                   "class3": [r["class3"] for r in rows],
                   "class5": [r["class5"] for r in rows],
                   "class10": [r["class10"] for r in rows],
                   "foreground": [int(r["foreground"]) for r in rows]}
        _fillTable(tableNode, columns)
        summary = result.summary()
        for key, value in summary.items():
            tableNode.SetAttribute(f"SSIMQuality.{key}", str(value))
        tableNode.SetAttribute("SSIMQuality.axis", str(ax))
        tableNode.SetAttribute("SSIMQuality.Summary", _summaryText(summary))
        chart = self._plotSlices(tableNode, volumeNode.GetName())
        tableNode.SetAttribute("SSIMQuality.ChartNodeID", chart.GetID())
        return tableNode

    @staticmethod
    def _plotSlices(tableNode, title):
        from SSIMQualityLib.labels import CLINICAL_GOOD, CLINICAL_SUFFICIENT

        n = tableNode.GetNumberOfRows()
        thresholds = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", tableNode.GetName() + " thresholds")
        _fillTable(thresholds, {"slice": [0, max(n - 1, 1)], "good": [CLINICAL_GOOD] * 2,
                                "rescan": [CLINICAL_SUFFICIENT] * 2})
        chart = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLPlotChartNode", tableNode.GetName() + " chart")
        chart.SetTitle(f"Predicted SSIM per slice: {title}")
        chart.SetXAxisTitle("slice")
        chart.SetYAxisTitle("predicted SSIM")
        chart.SetYAxisRangeAuto(False)
        chart.SetYAxisRange(0.0, 1.0)
        specs = [(tableNode, "predicted_ssim", "predicted SSIM", (0.1, 0.3, 0.8), False),
                 (thresholds, "good", "good >= 0.85", (0.1, 0.6, 0.1), True),
                 (thresholds, "rescan", "rescan < 0.60", (0.8, 0.1, 0.1), True)]
        for table, column, name, color, dashed in specs:
            series = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{tableNode.GetName()} {name}")
            series.SetAndObserveTableNodeID(table.GetID())
            series.SetXColumnName("slice")
            series.SetYColumnName(column)
            series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
            series.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleNone if dashed
                                  else slicer.vtkMRMLPlotSeriesNode.MarkerStyleCircle)
            if dashed:
                series.SetLineStyle(slicer.vtkMRMLPlotSeriesNode.LineStyleDash)
            series.SetColor(*color)
            chart.AddAndObservePlotSeriesNodeID(series.GetID())
        return chart

    # -- teaching: corruption, k-space, contrast ---------------------------

    def corruptVolume(self, inputNode, outputNode=None, method="kspace", severity=0.5, seed=None, axis=None):
        """Corrupt every slice along the acquisition axis; returns (output volume, table slice / true ssim)."""
        self._requireLibrary()
        from SSIMQualityLib.corruption import corrupt_volume, make_corruptor
        from SSIMQualityLib.slices import slicing_axis

        array, spacing = self.volumeArray(inputNode)
        name = inputNode.GetName()
        self._checkOutput(inputNode, outputNode)
        self._parameters(name, make_corruptor, method, severity)
        ax = slicing_axis(spacing, axis, name)
        res = corrupt_volume(array, ax, method=method, severity=severity, seed=seed, out_dtype=array.dtype)
        out = self._outputVolume(inputNode, outputNode, res.array, f" {method} {severity:g}")
        table = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", out.GetName() + " true SSIM")
        _fillTable(table, {"slice": list(range(len(res.ssim))), "ssim": [float(s) for s in res.ssim]})
        table.SetAttribute("SSIMQuality.axis", str(ax))
        table.SetAttribute("SSIMQuality.Summary", f"true SSIM per slice: mean {res.ssim.mean():.3f}, "
                                                  f"min {res.ssim.min():.3f} ({method}, severity {severity:g})")
        out.SetAttribute("SSIMQuality.TrueSSIMTableID", table.GetID())
        return out, table

    def kspaceVolume(self, inputNode, outputNode=None, axis=None):
        """log(1 + |FFT|) of each slice along the acquisition axis (centred), for teaching."""
        from SSIMQualityLib.figures import log_kspace
        from SSIMQualityLib.slices import slicing_axis

        array, spacing = self.volumeArray(inputNode)
        self._checkOutput(inputNode, outputNode)
        ax = slicing_axis(spacing, axis, inputNode.GetName())
        moved = np.moveaxis(array.astype(np.float32), ax, 0)
        k = np.stack([log_kspace(s) for s in moved]).astype(np.float32)
        return self._outputVolume(inputNode, outputNode, np.moveaxis(k, 0, ax), " k-space")

    def augmentContrast(self, inputNode, outputNode=None, kind="gamma", parameter=None, seed=None, axis=None):
        """Contrast change of every slice (each normalised to [0, 1] first); output in [0, 1].

        ``parameter`` None with a ``seed`` draws it from the training range (RandomContrast's twins).
        """
        self._requireLibrary()
        from SSIMQualityLib.contrast import RANDOM_KINDS, make_contrast
        from SSIMQualityLib.slices import normalize, slicing_axis

        array, spacing = self.volumeArray(inputNode)
        name = inputNode.GetName()
        self._checkOutput(inputNode, outputNode)
        transform = self._parameters(name, make_contrast, kind, parameter)  # checks kind and parameter
        if parameter is None and seed is not None:
            transform = RANDOM_KINDS[kind]().sample(seed)
        ax = slicing_axis(spacing, axis, name)
        moved = np.moveaxis(array.astype(np.float32), ax, 0)
        out = np.stack([transform(normalize(s)) for s in moved]).astype(np.float32)
        node = self._outputVolume(inputNode, outputNode, np.moveaxis(out, 0, ax), f" {kind}")
        node.SetAttribute("SSIMQuality.Contrast", repr(transform))
        return node


def _fillTable(tableNode, columns):
    """Replace the table's columns with ``columns`` (name → list of int or float)."""
    table = tableNode.GetTable()
    table.Initialize()
    for name, values in columns.items():
        is_int = all(isinstance(v, (int, np.integer)) for v in values)
        arr = vtk.vtkIntArray() if is_int else vtk.vtkDoubleArray()
        arr.SetName(name)
        for v in values:
            arr.InsertNextValue(int(v) if is_int else float(v))
        table.AddColumn(arr)
    tableNode.Modified()


def _summaryText(s):
    if not s["slices_scored"]:
        return "no slice had enough foreground to score"
    return (f"{s['slices_scored']} of {s['slices']} slices scored: mean predicted SSIM {s['mean_predicted_ssim']:.3f}, "
            f"min {s['min_predicted_ssim']:.3f}; good {s['fraction_good']:.0%}, sufficient "
            f"{s['fraction_sufficient']:.0%}, rescan {s['fraction_rescan']:.0%} -> {s['verdict']}")


#
# Test
#

class SSIMQualityTest(ScriptedLoadableModuleTest):
    """Slicer's self-test: loads the bundled sample and runs every Logic path."""

    def setUp(self):
        slicer.mrmlScene.Clear(0)

    def runTest(self):
        self.setUp()
        self.test_ScoreCorruptContrastKspace()

    def test_ScoreCorruptContrastKspace(self):
        from SSIMQualityLib.resources import sample_volume_path

        self.delayDisplay("Loading the bundled sample")
        logic = SSIMQualityLogic()
        node = logic.loadVolumeFile(sample_volume_path(), "sample")
        array, spacing = logic.volumeArray(node)
        self.assertEqual(array.ndim, 3)

        self.delayDisplay("Corrupting: severity 0 is the identity")
        same, table0 = logic.corruptVolume(node, method="kspace", severity=0.0, seed=0)
        ssim0 = [table0.GetTable().GetValueByName(r, "ssim").ToDouble() for r in range(table0.GetNumberOfRows())]
        self.assertTrue(all(abs(s - 1.0) < 1e-9 for s in ssim0))
        moved, table = logic.corruptVolume(node, method="kspace", severity=0.8, seed=1)
        self.assertEqual(table.GetNumberOfRows(), array.shape[int(table.GetAttribute("SSIMQuality.axis"))])
        m1, m2 = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
        node.GetIJKToRASMatrix(m1)
        moved.GetIJKToRASMatrix(m2)
        self.assertTrue(all(abs(m1.GetElement(i, j) - m2.GetElement(i, j)) < 1e-9 for i in range(4) for j in range(4)))

        self.delayDisplay("Scoring clean and corrupted")
        model = self._model(logic)
        clean = logic.scoreVolume(node, model=model)
        bad = logic.scoreVolume(moved, model=model)
        self.assertEqual(clean.GetNumberOfRows(), array.shape[int(clean.GetAttribute("SSIMQuality.axis"))])
        values = [clean.GetTable().GetValueByName(r, "predicted_ssim").ToDouble() for r in range(clean.GetNumberOfRows())]
        self.assertTrue(all(0.0 <= v <= 1.0 for v in values if v == v))
        self.assertIsNotNone(slicer.mrmlScene.GetNodeByID(clean.GetAttribute("SSIMQuality.ChartNodeID")))
        if self._trained:
            self.assertGreater(float(clean.GetAttribute("SSIMQuality.mean_predicted_ssim")),
                               float(bad.GetAttribute("SSIMQuality.mean_predicted_ssim")))

        self.delayDisplay("k-space and contrast")
        k = logic.kspaceVolume(node)
        self.assertEqual(slicer.util.arrayFromVolume(k).shape, array.shape)
        c = logic.augmentContrast(node, kind="gamma", parameter=2.0)
        carr = slicer.util.arrayFromVolume(c)
        self.assertTrue(float(carr.min()) >= 0.0 and float(carr.max()) <= 1.0)
        self.delayDisplay("Test passed")

    _trained = True

    def _model(self, logic):
        """The bundled model; an untrained one (and no clean > corrupted check) where none is bundled."""
        from SSIMQualityLib.errors import BadModelFileError

        try:
            return logic.loadModel(device="cpu")
        except BadModelFileError:
            from SSIMQualityLib.models import build_model

            self._trained = False
            return build_model("resnet18", 64).eval()
