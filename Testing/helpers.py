"""Test data makers shared by several suites, and the loader of ``scripts/`` for their tests."""
import importlib.util
from pathlib import Path

import numpy as np


def write_dicom_series(vol, folder: Path, n_slices: int = 12, series_uid: str = "1.2.826.0.1.3680043.2.1125.1") -> Path:
    """Write the first ``n_slices`` of a Volume as a DICOM MR series (one file per slice)."""
    import SimpleITK as sitk

    folder.mkdir(parents=True)
    img = vol.to_sitk(np.ascontiguousarray(vol.array[:n_slices]))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    direction = img.GetDirection()
    for k in range(img.GetDepth()):
        s = img[:, :, k]
        s.SetMetaData("0020|000e", series_uid)
        s.SetMetaData("0020|000d", "1.2.826.0.1.3680043.2.1125.2")
        s.SetMetaData("0008|0060", "MR")
        s.SetMetaData("0020|0032", "\\".join(map(str, img.TransformIndexToPhysicalPoint((0, 0, k)))))
        s.SetMetaData("0020|0037", "\\".join(map(str, direction[0:3] + direction[3:6])))
        s.SetMetaData("0020|0013", str(k))
        s.SetMetaData("0008|0018", f"{series_uid}.{k}")
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(s)
    return folder


def write_nifti(path: Path, array: np.ndarray, zooms=(1.0, 1.0, 1.0)) -> Path:
    """A NIfTI file from an (i, j, k[, t]) array."""
    import nibabel as nib

    affine = np.diag(list(zooms[:3]) + [1.0])
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


def load_script(name: str):
    """``scripts/<name>.py`` imported as a module (the scripts folder is not a package)."""
    path = Path(__file__).resolve().parent.parent / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
