"""Shared fixtures: the bundled sample and slices of it."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# Tests are about behaviour, not speed: keep torch to the machine's 2 cores.
os.environ.setdefault("OMP_NUM_THREADS", "2")

from SSIMQualityLib.resources import SAMPLE_VOLUME  # noqa: E402
from SSIMQualityLib.volumes import read_volume  # noqa: E402


@pytest.fixture(scope="session")
def sample_path() -> Path:
    assert SAMPLE_VOLUME.is_file(), f"bundled sample missing: {SAMPLE_VOLUME}"
    return SAMPLE_VOLUME


@pytest.fixture(scope="session")
def sample(sample_path):
    return read_volume(sample_path)


@pytest.fixture(scope="session")
def sample_slices(sample):
    """Twelve real slices of the sample: four per array axis, through the head."""
    out = []
    for axis in range(3):
        n = sample.shape[axis]
        for frac in (0.35, 0.45, 0.55, 0.65):
            out.append(np.ascontiguousarray(np.take(sample.array, int(n * frac), axis=axis), dtype=np.float32))
    return out


@pytest.fixture()
def scene():
    """A fresh real MRML scene (slicer-core) as ``slicer.mrmlScene``."""
    from slicer_scene import make_scene

    scene, _, _ = make_scene()
    yield scene
    scene.Clear(1)


@pytest.fixture()
def module():
    """The Slicer module file, imported as Slicer would (after the scene helper put the shim first)."""
    import importlib

    importlib.import_module("slicer_scene")  # puts the shim and the module folder on the path
    import SSIMQuality

    return SSIMQuality
