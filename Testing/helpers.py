"""Test data makers shared by several suites, and the loader of ``scripts/`` for their tests."""
import dataclasses
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


def stored_otherwise(vol):
    """The same image stored another way: columns reversed and rows and columns of each slice swapped (a
    DICOM series against its NIfTI conversion), with the direction (and origin) that keep every voxel where it
    was in the patient."""
    d = np.asarray(vol.direction, dtype=float).reshape(3, 3)
    sp = np.asarray(vol.spacing[::-1], dtype=float)  # (i, j, k)
    n_i = vol.array.shape[2]
    origin = np.asarray(vol.origin) + d[:, 0] * sp[0] * (n_i - 1)  # the old last column is the new first
    d = d.copy()
    d[:, 0] *= -1
    array = np.swapaxes(vol.array[..., ::-1], 1, 2)  # (k, j, i) -> (k, i', j)
    d = d[:, [1, 0, 2]]
    spacing = (vol.spacing[0], vol.spacing[2], vol.spacing[1])
    return dataclasses.replace(vol, array=np.ascontiguousarray(array), spacing=spacing, origin=tuple(origin),
                               direction=tuple(d.ravel()))
