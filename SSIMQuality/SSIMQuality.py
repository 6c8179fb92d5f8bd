"""SSIMQuality: reference-free motion-artefact quality of MR brain volumes, inside 3D Slicer.

Module (metadata), Widget (thin Qt layer), Logic (MRML in, MRML out, usable
from the Python console with no GUI; every step is done by SSIMQualityLib)
and Test (Slicer's self-test), in the layout of Slicer's scripted-module
template.  Qt is imported only inside the Widget so that the Logic and the
Test run wherever MRML does.
"""
import hashlib
import logging
import os
import sys

import numpy as np
import vtk

import slicer
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

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
        # The bundled sample in Sample Data, so that a teacher can load it in one click.
        app = getattr(slicer, "app", None)
        if app is not None and hasattr(app, "connect"):
            app.connect("startupCompleted()", registerSampleData)


def registerSampleData():
    """Register the bundled sample (a T1 head from the MNI ICBM152 2009 template) with Sample Data."""
    import pathlib

    import SampleData

    from SSIMQualityLib.resources import SAMPLE_VOLUME

    if not SAMPLE_VOLUME.is_file():
        return
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="SSIM Quality", sampleName="SSIMQualitySample",
        thumbnailFileName=os.path.join(_HERE, "Resources", "Icons", "SSIMQuality.png"),
        uris=pathlib.Path(SAMPLE_VOLUME).resolve().as_uri(), fileNames=SAMPLE_VOLUME.name,
        nodeNames="SSIMQualitySample", loadFileType="VolumeFile")


#
# Widget
#

class SSIMQualityWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Thin Qt layer, in the layout of Slicer's scripted-module template.

    Every setting lives in the module's parameter node (saved with the scene): the GUI shows the node and
    writes back what the user changes.  Scoring, corruption and fine-tuning run in another process
    (:mod:`SSIMQualityLib.jobs`), followed by a timer: the GUI stays responsive, the buttons are disabled
    while a job runs, and Cancel stops it.
    """

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.ui = None
        self._parameterNode = None
        self._updatingGUI = False
        self._job = None
        self._timer = None

    def setup(self):
        import qt

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
        self.ui.deviceComboBox.addItems(list(DEVICES))
        self.refreshModels()
        self._timer = qt.QTimer()
        self._timer.setInterval(200)
        self._timer.connect("timeout()", self.pollJob)
        # GUI -> parameter node
        self.ui.inputSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.updateParameterNodeFromGUI)
        for combo in (self.ui.modelComboBox, self.ui.deviceComboBox, self.ui.methodComboBox,
                      self.ui.contrastKindComboBox):
            combo.connect("currentIndexChanged(int)", self.updateParameterNodeFromGUI)
        for slider in (self.ui.severitySlider, self.ui.contrastParameterSlider):
            slider.connect("valueChanged(double)", self.updateParameterNodeFromGUI)
        self.ui.seedSpinBox.connect("valueChanged(int)", self.updateParameterNodeFromGUI)
        self.ui.fineTuneStepsSpinBox.connect("valueChanged(int)", self.updateParameterNodeFromGUI)
        self.ui.showKspaceCheckBox.connect("toggled(bool)", self.updateParameterNodeFromGUI)
        self.ui.fineTuneFolderLineEdit.connect("currentPathChanged(QString)", self.updateParameterNodeFromGUI)
        self.ui.fineTuneNameLineEdit.connect("textChanged(QString)", self.updateParameterNodeFromGUI)
        # Actions
        self.ui.scoreButton.connect("clicked(bool)", self.onScore)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.corruptButton.connect("clicked(bool)", self.onCorrupt)
        self.ui.kspaceButton.connect("clicked(bool)", self.onKspace)
        self.ui.contrastButton.connect("clicked(bool)", self.onContrast)
        self.ui.fineTuneButton.connect("clicked(bool)", self.onFineTune)
        self.ui.progressBar.setVisible(False)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()

    # -- parameter node (Slicer's template) ---------------------------------

    def cleanup(self):
        self.onCancel()
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        if self._parameterNode is not None:
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)

    def onSceneStartClose(self, caller, event):
        self.onCancel()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        node = self.logic.getParameterNode()
        self.logic.setDefaultParameters(node)
        if node.GetNodeReference("inputVolume") is None:
            first = self.logic.firstScorableVolume()
            if first is not None:
                node.SetNodeReferenceID("inputVolume", first.GetID())
        self.setParameterNode(node)

    def setParameterNode(self, node):
        if self._parameterNode is not None:
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        self._parameterNode = node
        if node is not None:
            self.addObserver(node, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        self.updateGUIFromParameterNode()

    def updateGUIFromParameterNode(self, caller=None, event=None):
        if self._parameterNode is None or self._updatingGUI:
            return
        self._updatingGUI = True  # the widgets' change signals must not write back half-updated values
        try:
            p = self.logic.getParameters(self._parameterNode)
            self.ui.inputSelector.setCurrentNode(p["inputVolume"])
            self.ui.modelComboBox.setCurrentIndex(max(0, self.ui.modelComboBox.findData(p["model"])))
            self.ui.deviceComboBox.setCurrentText(p["device"])
            self.ui.methodComboBox.setCurrentText(p["method"])
            self.ui.severitySlider.value = p["severity"]
            self.ui.seedSpinBox.value = p["seed"]
            self.ui.showKspaceCheckBox.checked = p["showKspace"]
            self.ui.contrastKindComboBox.setCurrentText(p["contrastKind"])
            _, low, high, step = CONTRAST_PARAMETERS[p["contrastKind"]]  # the slider offers what this kind takes
            slider = self.ui.contrastParameterSlider
            slider.minimum, slider.maximum, slider.singleStep = low, high, step
            slider.value = p["contrastParameter"]
            self.ui.fineTuneFolderLineEdit.currentPath = p["fineTuneFolder"]
            self.ui.fineTuneNameLineEdit.text = p["fineTuneName"]
            self.ui.fineTuneStepsSpinBox.value = p["fineTuneSteps"]
        finally:
            self._updatingGUI = False
        self.updateButtons()

    def updateParameterNodeFromGUI(self, *_):
        if self._parameterNode is None or self._updatingGUI:
            return
        from SSIMQualityLib.errors import SSIMQualityError

        try:
            self._writeParameters()
        except SSIMQualityError as exc:  # raised in a Qt slot it reached only the console, the widgets kept it
            slicer.util.errorDisplay(exc.one_line())
            self.updateGUIFromParameterNode()  # the widgets show what the node holds

    def _writeParameters(self):
        self.logic.setParameters(
            self._parameterNode, inputVolume=self.ui.inputSelector.currentNode(),
            model=self.ui.modelComboBox.currentData or "", device=self.ui.deviceComboBox.currentText,
            method=self.ui.methodComboBox.currentText, severity=self.ui.severitySlider.value,
            seed=self.ui.seedSpinBox.value, showKspace=self.ui.showKspaceCheckBox.checked,
            contrastKind=self.ui.contrastKindComboBox.currentText,
            contrastParameter=self.ui.contrastParameterSlider.value,
            fineTuneFolder=self.ui.fineTuneFolderLineEdit.currentPath, fineTuneName=self.ui.fineTuneNameLineEdit.text,
            fineTuneSteps=self.ui.fineTuneStepsSpinBox.value)

    def refreshModels(self):
        """The model list: the bundled model first, then the user's fine-tuned ones (by name)."""
        from SSIMQualityLib.models import model_entries

        self.ui.modelComboBox.clear()
        for i, entry in enumerate(model_entries()):
            label = entry["name"] + (" (bundled)" if entry["where"] == "bundled" else " (yours)")
            self.ui.modelComboBox.addItem(label, "" if i == 0 and entry["where"] == "bundled" else entry["name"])

    def updateButtons(self, *_):
        busy = self._job is not None
        has = self.ui.inputSelector.currentNode() is not None
        for b in (self.ui.scoreButton, self.ui.corruptButton, self.ui.kspaceButton, self.ui.contrastButton):
            b.setEnabled(has and not busy)
        self.ui.fineTuneButton.setEnabled(not busy)
        self.ui.cancelButton.setEnabled(busy)
        self.ui.progressBar.setVisible(busy)

    # -- jobs ----------------------------------------------------------------

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

    def _run(self, start, what):
        """Start a job (``start()`` returns it) unless one runs; poll it from the timer."""
        if self._job is not None:
            return
        with slicer.util.tryWithErrorDisplay(f"{what} could not start.", waitCursor=True):
            if not self.ensureDependencies():
                return
            self._job = start()
            self.ui.progressBar.setMaximum(1000)
            self.ui.progressBar.setValue(0)
            self.ui.summaryLabel.setText(f"{what}…")
            self.updateButtons()
            self._timer.start()

    def pollJob(self):
        job = self._job
        if job is None:
            self._timer.stop()
            return
        running = job.poll()
        self.ui.progressBar.setValue(int(1000 * job.progress))
        if job.text:
            self.ui.progressBar.setFormat(f"{job.text}  %p%")
        if not running:
            self._finish(job)

    def _finish(self, job):
        self._timer.stop()
        self._job = None
        self.ui.progressBar.setFormat("%p%")
        self.updateButtons()
        if job.state == "failed":
            self.ui.summaryLabel.setText(f"failed: {job.error_message}")  # not "Scoring..." under the dialog
            slicer.util.errorDisplay(job.error_message)

    def onCancel(self):
        if self._job is not None:
            self._job.cancel()
            self._finish(self._job)
            self.ui.summaryLabel.setText("cancelled")

    def onScore(self):
        p = self.logic.getParameters(self._parameterNode)
        self._run(lambda: self.logic.startScoring(p["inputVolume"], model=p["model"], device=p["device"],
                                                  onDone=self._scored), "Scoring")

    def _scored(self, job, table):
        if table is not None:
            self.showResults(table)  # the job's warnings are in the table's summary

    def onCorrupt(self):
        p = self.logic.getParameters(self._parameterNode)
        seed = p["seed"] if p["seed"] >= 0 else None
        self._run(lambda: self.logic.startCorruption(p["inputVolume"], method=p["method"], severity=p["severity"],
                                                     seed=seed, onDone=self._corrupted), "Corrupting")

    def _corrupted(self, job, result):
        if result is None:
            return
        out, table = result
        inputNode = self.logic.getParameters(self._parameterNode)["inputVolume"]
        self._showSideBySide(inputNode, out)
        self._showSummary(table, job.warnings)
        if self.logic.getParameters(self._parameterNode)["showKspace"]:
            self._showSideBySide(out, self.logic.kspaceVolume(out))

    def onFineTune(self):
        p = self.logic.getParameters(self._parameterNode)
        self._run(lambda: self.logic.startFineTuning(p["fineTuneFolder"], p["fineTuneName"], model=p["model"],
                                                     steps=p["fineTuneSteps"], device=p["device"],
                                                     onDone=self._fineTuned), "Fine-tuning")

    def _fineTuned(self, job, entry):
        if entry is None:
            return
        self.refreshModels()
        self.logic.setParameters(self._parameterNode, model=entry["name"])
        self.ui.summaryLabel.setText(f"new model {entry['name']} (SHA-256 {entry['sha256'][:12]}…) is selected")

    def _showSummary(self, table, warnings=()):
        """The table's summary line in the panel, with a job's warning lines below it."""
        self.ui.summaryLabel.setText("\n".join([table.GetAttribute("SSIMQuality.Summary") or "", *warnings]))

    def showResults(self, table, warnings=()):
        chartId = table.GetAttribute("SSIMQuality.ChartNodeID")
        slicer.app.layoutManager().setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpPlotTableView)
        selection = slicer.app.applicationLogic().GetSelectionNode()
        selection.SetActiveTableID(table.GetID())
        selection.SetActivePlotChartID(chartId)
        slicer.app.applicationLogic().PropagateTableSelection()
        slicer.app.applicationLogic().PropagatePlotChartSelection()
        self._showSummary(table, warnings)

    def _showSideBySide(self, inputNode, outputNode):
        slicer.app.layoutManager().setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView)
        red = slicer.app.layoutManager().sliceWidget("Red").sliceLogic().GetSliceCompositeNode()
        yellow = slicer.app.layoutManager().sliceWidget("Yellow").sliceLogic().GetSliceCompositeNode()
        red.SetBackgroundVolumeID(inputNode.GetID())
        yellow.SetBackgroundVolumeID(outputNode.GetID())
        for name in ("Red", "Yellow"):
            slicer.app.layoutManager().sliceWidget(name).sliceLogic().FitSliceToAll()

    def onKspace(self):
        # A log-magnitude FFT per slice: a second or two, no job needed.
        with slicer.util.tryWithErrorDisplay("k-space display failed.", waitCursor=True):
            inputNode = self.logic.getParameters(self._parameterNode)["inputVolume"]
            self._showSideBySide(inputNode, self.logic.kspaceVolume(inputNode))

    def onContrast(self):
        # Elementwise maps per slice (seconds): run in place.
        with slicer.util.tryWithErrorDisplay("Contrast change failed.", waitCursor=True):
            if not self.ensureDependencies():
                return
            p = self.logic.getParameters(self._parameterNode)
            out = self.logic.augmentContrast(p["inputVolume"], kind=p["contrastKind"],
                                             parameter=p["contrastParameter"])
            self._showSideBySide(p["inputVolume"], out)


