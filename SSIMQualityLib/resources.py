"""Where the bundled resources live (sample data, model weights)."""
from __future__ import annotations

import os
from pathlib import Path

#: The repository's (or installed extension's) Resources folder.  Overridable
#: with SSIMQUALITY_RESOURCES for installs that put it elsewhere.
RESOURCES = Path(os.environ.get("SSIMQUALITY_RESOURCES", Path(__file__).resolve().parent.parent / "Resources"))
SAMPLE_VOLUME = RESOURCES / "Data" / "sample_t1_axial.nii.gz"
MODELS = RESOURCES / "Models"


def sample_volume_path() -> Path:
    """Path of the bundled sample volume; a clear error when it is missing."""
    from .errors import UnreadableFileError

    if not SAMPLE_VOLUME.is_file():
        raise UnreadableFileError("bundled sample volume not found", str(SAMPLE_VOLUME),
                                  "run from a full checkout or set SSIMQUALITY_RESOURCES")
    return SAMPLE_VOLUME
