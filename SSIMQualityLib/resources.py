"""Where the bundled resources live (sample data, model weights).

The files are kept once, in the repository's ``Resources/`` tree, and found
wherever the library is installed:

* a wheel or ``pip install`` ships them inside the package, as
  ``SSIMQualityLib/Resources`` (``pyproject.toml`` maps that package folder
  onto ``Resources/``);
* a source checkout, and the scripted module's install folder in Slicer,
  have ``Resources/`` beside ``SSIMQualityLib/``;
* the CLI module's install folder in Slicer (``cli-modules/``) has none of
  its own and uses the scripted module's (``../qt-scripted-modules/Resources``).

``SSIMQUALITY_RESOURCES`` overrides the search (an install that puts them
elsewhere).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List


def resource_candidates() -> List[Path]:
    """The folders searched, in order (see the module's docstring)."""
    here = Path(__file__).resolve().parent
    return [here / "Resources", here.parent / "Resources", here.parent.parent / "qt-scripted-modules" / "Resources"]


def _find_resources() -> Path:
    env = os.environ.get("SSIMQUALITY_RESOURCES")
    if env:
        return Path(env)
    candidates = resource_candidates()
    for folder in candidates:
        if (folder / "Models" / "models.json").is_file():
            return folder
    return candidates[1]  # a checkout's place: the error messages name it


#: The Resources folder in use.
RESOURCES = _find_resources()
SAMPLE_VOLUME = RESOURCES / "Data" / "sample_t1_axial.nii.gz"
MODELS = RESOURCES / "Models"


def sample_volume_path() -> Path:
    """Path of the bundled sample volume; a clear error when it is missing."""
    from .errors import UnreadableFileError

    if not SAMPLE_VOLUME.is_file():
        raise UnreadableFileError("bundled sample volume not found", str(SAMPLE_VOLUME),
                                  "reinstall ssimquality, run from a full checkout, or set SSIMQUALITY_RESOURCES")
    return SAMPLE_VOLUME