#
# Logic
#

from SSIMQualityLib.vocabulary import (CLINICAL_GOOD, CLINICAL_SUFFICIENT, CONTRAST_KINDS,  # noqa: E402
                                       CONTRAST_PARAMETERS, CORRUPTION_METHODS, DEVICES, SLICE_COLUMNS)

#: Every setting of the panel and its default.  They live in the module's parameter node, so they are saved
#: with the scene and restored with it; the Widget shows them and writes back what the user changes.
PARAMETER_DEFAULTS = {"model": "", "device": "auto", "method": "kspace", "severity": 0.5, "seed": -1,
                      "showKspace": False, "contrastKind": "gamma", "contrastParameter": CONTRAST_PARAMETERS["gamma"][0],
                      "fineTuneFolder": "", "fineTuneName": "", "fineTuneSteps": 300}
#: Node references held by the parameter node.
PARAMETER_NODE_ROLES = ("inputVolume",)
#: The range of each numeric setting: what the panel's widget can show (the .ui's minimum and maximum, tested
#: against it) and so what the parameter node keeps.
SETTING_RANGES = {"severity": (0.0, 1.0), "seed": (-1, 999999), "contrastParameter": (0.005, 15.0),
                  "fineTuneSteps": (10, 100000)}

#: A small default budget for fine-tuning on a site's own scans (minutes on a CPU).
FINE_TUNE_SAMPLES = 2000
#: Peak learning rate of a site fine-tune: a tenth of ``train``'s from-scratch default. Every fine-tune of the
#: bundled models measured here ran at 3e-5 - 5e-4 (model card); 1e-3 is a rate for random weights.
FINE_TUNE_LR = 1e-4


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
        self._modelIdentity = None  # the loaded model's name, file and SHA-256 (models.model_identity)

    # -- parameter node -------------------------------------------------------

    def setDefaultParameters(self, parameterNode):
        """Fill in every setting the node does not hold yet (a new scene, or one saved by an older version)."""
        for name, value in PARAMETER_DEFAULTS.items():
            if not parameterNode.GetParameter(name):
                parameterNode.SetParameter(name, _serialize(value))

    def getParameters(self, parameterNode=None):
        """The settings as typed values (by their defaults' types), with the referenced nodes.  A value the
        panel could not hold (a scene saved by an older version, or written into the node by hand) reads as its
        default, as :meth:`setParameters` would have refused it: a severity of 7.5 or a method "bogus" reached
        the job."""
        from SSIMQualityLib.errors import SSIMQualityError

        node = parameterNode or self.getParameterNode()
        self.setDefaultParameters(node)
        values = {}
        for name, default in PARAMETER_DEFAULTS.items():
            try:
                values[name] = _checkedSetting(name, _deserialize(node.GetParameter(name), default))
            except SSIMQualityError:
                values[name] = default
        if not _contrastParameterFits(values["contrastKind"], values["contrastParameter"]):
            values["contrastParameter"] = CONTRAST_PARAMETERS[values["contrastKind"]][0]
        for role in PARAMETER_NODE_ROLES:
            values[role] = node.GetNodeReference(role)
        return values

    def setParameters(self, parameterNode=None, **values):
        """Store settings (names of :data:`PARAMETER_DEFAULTS`, or node roles with an MRML node or None).

        Every value is checked first (:func:`_checkedSetting`): one that does not fit raises one clear
        :class:`~SSIMQualityLib.errors.SSIMQualityError` and nothing of the call is stored.

        The contrast parameter belongs to its kind (:data:`~SSIMQualityLib.vocabulary.CONTRAST_PARAMETERS`): a
        new kind with the old kind's value (what the panel's slider still holds when the kind changes) takes the
        new kind's default; a value outside the kind's range is refused (gamma 1.0 changed nothing, and AHE
        refused the slider's 1.8 only when the button was pressed)."""
        node = parameterNode or self.getParameterNode()
        checked = {name: _checkedNode(name, value) if name in PARAMETER_NODE_ROLES else _checkedSetting(name, value)
                   for name, value in values.items()}
        before = self.getParameters(node)
        kind = checked.get("contrastKind", before["contrastKind"])
        # The slider shows 3 decimals: a value typed in the console (4.5123) comes back from it as 4.512.
        if kind != before["contrastKind"] and abs(checked.get("contrastParameter", before["contrastParameter"])
                                                  - before["contrastParameter"]) < 1e-3:
            checked["contrastParameter"] = CONTRAST_PARAMETERS[kind][0]
        parameter = checked.get("contrastParameter", before["contrastParameter"])
        if not _contrastParameterFits(kind, parameter):
            from SSIMQualityLib.errors import SSIMQualityError

            _, low, high, _ = CONTRAST_PARAMETERS[kind]
            raise SSIMQualityError(f"setting contrastParameter must be between {low:g} and {high:g} for {kind}, "
                                   f"got {parameter!r}", hint=f"leave it out for {kind}'s default, "
                                                              f"{CONTRAST_PARAMETERS[kind][0]:g}")
        wasModifying = node.StartModify()
        try:
            for name, value in checked.items():
                if name in PARAMETER_NODE_ROLES:
                    node.SetNodeReferenceID(name, value.GetID() if value is not None else None)
                else:
                    node.SetParameter(name, _serialize(value))
        finally:
            node.EndModify(wasModifying)

    # -- long work out of process -----------------------------------------

    @staticmethod
    def modelIdentity(model=""):
        """What a result names its model by (the library's ``model_identity``: the catalogue name or the file,
        and the SHA-256)."""
        from SSIMQualityLib.models import model_identity

        return model_identity(model or None)

    def modelPath(self, model=""):
        """A file for ``model``: "" is the bundled model, a catalogue name its file, anything else a path."""
        from SSIMQualityLib.models import find_model

        return find_model(model)["path"]

    @staticmethod
    def cliModuleScript():
        """The scoring CLI module's script: Slicer's registered module, else beside this module's folder."""
        module = getattr(getattr(slicer, "modules", None), "ssimqualitycli", None)
        if module is not None:
            return module.path
        for candidate in (os.path.join(os.path.dirname(_HERE), "SSIMQualityCLI", "SSIMQualityCLI.py"),
                          os.path.join(os.path.dirname(_HERE), "cli-modules", "SSIMQualityCLI.py")):
            if os.path.isfile(candidate):
                return candidate
        from SSIMQualityLib.errors import SSIMQualityError

        raise SSIMQualityError("the SSIMQualityCLI module was not found", _HERE, "reinstall the extension")

    @staticmethod
    def _writeTemporary(volumeNode, folder):
        """The volume as a NRRD file in ``folder`` (its geometry kept), for a job to read."""
        path = os.path.join(folder, "input.nrrd")
        storage = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
        try:
            storage.SetFileName(path)
            storage.SetUseCompression(False)
            if not storage.WriteData(volumeNode):
                from SSIMQualityLib.errors import SSIMQualityError

                raise SSIMQualityError("the volume could not be written for the scoring job", volumeNode.GetName(),
                                       "check the free disk space")
        finally:
            slicer.mrmlScene.RemoveNode(storage)
        return path

    @staticmethod
    def _startJob(args, collect, onDone, folder=None, names=None):
        """Start ``args`` as a :class:`Job`.  When it has ended: ``collect(job)`` turns a success into its result
        (an error there fails the job, with its one line in ``job.errors``), the temporary ``folder`` goes,
        and ``onDone(job, result)`` is called (result None on failure).  ``names`` maps the temporary files the
        job was given to what the user calls them (the node's name) in the job's lines.  A cancelled job calls no
        ``onDone``; its folder goes all the same."""
        import shutil

        from SSIMQualityLib.errors import SSIMQualityError
        from SSIMQualityLib.jobs import Job

        def finished(job):
            result = None
            try:
                if job.state == "done":
                    result = collect(job)
            except SSIMQualityError as exc:
                job.errors.append(f"SSIMQuality: error: {exc.one_line()}")
                job.state = "failed"
            finally:
                if onDone is not None:
                    onDone(job, result)

        # The temporary folder (a copy of the volume) goes however the job ends: done, failed or cancelled.
        cleanup = None if folder is None else (lambda: shutil.rmtree(folder, ignore_errors=True))
        # names: "warning: /tmp/.../input.nrrd: ..." means nothing in the panel
        return Job(args, on_done=finished, cleanup=cleanup, names=names).start()

    def startScoring(self, volumeNode, model="", device="auto", tableNode=None, onDone=None):
        """Score ``volumeNode`` in another process (the CLI module); returns the running :class:`Job`.

        Poll it (``job.poll()``, from a timer in the GUI) or ``job.wait()``.  When it succeeds, the table
        (new unless ``tableNode`` is given) is filled as by :meth:`scoreVolume`, and ``onDone(job, table)``
        is called; on failure ``onDone(job, None)``, with ``job.error_message``.
        """
        import tempfile

        self._requireLibrary()  # one line naming what to install, not a bare ModuleNotFoundError
        from SSIMQualityLib.jobs import python_executable

        self.volumeArray(volumeNode)  # odd nodes are refused here, in one line, before a process starts
        folder = tempfile.mkdtemp(prefix="SSIMQuality-")
        inputPath = self._writeTemporary(volumeNode, folder)
        outputPath = os.path.join(folder, "slices.tsv")
        # The model's name, not its file: the CLI checks a catalogued model against its SHA-256 (a file is not).
        args = [python_executable(), self.cliModuleScript(), "--device", device, *(["--model", str(model)] if model else []),
                inputPath, outputPath]
        name = volumeNode.GetName()
        identity = self.modelIdentity(model)
        return self._startJob(args, lambda job: self._tableFromSliceFile(outputPath, name, tableNode, job.warnings,
                                                                         identity, volumeNode),
                              onDone, folder,
                              names={inputPath: name})

    def startCorruption(self, inputNode, method="kspace", severity=0.5, seed=None, outputNode=None, onDone=None):
        """Corrupt ``inputNode`` in another process (``ssimquality corrupt``); returns the running :class:`Job`.

        On success ``onDone(job, (outputVolume, trueSsimTable))``; on failure ``onDone(job, None)``.
        """
        import tempfile

        self._requireLibrary()
        from SSIMQualityLib.corruption import make_corruptor, severity_text
        from SSIMQualityLib.jobs import library_command

        self.volumeArray(inputNode)  # odd nodes (None, a label map, a table) refused first, in one line
        name = inputNode.GetName()
        self._checkOutput(inputNode, outputNode)
        self._parameters(name, make_corruptor, method, severity)
        seed = self._corruptionSeed(name, seed)  # drawn here, so that the table can say it
        folder = tempfile.mkdtemp(prefix="SSIMQuality-")
        inputPath = self._writeTemporary(inputNode, folder)
        outputPath, reportPath = os.path.join(folder, "corrupted.nrrd"), os.path.join(folder, "ssim.csv")
        args = ["corrupt", inputPath, outputPath, "--method", method, "--severity", severity_text(severity),
                "--report", reportPath, "--seed", str(seed)]
        return self._startJob(
            library_command(*args),
            lambda job: self._corruptionResult(inputNode, outputNode, outputPath, reportPath, method, severity, seed),
            onDone, folder, names={inputPath: name})

    def startFineTuning(self, folder, name, model="", steps=300, samples=FINE_TUNE_SAMPLES, device="auto",
                        onDone=None, extraArgs=()):
        """Fine-tune ``model`` on the site's motion-free scans in ``folder``, in another process.

        Runs ``ssimquality train --init <model> --source <folder> --freeze-norm --lr <FINE_TUNE_LR>`` with a
        small budget (the batch-norm statistics stay the model's: a CPU's small batches would blur its response
        to motion, README "Fine-tuning on a CPU"); on success the new model is catalogued under ``name`` in the user's
        catalogue (with its SHA-256; never in the extension's folder) and ``onDone(job, entry)`` is called; on
        failure ``onDone(job, None)``.
        """
        from SSIMQualityLib.errors import SSIMQualityError
        from SSIMQualityLib.jobs import library_command
        from SSIMQualityLib.models import (check_new_model_name, find_model, model_file_stem, read_checkpoint,
                                           register_user_model, user_models_dir)

        check_new_model_name(name)  # before minutes of training, not when the model is to be catalogued
        if not folder or not os.path.isdir(folder):
            raise SSIMQualityError("no folder of scans to fine-tune on", str(folder or ""),
                                   "choose a folder of your site's motion-free scans")
        found = find_model(model)
        init = found["name"] or found["path"]  # a name: train checks the catalogued file against its SHA-256
        inputSize = int(read_checkpoint(found["path"], found["sha256"])["config"].get("input_size", 128))
        # One folder per name ("../x" stays inside; "site 1" and "site_1" do not share one), the same for the same
        # name, so that a fine-tune cut off (Slicer closed) resumes.
        tag = hashlib.sha256(name.encode("utf-8")).hexdigest()[:8]
        runDir = os.path.join(str(user_models_dir().parent), "runs", f"{model_file_stem(name)}-{tag}")
        args = ["train", "--init", init, "--source", folder, "--out", runDir, "--steps", str(int(steps)),
                "--train-samples", str(int(samples)), "--val-samples", str(max(16, int(samples) // 10)),
                "--val-every", str(max(1, int(steps) // 4)), "--input-size", str(inputSize), "--workers", "1",
                "--device", device, "--freeze-norm", "--lr", f"{FINE_TUNE_LR:g}", *extraArgs]

        description = f"fine-tuned from {model or 'the bundled model'} on {folder}"
        return self._startJob(library_command(*args),
                              lambda job: register_user_model(os.path.join(runDir, "model.pt"), name, description),
                              onDone)

    def _tableFromSliceFile(self, path, volumeName, tableNode=None, warnings=(), identity=None, volumeNode=None):
        """The CLI module's per-slice table read back into a table node, with summary and chart (and the job's
        warning lines kept with it)."""
        import csv

        from SSIMQualityLib.labels import all_classes
        from SSIMQualityLib.scoring import VolumeScore

        with open(path, encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        predicted = np.array([float(r["predicted_ssim"]) if r["predicted_ssim"] else np.nan for r in rows])
        foreground = np.array([r["foreground"] == "True" for r in rows])
        axis = int(rows[0]["axis"]) if rows else 0
        score = VolumeScore(axis=axis, predicted=predicted, foreground=foreground,
                            classes=all_classes(predicted))
        return self._fillScoreTable(score, volumeName, tableNode, warnings, identity, volumeNode)

    def _corruptionResult(self, inputNode, outputNode, volumePath, reportPath, method, severity, seed):
        import csv

        from SSIMQualityLib.slices import slicing_axis
        from SSIMQualityLib.volumes import read_volume

        written = read_volume(volumePath)  # the input's geometry: the axis as the job's `corrupt` took it
        array = written.array
        axis = slicing_axis(written.spacing, None, inputNode.GetName(), shape=array.shape)
        with open(reportPath, encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        ssim = np.array([float(r["ssim"]) for r in rows])
        foreground = np.array([r["foreground"] == "True" for r in rows])
        return self._corruptionOutput(inputNode, outputNode, array, ssim, foreground, [r["method"] for r in rows],
                                      method, severity, seed, axis)

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
        if not volumeNode.IsA("vtkMRMLVolumeNode"):
            raise UnsupportedImageError(f"is a {volumeNode.GetClassName()}, not a volume", name, "select a volume")
        if volumeNode.IsA("vtkMRMLLabelMapVolumeNode"):
            raise UnsupportedImageError("is a label map (segment numbers, not intensities)", name,
                                        "select the image the labels were drawn on")
        if _isSequenceFrame(volumeNode):
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
    def firstScorableVolume():
        """The scene's first volume the module can score, for the panel's first choice: a plain scalar volume,
        not a label map (a subclass, which the selector hides: the panel showed another volume and scoring
        failed with "is a label map"), nor one :meth:`volumeArray` refuses as a sequence's frame."""
        for node in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode"):
            if node.GetClassName() == "vtkMRMLScalarVolumeNode" and not _isSequenceFrame(node):
                return node
        return None

    @staticmethod
    def volumeDirection(volumeNode):
        """The node's orientation as the library takes it (a file's SimpleITK direction: LPS, row-major 3 x 3,
        one column per index axis i, j, k), so that a volume scores alike loaded from a file or from the scene."""
        m = vtk.vtkMatrix4x4()
        volumeNode.GetIJKToRASDirectionMatrix(m)
        ras_to_lps = (-1.0, -1.0, 1.0)
        return tuple(ras_to_lps[r] * m.GetElement(r, c) for r in range(3) for c in range(3))

    @staticmethod
    def _checkOutput(inputNode, outputNode):
        """Refuse, before any work, an output that would overwrite the user's input volume, or one that is not a
        scalar volume (a table failed deep in VTK; a label map took an image)."""
        if outputNode is not None and inputNode is not None and outputNode.GetID() == inputNode.GetID():
            from SSIMQualityLib.errors import OutputExistsError

            raise OutputExistsError("the output volume is the input volume: the original would be lost",
                                    inputNode.GetName(), "choose another output volume or create a new one")
        if outputNode is not None and (not outputNode.IsA("vtkMRMLScalarVolumeNode")
                                       or outputNode.IsA("vtkMRMLLabelMapVolumeNode")):
            from SSIMQualityLib.errors import SSIMQualityError

            raise SSIMQualityError(f"the output must be a scalar volume, not a {outputNode.GetClassName()}",
                                   outputNode.GetName(), "choose a scalar volume or create a new one")

    @classmethod
    def _corruptionSeed(cls, name, seed):
        """The seed a corruption runs with: ``seed`` checked (a whole number of 0 or more), or a fresh draw for
        None (the panel passes its -1, "a new draw each time", as None).  One rule for both paths: the job turned
        1.5, True and "7" into seeds that ``corruptVolume`` refused, and started a process for -1 that failed
        in the command's own words."""
        from SSIMQualityLib.seeds import check_seed

        if seed is None:
            return _panelSeed()
        return cls._parameters(name, check_seed, seed)

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
        """The scoring model: ``path`` (a file or a catalogued name) or the bundled one (cached between calls)."""
        self._requireLibrary()
        from SSIMQualityLib.models import open_model, resolve_device

        dev = resolve_device(device)
        identity = self.modelIdentity(path)
        # By checksum, not name: a model replaced under its name (`models add --force`) is not the cached one.
        key = (identity["sha256"], str(dev))
        if self._model is None or self._modelKey != key:
            self._model = open_model(path, device=dev)
            self._modelKey = key
        self._modelIdentity = identity  # what scoreVolume records (hashing a file again would double the work)
        return self._model

    # -- scoring --------------------------------------------------------------

    def scoreVolume(self, volumeNode, model=None, axis=None, device="auto", progress=None, tableNode=None):
        """Predicted SSIM per slice → a vtkMRMLTableNode (and a plot chart with the clinical thresholds).

        Columns: slice, predicted_ssim, clinical_class, class3, class5, class10, foreground.  The
        volume summary is stored as node attributes ``SSIMQuality.*``; the chart's ID in
        ``SSIMQuality.ChartNodeID``.  ``progress(done, total)`` returning False cancels (returns None).
        ``model`` is a loaded model, or a name or file as :meth:`startScoring` takes them (None or "": the
        bundled one).
        """
        self._requireLibrary()
        from SSIMQualityLib.scoring import score_array
        from SSIMQualityLib.slices import own_warning_lines, slicing_axis

        array, spacing = self.volumeArray(volumeNode)
        ax = slicing_axis(spacing, axis, volumeNode.GetName(), shape=array.shape)
        identity = None  # a network passed in has no name to record
        if model is None or isinstance(model, (str, os.PathLike)):
            model = self.loadModel(model or None, device=device)  # a name is loaded checked against its SHA-256
            identity = self._modelIdentity
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
            with own_warning_lines():  # logged below, naming the node
                result = score_array(model, array, spacing, axis=ax, device=dev, progress=_step,
                                     direction=self.volumeDirection(volumeNode))
        except _Cancelled:
            return None
        warning = result.warning(volumeNode.GetName())
        if warning:  # as `ssimquality score` prints it
            logging.warning(warning)
        return self._fillScoreTable(result, volumeNode.GetName(), tableNode, [warning], identity, volumeNode)

    def _fillScoreTable(self, result, volumeName, tableNode=None, warnings=(), identity=None, volumeNode=None):
        """A table node (new unless given) of one volume's per-slice scores, with summary attributes and chart.
        ``warnings`` (lines, e.g. signed intensities) stay with the result: in ``SSIMQuality.warnings`` and below
        the summary line, saved with the scene (the panel showed them only until its label changed).  What was
        scored and by which model (``identity``, :meth:`modelIdentity`) are attributes too: ``SSIMQuality.volume``,
        ``SSIMQuality.model``, ``SSIMQuality.model_sha256``.  A ``volumeNode`` this module corrupted gets the
        prediction beside the truth, over the slices of its true-SSIM table (:meth:`_truthLine`)."""
        from SSIMQualityLib.scoring import summary_line

        if tableNode is None:
            tableNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode",
                                                           slicer.mrmlScene.GenerateUniqueName(volumeName + " quality"))
        ax = result.axis
        rows = result.rows()
        # The library's slice columns, less the file and the axis (the axis is an attribute here).
        names = [c for c in SLICE_COLUMNS if c not in ("file", "axis")]
        columns = {c: [int(r[c]) if c == "foreground" else r[c] for r in rows] for c in names}
        _fillTable(tableNode, columns)
        summary = result.summary()
        for key, value in summary.items():
            tableNode.SetAttribute(f"SSIMQuality.{key}", str(value))
        tableNode.SetAttribute("SSIMQuality.axis", str(ax))
        tableNode.SetAttribute("SSIMQuality.volume", volumeName)
        for key in ("model", "model_sha256"):  # a table scored again by a network given as such: no old name
            tableNode.RemoveAttribute(f"SSIMQuality.{key}")
        if identity is not None:
            tableNode.SetAttribute("SSIMQuality.model", identity["name"] or identity["file"])
            tableNode.SetAttribute("SSIMQuality.model_sha256", identity["sha256"])
        warnings = [w for w in warnings if w]
        tableNode.SetAttribute("SSIMQuality.warnings", "\n".join(warnings))
        truth = self._truthLine(volumeNode, result) if volumeNode is not None else None
        tableNode.SetAttribute("SSIMQuality.truth", truth or "")
        tableNode.SetAttribute("SSIMQuality.Summary", "\n".join([summary_line(summary), *([truth] if truth else []),
                                                                 *warnings]))
        chart = self._plotSlices(tableNode, volumeName)
        tableNode.SetAttribute("SSIMQuality.ChartNodeID", chart.GetID())
        return tableNode

    @staticmethod
    def _truthLine(volumeNode, result):
        """For a volume this module corrupted (its ``SSIMQuality.TrueSSIMTableID``), the mean prediction beside
        the mean true SSIM over the same slices: those the true-SSIM table counts (enough head in the clean
        volume) and the score predicted.  The two summaries alone averaged over different slices (ghosts make
        air slices "head" in the corrupted one: 0.766 predicted over 75 slices against 0.713 true over 70, where
        the same 70 gave 0.758).  None for any other volume, or a table of other slices."""
        table = slicer.mrmlScene.GetNodeByID(volumeNode.GetAttribute("SSIMQuality.TrueSSIMTableID") or "")
        if table is None or table.GetAttribute("SSIMQuality.TrueSSIMFor") != volumeNode.GetID():
            return None
        if table.GetAttribute("SSIMQuality.axis") not in (None, str(result.axis)):
            return None  # scored across another axis: other slices
        columns = table.GetTable()
        ssim, head = columns.GetColumnByName("ssim"), columns.GetColumnByName("foreground")
        if ssim is None or head is None or ssim.GetNumberOfTuples() != len(result.predicted):
            return None
        true = np.array([ssim.GetValue(i) for i in range(ssim.GetNumberOfTuples())], dtype=float)
        counted = np.array([str(head.GetValue(i)) in ("1", "True", "true") for i in range(head.GetNumberOfTuples())])
        both = counted & np.isfinite(result.predicted)
        if not both.any():
            return None
        p, t = float(result.predicted[both].mean()), float(true[both].mean())
        return (f"over the {int(both.sum())} slices of its true-SSIM table: predicted mean {p:.3f}, true mean "
                f"{t:.3f} ({p - t:+.3f})")

    @staticmethod
    def _plotSlices(tableNode, title):
        """The table's chart with the clinical thresholds; a table scored again gets a new one in place of its
        old one (five nodes were left behind at every re-score).  Only nodes made here for this table go, each
        tagged ``SSIMQuality.PlotFor`` with its ID: a series the user added to the chart, and its table, stay, and
        so does the chart then, without this table's series."""
        owner = tableNode.GetID()
        for cls in ("vtkMRMLPlotSeriesNode", "vtkMRMLTableNode"):
            for node in slicer.util.getNodesByClass(cls):
                if node.GetAttribute("SSIMQuality.PlotFor") == owner:
                    slicer.mrmlScene.RemoveNode(node)
        for chart in slicer.util.getNodesByClass("vtkMRMLPlotChartNode"):
            if chart.GetAttribute("SSIMQuality.PlotFor") == owner and chart.GetNumberOfPlotSeriesNodes() == 0:
                slicer.mrmlScene.RemoveNode(chart)
        n = tableNode.GetNumberOfRows()
        thresholds = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", tableNode.GetName() + " thresholds")
        thresholds.SetAttribute("SSIMQuality.PlotFor", owner)
        _fillTable(thresholds, {"slice": [0, max(n - 1, 1)], "good": [CLINICAL_GOOD] * 2,
                                "rescan": [CLINICAL_SUFFICIENT] * 2})
        chart = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLPlotChartNode", tableNode.GetName() + " chart")
        chart.SetAttribute("SSIMQuality.PlotFor", owner)
        chart.SetTitle(f"Predicted SSIM per slice: {title}")
        chart.SetXAxisTitle("slice")
        chart.SetYAxisTitle("predicted SSIM")
        chart.SetYAxisRangeAuto(False)
        chart.SetYAxisRange(0.0, 1.0)
        specs = [(tableNode, "predicted_ssim", "predicted SSIM", (0.1, 0.3, 0.8), False),
                 (thresholds, "good", f"good >= {CLINICAL_GOOD:.2f}", (0.1, 0.6, 0.1), True),
                 (thresholds, "rescan", f"rescan < {CLINICAL_SUFFICIENT:.2f}", (0.8, 0.1, 0.1), True)]
        for table, column, name, color, dashed in specs:
            series = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{tableNode.GetName()} {name}")
            series.SetAttribute("SSIMQuality.PlotFor", owner)
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
        from SSIMQualityLib.corruption import corrupt_volume, make_corruptor, signed_warning
        from SSIMQualityLib.slices import own_warning_lines, slicing_axis

        array, spacing = self.volumeArray(inputNode)
        name = inputNode.GetName()
        self._checkOutput(inputNode, outputNode)
        self._parameters(name, make_corruptor, method, severity)
        seed = self._corruptionSeed(name, seed)  # said in the table
        ax = slicing_axis(spacing, axis, name, shape=array.shape)
        warning = signed_warning(array, name)
        if warning:  # as `ssimquality corrupt` prints it (a job's warnings reach the panel's summary)
            logging.warning(warning)
        with own_warning_lines():  # logged above, naming the node
            res = corrupt_volume(array, ax, method=method, severity=severity, seed=seed, out_dtype=array.dtype)
        return self._corruptionOutput(inputNode, outputNode, res.array, res.ssim, res.foreground, res.methods,
                                      method, severity, seed, ax)

    def _corruptionOutput(self, inputNode, outputNode, array, ssim, foreground, methods, method, severity, seed,
                          axis):
        """The corrupted volume (named "<input> motion (<method> <severity>)": "<input> kspace 0.7" read as a
        k-space image) and its true SSIM table, from either path (in process or a job).  The volume says how it
        was made (``SSIMQuality.Corruption``); a corruption made again into the same volume replaces its table
        (they piled up, all but the newest orphaned)."""
        from SSIMQualityLib.corruption import severity_text

        made = f"{method} {severity_text(severity)}"
        out = self._outputVolume(inputNode, outputNode, array, f" motion ({made})")
        out.SetAttribute("SSIMQuality.Corruption", f"{made}, seed {seed}, from {inputNode.GetName()}")
        table = self._trueSsimTable(out, ssim, foreground, methods, method, severity, seed)
        table.SetAttribute("SSIMQuality.axis", str(axis))
        return out, table

    @staticmethod
    def _trueSsimTable(volumeNode, ssim, foreground, methods, method, severity, seed):
        """The true SSIM per slice (with the slices that hold enough head to score, and each slice's algorithm);
        its summary is over those slices, as a score's is, and says the seed (``SSIMQuality.seed`` too: the same
        seed makes the same corruption again)."""
        from SSIMQualityLib.corruption import severity_text, true_ssim_summary
        from SSIMQualityLib.vocabulary import CORRUPTION_COLUMNS

        table = slicer.mrmlScene.GetNodeByID(volumeNode.GetAttribute("SSIMQuality.TrueSSIMTableID") or "")
        if table is None or table.GetAttribute("SSIMQuality.TrueSSIMFor") != volumeNode.GetID():  # ours only
            table = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", volumeNode.GetName() + " true SSIM")
        table.SetName(volumeNode.GetName() + " true SSIM")
        table.SetAttribute("SSIMQuality.TrueSSIMFor", volumeNode.GetID())
        _fillTable(table, dict(zip(CORRUPTION_COLUMNS, (list(range(len(ssim))), [float(s) for s in ssim],
                                                        [bool(f) for f in foreground], list(methods)))))
        s = true_ssim_summary(ssim, foreground)
        table.SetAttribute("SSIMQuality.Summary", f"true SSIM over {s['over']} ({s['slices']} in all): mean "
                                                  f"{s['mean']:.3f}, min {s['min']:.3f} ({method}, severity "
                                                  f"{severity_text(severity)}, seed {seed})")
        table.SetAttribute("SSIMQuality.seed", str(seed))
        volumeNode.SetAttribute("SSIMQuality.TrueSSIMTableID", table.GetID())
        return table

    def kspaceVolume(self, inputNode, outputNode=None, axis=None):
        """log(1 + |FFT|) of each slice along the acquisition axis (centred), for teaching."""
        self._requireLibrary()
        from SSIMQualityLib.figures import log_kspace
        from SSIMQualityLib.slices import slicing_axis

        array, spacing = self.volumeArray(inputNode)
        self._checkOutput(inputNode, outputNode)
        ax = slicing_axis(spacing, axis, inputNode.GetName(), shape=array.shape)
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
        ax = slicing_axis(spacing, axis, name, shape=array.shape)
        moved = np.moveaxis(array.astype(np.float32), ax, 0)
        out = np.stack([transform(normalize(s)) for s in moved]).astype(np.float32)
        node = self._outputVolume(inputNode, outputNode, np.moveaxis(out, 0, ax), f" {kind}")
        node.SetAttribute("SSIMQuality.Contrast", repr(transform))
        return node


def _isSequenceFrame(node):
    """Whether ``node`` is a 4-D sequence or one frame of one (what :meth:`SSIMQualityLogic.volumeArray` refuses
    and the panel's first choice skips)."""
    return (node.IsA("vtkMRMLSequenceNode") or node.GetAttribute("SequenceBrowser.ProxyNode") is not None
            or node.IsA("vtkMRMLMultiVolumeNode"))


def _panelSeed():
    """A seed drawn for a corruption asked without one, within what the panel's seed box holds (it can be typed
    back in to make the same corruption again)."""
    from SSIMQualityLib.seeds import fresh_seed

    return fresh_seed(SETTING_RANGES["seed"][1] + 1)


def _checkedNode(name, value):
    """``value`` for the node setting ``name``: a volume node or None (a node's name gave AttributeError: 'str'
    object has no attribute 'GetID')."""
    if value is None or (hasattr(value, "IsA") and value.IsA("vtkMRMLVolumeNode")):
        return value
    from SSIMQualityLib.errors import SSIMQualityError

    raise SSIMQualityError(f"setting {name} must be a volume node (or None), got {value!r}",
                           hint="pass the node itself, e.g. getNode('MRHead')")


def _checkedSetting(name, value):
    """``value`` for the setting ``name``, as the type of its default, or one clear error: a scene must not keep
    what the panel cannot show or a job cannot run (``bool("false")`` is True; a severity of 1.5 fails later)."""
    import numbers

    from SSIMQualityLib.errors import SSIMQualityError
    from SSIMQualityLib.vocabulary import CONTRAST_KINDS, CORRUPTION_METHODS

    if name not in PARAMETER_DEFAULTS:
        raise SSIMQualityError(f"unknown SSIM Quality setting {name!r}",
                               hint="the settings are " + ", ".join([*PARAMETER_DEFAULTS, *PARAMETER_NODE_ROLES]))
    default = PARAMETER_DEFAULTS[name]

    def refuse(what):
        raise SSIMQualityError(f"setting {name} must be {what}, got {value!r}")

    if isinstance(default, bool):
        if isinstance(value, (bool, np.bool_)) or value in ("true", "false"):
            return value == "true" if isinstance(value, str) else bool(value)
        refuse("True or False")
    if isinstance(value, (bool, np.bool_)):
        refuse("a " + ("number" if isinstance(default, (int, float)) else "text"))
    if isinstance(default, int):
        if not (isinstance(value, numbers.Integral) or (isinstance(value, float) and value.is_integer())):
            refuse("a whole number")
        typed = int(value)
    elif isinstance(default, float):
        if not isinstance(value, numbers.Real) or not np.isfinite(value):
            refuse("a number")
        typed = float(value)
    if isinstance(default, (int, float)):
        low, high = SETTING_RANGES.get(name, (-np.inf, np.inf))
        if not low <= typed <= high:  # the panel's widget could not show it: it would change when touched
            refuse(f"between {low:g} and {high:g}" + (" (-1: a new draw each time)" if name == "seed" else ""))
        return typed
    if not isinstance(value, str):
        refuse("text")
    allowed = {"method": CORRUPTION_METHODS, "contrastKind": CONTRAST_KINDS}.get(name)
    if allowed is not None and value not in allowed:
        refuse("one of " + ", ".join(allowed))
    if name == "device" and value not in DEVICES:  # "cuda:3" passed here and failed in the job's argparse
        refuse(", ".join(DEVICES[:-1]) + " or " + DEVICES[-1])
    return value


def _contrastParameterFits(kind, value):
    """Whether ``value`` lies in the range the panel offers for contrast ``kind``."""
    _, low, high, _ = CONTRAST_PARAMETERS[kind]
    return low <= value <= high


def _serialize(value):
    """A setting as the parameter node's string (booleans "true" / "false", as Slicer's template writes them)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _deserialize(text, default):
    """A parameter node string back to the type of ``default``; the default where it does not parse."""
    if isinstance(default, bool):
        return text == "true" if text in ("true", "false") else default
    try:
        return type(default)(text)
    except (TypeError, ValueError):
        return default


def _fillTable(tableNode, columns):
    """Replace the table's columns with ``columns`` (name → list of int, bool (as 0 / 1), float or str)."""
    table = tableNode.GetTable()
    table.Initialize()
    for name, values in columns.items():
        is_int = all(isinstance(v, (int, np.integer)) for v in values)
        is_str = not is_int and any(isinstance(v, str) for v in values)
        arr = vtk.vtkIntArray() if is_int else vtk.vtkStringArray() if is_str else vtk.vtkDoubleArray()
        arr.SetName(name)
        for v in values:
            arr.InsertNextValue(int(v) if is_int else str(v) if is_str else float(v))
        table.AddColumn(arr)
    tableNode.Modified()


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
