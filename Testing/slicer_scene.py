"""A real MRML scene from slicer-core, set as ``slicer.mrmlScene`` (DESIGN §4)."""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# The shim folder must be on the path before `slicer` is first imported.
for p in (os.path.join(HERE, "shim"), os.path.join(ROOT, "SSIMQuality"), ROOT):
    if p not in sys.path:
        sys.path.insert(0, p)


def make_scene():
    import slicer

    scene = slicer.vtkMRMLScene()
    app = slicer.vtkSlicerApplicationLogic()
    app.SetMRMLScene(scene)
    colors = slicer.vtkSlicerColorLogic()
    colors.SetMRMLApplicationLogic(app)
    colors.SetMRMLScene(scene)
    app.SetModuleLogic("Colors", colors)
    volumes = slicer.vtkSlicerVolumesLogic()
    volumes.SetMRMLApplicationLogic(app)
    volumes.SetMRMLScene(scene)
    app.SetModuleLogic("Volumes", volumes)
    tables = slicer.vtkSlicerTablesLogic()
    tables.SetMRMLApplicationLogic(app)
    tables.SetMRMLScene(scene)
    app.SetModuleLogic("Tables", tables)
    slicer.mrmlScene = scene
    return scene, app, {"Colors": colors, "Volumes": volumes, "Tables": tables}


def table_column(table, name):
    """One column of a vtkMRMLTableNode as a float array."""
    import numpy as np

    t = table.GetTable()
    return np.array([t.GetValueByName(r, name).ToDouble() for r in range(table.GetNumberOfRows())])
