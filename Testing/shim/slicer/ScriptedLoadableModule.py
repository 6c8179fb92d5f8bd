"""Test-only stand-in for Slicer's ScriptedLoadableModule base classes.

slicer-core ships MRML but not the application's scripted-module base
classes.  This minimal shim (no __init__.py: slicer-core merges any
``slicer/`` folder on the path into its package) provides what the module
file uses outside a GUI.  It is on the PYTHONPATH of the tests only.
"""
import os
import unittest

import slicer


class ScriptedLoadableModule:
    def __init__(self, parent=None):
        self.parent = parent if parent is not None else type("ModuleParent", (), {})()
        self.moduleName = type(self).__name__

    def resourcePath(self, filename):
        return os.path.join(os.path.dirname(os.path.abspath(__import__(type(self).__module__).__file__)),
                            "Resources", filename)


class ScriptedLoadableModuleWidget:
    def __init__(self, parent=None):
        self.parent = parent
        self.moduleName = type(self).__name__[: -len("Widget")]

    def resourcePath(self, filename):
        module = __import__(type(self).__module__)
        return os.path.join(os.path.dirname(os.path.abspath(module.__file__)), "Resources", filename)

    def setup(self):
        pass


class ScriptedLoadableModuleLogic:
    def __init__(self, parent=None):
        self.moduleName = type(self).__name__[: -len("Logic")]

    def getParameterNode(self):
        """The module's singleton parameter node in the current scene (created on first use)."""
        tag = self.moduleName
        node = slicer.mrmlScene.GetSingletonNode(tag, "vtkMRMLScriptedModuleNode")
        if node is None:
            node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
            node.UnRegister(None)
            node.SetSingletonTag(tag)
            node.SetName(tag)
            node = slicer.mrmlScene.AddNode(node)
        return node


class ScriptedLoadableModuleTest(unittest.TestCase):
    def delayDisplay(self, message, msec=0):
        print(message)

    def runTest(self):
        pass
