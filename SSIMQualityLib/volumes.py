"""Reading and writing image volumes (NIfTI, NRRD, MetaImage, DICOM series).

Everything goes through SimpleITK so that one geometry model (origin,
spacing, direction in LPS) covers every format.  Arrays are in (k, j, i)
order, as SimpleITK and Slicer's ``arrayFromVolume`` give them, and
``spacing`` is reported per *array* axis.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import UnreadableFileError, UnsupportedImageError, whole_number
from .settings import MEMORY_LIMIT_ENV, env_number
from .outputs import atomic_write_with_companions, ensure_writable, matching_suffix
from .vocabulary import MIN_SIZE

PathLike = Union[str, os.PathLike]

#: File endings we write (and read besides DICOM folders).
WRITABLE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


def _sitk():
    import SimpleITK as sitk  # imported lazily: a heavy import not every caller needs

    # ITK prints its warnings straight to stderr ("GDCMSeriesFileNames ... No Series were found" for a folder
    # that is not a DICOM series); each case is reported as our own one-line error instead.
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    return sitk


@dataclass
class Volume:
    """A 3-D image: voxels in (k, j, i) order plus the geometry to write it back.

    Attributes
    ----------
    array : ndarray, 3-D
        Voxel values, (k, j, i) order, the file's own dtype.
    spacing : tuple of 3 floats
        Voxel size per array axis (mm).
    origin, direction : tuple
        SimpleITK (LPS) geometry, kept to write outputs in the same space.
    path : str
        Where it was read from.
    """

    array: np.ndarray
    spacing: Tuple[float, float, float]
    origin: Tuple[float, ...] = (0.0, 0.0, 0.0)
    direction: Tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    path: str = ""
    metadata: dict = field(default_factory=dict)

    @property
    def shape(self) -> Tuple[int, int, int]:
        return tuple(self.array.shape)

    def slicing_axis(self, axis: Optional[int] = None) -> int:
        """The axis this volume is sliced along, as every command slices it
        (:func:`~SSIMQualityLib.slices.slicing_axis` with its spacing, shape and name)."""
        from .slices import slicing_axis

        return slicing_axis(self.spacing, axis, self.path or None, shape=self.shape)

    def to_sitk(self, array: Optional[np.ndarray] = None):
        """A SimpleITK image of ``array`` (default: this volume's) with this geometry."""
        sitk = _sitk()
        img = sitk.GetImageFromArray(self.array if array is None else array)
        img.SetSpacing(tuple(float(s) for s in self.spacing[::-1]))
        img.SetOrigin(self.origin)
        img.SetDirection(self.direction)
        return img


def _path_name(path: PathLike) -> str:
    return str(path)


def _read_dicom_folder(folder: Path, series_uid: Optional[str]):
    sitk = _sitk()
    reader = sitk.ImageSeriesReader()
    uids = list(reader.GetGDCMSeriesIDs(str(folder)) or [])
    if not uids:
        raise UnreadableFileError(
            "folder holds no DICOM series and is not an image file",
            folder,
            "point to a NIfTI / NRRD file or to a folder of DICOM slices",
        )
    if series_uid is None and len(uids) > 1:
        raise UnsupportedImageError(
            f"folder holds {len(uids)} DICOM series ({', '.join(uids)})",
            folder,
            "choose one by its SeriesInstanceUID (--series UID; series_uid= in Python) or put each series in its own "
            "folder",
        )
    uid = series_uid or uids[0]
    if uid not in uids:
        raise UnreadableFileError(f"no DICOM series with UID {uid}", folder, f"available: {', '.join(uids)}")
    files = reader.GetGDCMSeriesFileNames(str(folder), uid)
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()  # each file's header kept as the series is read: its slice position
    image = reader.Execute()
    _check_slice_positions(reader, files, folder)
    return image


def _check_slice_positions(reader, files: Sequence[str], folder: Path) -> None:
    """Refuse a series in which two files hold one slice position (a slice copied under another name, or several
    volumes in one series): it was read as one volume with more slices at a made-up spacing, and scored across
    another axis.  ``reader``: the series reader that read ``files``, with their headers."""
    seen: dict = {}
    for i, f in enumerate(files):
        position = reader.GetMetaData(i, "0020|0032").strip() if reader.HasMetaDataKey(i, "0020|0032") else None
        try:
            key = tuple(round(float(x), 3) for x in position.replace("\\", " ").split())
        except (AttributeError, ValueError):  # no position, or not three numbers: nothing to compare
            continue
        if len(key) != 3:
            continue
        if key in seen:
            raise UnsupportedImageError(f"two files of the DICOM series hold one slice position ({Path(seen[key]).name} "
                                        f"and {Path(f).name})", folder,
                                        "remove a copied slice; a series of several volumes (time points, diffusion "
                                        "directions) needs one folder per volume")
        seen[key] = f


def read_volume(path: PathLike, frame: Optional[int] = None, series_uid: Optional[str] = None) -> Volume:
    """Read a 3-D volume from a file or a DICOM series folder.

    Parameters
    ----------
    path : str or Path
        NIfTI (.nii, .nii.gz), NRRD, MetaImage, or a folder with one DICOM series.
    frame : int, optional
        For a 4-D file (a time series), the frame to read.  Without it a 4-D
        file is refused.
    series_uid : str, optional
        For a DICOM folder holding several series, the one to read.

    Returns
    -------
    Volume

    Raises
    ------
    UnreadableFileError
        Missing, empty, truncated or non-image file.
    UnsupportedImageError
        2-D, 4-D (without ``frame``), vector / RGB / complex voxels, too small.
    """
    p = Path(path)
    name = _path_name(path)
    if frame is not None:  # "1" was a TypeError; 1.7 read frame 1 of one file and failed on another
        frame = whole_number(frame, "frame", path=name)
    check_file(p)
    sitk = _sitk()
    if p.is_dir():
        try:
            img = _read_dicom_folder(p, series_uid)
        except RuntimeError as exc:
            raise UnreadableFileError(f"DICOM series could not be read ({first_line(exc)})", name,
                                      "check that the folder holds complete slices of one series") from None
    else:
        check_memory(p, frame)
        try:
            img = sitk.ReadImage(str(p))
        except RuntimeError as exc:
            if "orthonormal" in str(exc):
                raise UnsupportedImageError("the header's orientation (affine) is sheared or singular; the voxel grid "
                                            "has no orthonormal direction", name,
                                            "resample it onto an unsheared grid or fix the header's sform / qform") from None
            raise UnreadableFileError(f"not a readable image ({first_line(exc)})", name,
                                      "check that it is a complete NIfTI, NRRD, MetaImage or DICOM file") from None
    vol = _volume_from_sitk(img, name, frame, check=False)
    if p.is_file() and p.name.lower().endswith((".nii", ".nii.gz")) and np.issubdtype(vol.array.dtype, np.floating):
        # ITK's NIfTI reader turns NaN into 0; read float voxels with nibabel so NaN are seen.
        vol.array = _nifti_float_array(p, frame, vol.array.shape)
    check_volume(vol)
    return vol


def check_file(path: PathLike) -> None:
    """Refuse, before reading, a path that is missing, empty or a truncated NIfTI / gzip file.

    Folders (DICOM series) only need to exist.  Used by :func:`read_volume`
    and by the Slicer module before it hands a file to Slicer's readers.
    """
    p = Path(path)
    name = _path_name(path)
    if not p.exists():
        raise UnreadableFileError("file does not exist", name, "check the path")
    if p.is_dir():
        return
    if p.stat().st_size == 0:
        raise UnreadableFileError("file is empty (0 bytes)", name, "re-export or copy the file again")
    _check_complete(p, name)


#: Room for the model, torch and one batch of slices on top of the volume itself.
_OVERHEAD_BYTES = 600 * 2 ** 20


def memory_limit_setting() -> Optional[int]:
    """``$SSIMQUALITY_MEMORY_LIMIT_GB`` in bytes (None when unset); one line for a value that is not a positive
    number of gigabytes (the commands check it before any work: a value like ``4G`` refused every volume, one line
    each, and ``0`` or ``-1`` were taken)."""
    gb = env_number(MEMORY_LIMIT_ENV, unit="gigabytes", example="4", unset="to use the free memory")
    return None if gb is None else int(gb * 2 ** 30)


def cgroup_room(proc_cgroup: PathLike = "/proc/self/cgroup", root: PathLike = "/sys/fs/cgroup") -> Optional[int]:
    """Bytes this process may still take under its control group's memory limits (a SLURM job's ``--mem``, a
    container's limit), the tightest over the group and its parents; None where no limit is set or readable.

    The free memory of the machine says nothing of such a limit: a job over it is killed, not refused.
    cgroup v2 (``memory.max`` / ``memory.current``) and v1 (``memory.limit_in_bytes`` / ``memory.usage_in_bytes``);
    the group's inactive file cache (``memory.stat``) counts as room, since the kernel reclaims it before it kills
    (a job that has read many volumes has its usage filled with cache).
    """
    try:
        lines = Path(proc_cgroup).read_text(encoding="ascii").splitlines()
    except OSError:
        return None

    def number(path: Path) -> Optional[int]:
        try:
            text = path.read_text(encoding="ascii").strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None  # "max": no limit

    def cache(folder: Path, key: str) -> int:
        try:
            for line in (folder / "memory.stat").read_text(encoding="ascii").splitlines():
                name, _, value = line.partition(" ")
                if name == key and value.strip().isdigit():
                    return int(value)
        except OSError:
            pass
        return 0

    rooms = []
    for line in lines:
        _, controllers, group = (line.split(":", 2) + ["", ""])[:3]
        if controllers == "":
            bases, files = [Path(root), Path(root) / "unified"], ("memory.max", "memory.current", "inactive_file")
        elif "memory" in controllers.split(","):
            bases, files = [Path(root) / "memory"], ("memory.limit_in_bytes", "memory.usage_in_bytes",
                                                     "total_inactive_file")
        else:
            continue
        for base in bases:
            here = base / group.strip().lstrip("/")
            while True:
                limit, used = number(here / files[0]), number(here / files[1])
                if limit is not None and used is not None and limit < 2 ** 62:  # v1 writes "no limit" as ~2^63
                    rooms.append(limit - used + cache(here, files[2]))
                if here == base or base not in here.parents:
                    break
                here = here.parent
    return max(0, min(rooms)) if rooms else None


def available_memory() -> Optional[int]:
    """Bytes this process may still use: ``$SSIMQUALITY_MEMORY_LIMIT_GB``, or the system's free memory and the
    room under the process's control-group limit, whichever is less (None: unknown)."""
    limit = memory_limit_setting()
    if limit is not None:
        return limit
    free = None
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024
    except OSError:
        pass
    if free is None:
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            free = None
    room = cgroup_room()
    return free if room is None else room if free is None else min(free, room)


def memory_estimate(path: PathLike, frame: Optional[int] = None) -> Optional[int]:
    """Bytes needed to read and score one 3-D volume of an image file, from its header alone (None: unknown).

    The file's voxels of one frame twice (ITK's image and the array taken from
    it) plus a fixed allowance for the model and a batch of slices; scoring
    streams slices, so nothing grows with the volume beyond that.
    """
    sitk = _sitk()
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None  # the reader proper gives the clear error
    size = list(reader.GetSize())
    voxels = int(np.prod(size[:3])) * (int(np.prod(size[3:])) if frame is None else 1)
    # Bytes per voxel, all components: those of a 1 × 1 image of the file's pixel type.  A complex type counts two
    # components but is no vector type, and that image cannot be made with the count: made without it.
    try:
        per_voxel = sitk.GetArrayViewFromImage(sitk.Image([1, 1], reader.GetPixelID(),
                                                          reader.GetNumberOfComponents())).nbytes
    except RuntimeError:
        try:
            per_voxel = sitk.GetArrayViewFromImage(sitk.Image([1, 1], reader.GetPixelID())).nbytes
        except RuntimeError:
            return None  # a pixel type of its own: the reader proper says what it makes of it
    return 2 * voxels * per_voxel + _OVERHEAD_BYTES


def check_memory(path: PathLike, frame: Optional[int] = None) -> None:
    """Refuse, before loading, a volume that would not fit in the memory available."""
    need = memory_estimate(path, frame)
    have = available_memory()
    if need is not None and have is not None and need > have:
        limited = bool(os.environ.get(MEMORY_LIMIT_ENV))  # the ceiling is the user's own, not the machine's
        raise UnsupportedImageError(
            f"volume needs about {need / 2 ** 30:.1f} GB of memory to score, {have / 2 ** 30:.1f} GB is "
            + (f"allowed by {MEMORY_LIMIT_ENV}" if limited else "available"), _path_name(path),
            f"raise {MEMORY_LIMIT_ENV} if the machine has the memory, or crop / downsample the volume first" if limited
            else "free memory, use a larger machine, or crop / downsample the volume first")


def read_nifti_voxels(path: PathLike) -> Tuple[np.ndarray, Tuple[float, float, float]]:
    """A 3-D NIfTI file's voxels as :func:`read_volume` orders them, (k, j, i) float32, and its spacing, read
    by nibabel alone: for packaged training sources where SimpleITK is not installed (a GPU machine with only
    torch's stack).  No checks: :func:`read_volume` is the reader for users' files."""
    import nibabel as nib

    img = nib.load(str(path))
    arr = np.asarray(img.dataobj, dtype=np.float32)
    return np.ascontiguousarray(arr.transpose(2, 1, 0)), tuple(float(z) for z in img.header.get_zooms()[:3][::-1])


def _nifti_float_array(p: Path, frame: Optional[int], shape) -> np.ndarray:
    import nibabel as nib

    data = np.asanyarray(nib.load(str(p)).dataobj)
    if data.ndim >= 4:
        data = data.reshape(data.shape[:3] + (-1,))[..., 0 if frame is None else frame]
    arr = np.ascontiguousarray(data.T).astype(np.float32 if data.dtype.itemsize <= 4 else data.dtype, copy=False)
    return arr if arr.shape == tuple(shape) else np.zeros(shape, np.float32) + np.nan


def _check_complete(p: Path, name: str) -> None:
    """Catch truncated files that ITK would silently read as zeros."""
    import gzip

    lower = p.name.lower()
    length = None
    if lower.endswith(".gz"):
        length = 0
        try:
            with gzip.open(p, "rb") as fh:
                while True:
                    chunk = fh.read(1 << 22)
                    if not chunk:
                        break
                    length += len(chunk)
        except EOFError:
            raise UnreadableFileError("compressed file is truncated (the download or copy did not finish)", name,
                                      "copy or export the file again") from None
        except OSError as exc:
            raise UnreadableFileError(f"not a valid gzip file ({exc})", name,
                                      "check the file; only .nii.gz and .nrrd may be compressed") from None
    if lower.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        try:
            hdr = nib.load(str(p)).header
        except Exception:  # nibabel raises many types for a bad header
            raise UnreadableFileError("not a readable image: no valid NIfTI header", name,
                                      "check that it is a complete NIfTI file and not another file renamed") from None
        if length is None:
            length = p.stat().st_size
        offset = int(hdr.get("vox_offset", 352)) if hasattr(hdr, "get") else 352
        needed = offset + int(np.prod(hdr.get_data_shape())) * hdr.get_data_dtype().itemsize
        if length < needed:
            raise UnreadableFileError(f"file is truncated: {length} of {needed} bytes", name,
                                      "copy or export the file again")


def first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    # ITK messages start with a file:line location; keep the description.
    for marker in ("Description:", "ERROR:", "Exception"):
        if marker in text:
            text = text.split(marker, 1)[1].strip(" :")
            break
    if len(text) > 160:  # cut at a word, marked as cut
        text = text[:160].rsplit(" ", 1)[0] + " …"
    return text if text else type(exc).__name__


def _volume_from_sitk(img, name: str, frame: Optional[int], check: bool = True) -> Volume:
    sitk = _sitk()
    ncomp = img.GetNumberOfComponentsPerPixel()
    ptype = img.GetPixelIDTypeAsString()
    if "complex" in ptype.lower():
        raise UnsupportedImageError(f"voxels are complex numbers ({ptype})", name, "export the magnitude image")
    if ncomp > 1:
        raise UnsupportedImageError(f"image has {ncomp} values per voxel (RGB or vector image)", name,
                                    "convert it to a single-channel greyscale volume")
    dim = img.GetDimension()
    size = list(img.GetSize())
    if dim >= 4:
        frames = int(np.prod(size[3:]))
        if dim > 4:  # no frame index reaches one 3-D volume: said before asking for a frame
            raise UnsupportedImageError(f"image is {dim}-D", name, "split it into 3-D volumes")
        if frames == 1:
            frame = 0
        if frame is None:
            raise UnsupportedImageError(f"image is {dim}-D with {frames} frames (a sequence, not a volume)", name,
                                        "pick one frame (--frame N, where the command has it) or split the series "
                                        "into 3-D volumes")
        if not 0 <= frame < frames:
            raise UnsupportedImageError(f"frame {frame} does not exist (the file has {frames} frames)", name,
                                        f"choose a frame from 0 to {frames - 1}")
        img = sitk.Extract(img, size[:3] + [0], [0, 0, 0, int(frame)])
    elif dim == 2:
        raise UnsupportedImageError(f"image is 2-D ({size[0]} x {size[1]}), not a volume", name,
                                    "give a 3-D volume (a stack of slices)")
    array = sitk.GetArrayFromImage(img)
    spacing = tuple(float(s) for s in img.GetSpacing()[::-1])
    vol = Volume(array=array, spacing=spacing, origin=tuple(img.GetOrigin()), direction=tuple(img.GetDirection()),
                 path=name)
    if check:
        check_volume(vol)
    return vol


def check_volume(vol: Volume) -> None:
    """Refuse volumes the method cannot handle, with the reason.

    Checks: 3-D with at least two axes of ``MIN_SIZE`` voxels; positive
    finite spacing; finite voxels; not constant.
    """
    name = vol.path or "volume"
    a = vol.array
    if a.ndim != 3:
        raise UnsupportedImageError(f"expected a 3-D volume, got {a.ndim}-D of shape {a.shape}", name)
    if a.size == 0:
        raise UnsupportedImageError(f"the volume has no voxels (shape {a.shape})", name)
    if a.dtype == bool or not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise UnsupportedImageError(f"voxel type {a.dtype} is not a greyscale intensity", name,
                                    "convert it to an integer or float volume")
    if sum(s >= MIN_SIZE for s in a.shape) < 2:
        raise UnsupportedImageError(f"volume of shape {a.shape} is too small: slices need at least "
                                    f"{MIN_SIZE} x {MIN_SIZE} voxels", name, "use the full-resolution image")
    if not all(np.isfinite(s) and s > 0 for s in vol.spacing):
        raise UnsupportedImageError(f"voxel spacing {vol.spacing} is not positive", name, "fix the file's header")
    if np.issubdtype(a.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(a)))
        if bad:
            raise UnsupportedImageError(f"{bad} of {a.size} voxels are NaN or infinite", name,
                                        "replace them with 0 (e.g. nan_to_num) and try again")
        # Every step works in float32: beyond its range the slices become infinities (a RuntimeError in torch).
        largest = max(-float(a.min()), float(a.max()))  # no |a| copy of a large volume
        if largest > float(np.finfo(np.float32).max):
            raise UnsupportedImageError(f"voxel values reach {largest:.3g}, beyond what float32 holds (3.4e+38)",
                                        name, "rescale the volume (e.g. divide it by its maximum) and try again")
    if a.size and a.min() == a.max():
        raise UnsupportedImageError(f"every voxel has the same value ({a.flat[0]}), there is no image", name,
                                    "check that the right file was exported")


#: Data files SimpleITK writes beside a detached header (compressed, as write_volume writes), by the header's suffix.
_DATA_FILES = {".nhdr": ".raw.gz", ".mhd": ".zraw"}


def checked_array(volume, spacing=(1.0, 1.0, 1.0), *, check: bool = True) -> np.ndarray:
    """A volume given to the library (a numpy array, a tensor on any device, nested lists) as a numpy array,
    checked as a file's voxels are (:func:`check_volume`) unless ``check`` is false.  What is plainly not a
    volume's voxels (a :class:`Volume` itself, a file name, a network) is refused in one line saying what to
    pass (it read "expected a 3-D volume, got 0-D")."""
    from .errors import BadParameterError

    if isinstance(volume, Volume):
        raise BadParameterError("a Volume was given where its voxels go",
                                hint="pass vol.array and vol.spacing (and direction=vol.direction)")
    if isinstance(volume, (str, os.PathLike)):
        raise BadParameterError(f"a file name was given where a volume's voxels go: {str(volume)!r}",
                                hint="read it first: vol = read_volume(path), then pass vol.array and vol.spacing")
    if type(volume).__module__.startswith("torch.nn") or hasattr(volume, "state_dict"):
        raise BadParameterError("a network was given where a volume's voxels go",
                                hint="the model comes first: score_array(model, volume, spacing)")
    array = np.asarray(volume.detach().cpu()) if hasattr(volume, "detach") else np.asarray(volume)
    if check:
        try:  # a file's header always has three; an argument may have two, or text ("could not convert 'a'")
            sizes = tuple(float(s) for s in spacing)
        except (TypeError, ValueError):
            sizes = ()
        if len(sizes) != 3 or not all(np.isfinite(sizes)) or min(sizes) <= 0:
            raise UnsupportedImageError(f"spacing must be three positive voxel sizes (mm), one per array axis; got "
                                        f"{spacing!r}")
        check_volume(Volume(array=array, spacing=sizes))
    return array


def check_output_path(path: PathLike, force: bool = False) -> Path:
    """Validate a volume output path before any work: known suffix, folder exists, no overwrite without ``force``
    (of the header's data file either, for ``.nhdr`` and ``.mhd``)."""
    p = ensure_writable(path, force, WRITABLE_SUFFIXES)
    suffix = matching_suffix(p, tuple(_DATA_FILES))
    if suffix is not None:
        ensure_writable(p.with_name(p.name[:-len(suffix)] + _DATA_FILES[suffix]), force)
    return p


def cast_like(array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Cast float results back to a volume's dtype, rounding and clipping for integers.

    The top of a 32- or 64-bit integer range is not a float32 (or float64) number: clipped in float it rounds
    up past the range and the cast wrapped it to the bottom (an int32 scan near 2³¹ came back with voxels at
    −2³¹).  Whatever reaches the range's ends is set to them exactly.

    >>> cast_like(np.array([3e9, 2.2e9, -3e9, 5.4], np.float32), np.int32).tolist()
    [2147483647, 2147483647, -2147483648, 5]
    """
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        rounded = np.rint(array)
        with np.errstate(invalid="ignore"):  # the ends are set below
            out = np.clip(rounded, info.min, info.max).astype(dtype)
        out[rounded >= info.max] = info.max
        out[rounded <= info.min] = info.min
        return out
    return array.astype(dtype, copy=False)


def write_volume(array: np.ndarray, like: Volume, path: PathLike, force: bool = False) -> Path:
    """Write ``array`` with the geometry of ``like``, atomically (never a half-written file)."""
    sitk = _sitk()
    img = like.to_sitk(array)
    with atomic_write_with_companions(path, force, WRITABLE_SUFFIXES) as tmp:  # .nhdr / .mhd write two files
        sitk.WriteImage(img, tmp, True)
    return Path(path)


def _visible_files(folder: Path) -> List[Path]:
    """The folder's files, hidden ones left out ([] for a folder that cannot be read)."""
    try:
        return [f for f in folder.iterdir() if f.is_file() and not f.name.startswith(".")]
    except OSError:
        return []


def _looks_like_dicom_folder(folder: Path) -> bool:
    """A folder holding .dcm files, or files without a suffix (as scanners often write them)."""
    return any(f.suffix.lower() in (".dcm", ".ima") or f.suffix == "" for f in _visible_files(folder))


def _holds_dicom_slices(folder: Path) -> bool:
    """A folder holding DICOM files for certain: ``.dcm`` or ``.ima`` files, or files without a suffix that
    carry DICOM's "DICM" mark (a README beside NIfTI files is not a series, nor is a DICOMDIR index)."""
    files = _visible_files(folder)
    if any(f.suffix.lower() in (".dcm", ".ima") for f in files):
        return True
    for f in (f for f in files if f.suffix == "" and f.name.upper() != "DICOMDIR"):
        try:
            with f.open("rb") as fh:
                fh.seek(128)
                if fh.read(4) == b"DICM":
                    return True
        except OSError:
            continue
    return False


def list_volume_paths(paths: List[PathLike], recursive: bool = False, *,
                      repeats: Optional[List[Path]] = None) -> List[Path]:
    """Expand files and folders into volumes: image files, and folders holding a DICOM series.

    A folder given directly that holds no image file is taken as a DICOM series itself, and so is one that
    holds DICOM slices beside image files.
    Its sub-folders are looked into one level (all levels with ``recursive``).  Hidden
    sub-folders (``.git``, ``.cache`` …) and hidden files are skipped.  A volume reached twice (given twice,
    as ``a.nii`` and ``./a.nii``, or as a file and inside a folder given too) is listed once, under its first
    name; the later names are appended to ``repeats`` when a list is given (scored twice, it counted twice in
    the tallies, and its shards could not be merged).
    """
    out: List[Path] = []
    for raw in paths:
        p = Path(raw)
        if not p.is_dir():
            out.append(p)
            continue
        found: List[Path] = []
        def hidden(d: Path) -> bool:
            return any(part.startswith(".") for part in d.relative_to(p).parts)

        folders = [p] + (sorted(d for d in p.rglob("*") if d.is_dir() and not hidden(d)) if recursive
                         else sorted(d for d in p.iterdir() if d.is_dir() and not hidden(d)))
        for d in folders:
            if recursive or d == p:
                files = sorted(f for f in d.iterdir() if f.is_file() and not f.name.startswith("."))
                found.extend(f for f in files if matching_suffix(f, WRITABLE_SUFFIXES))
            if d != p and _looks_like_dicom_folder(d):
                found.append(d)
        if not found and _looks_like_dicom_folder(p):
            found.append(p)
        elif found and p not in found and _holds_dicom_slices(p):
            # DICOM slices beside image files (dcm2niix's output written next to them): the series is a volume
            # too (it was dropped without a word, while --recursive and `corrupt` read it).
            found.insert(0, p)
        out.extend(found if found else [p])
    seen, unique = set(), []
    for p in out:
        # Folders resolved, not the file itself: in a DataLad / git-annex dataset two scans of equal content are
        # links to one object, and they are two volumes.
        key = os.path.join(os.path.realpath(p.parent), p.name)
        if key in seen:
            if repeats is not None:
                repeats.append(p)
            continue
        seen.add(key)
        unique.append(p)
    return unique


def folders_left_out(paths: List[PathLike]) -> List[Path]:
    """Sub-folders of the folders in ``paths`` that hold image files at any depth (a BIDS root's
    ``sub-01/anat/``), which :func:`list_volume_paths` without ``recursive`` does not look into: what a user
    is told about.

    Examples
    --------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp()); (d / "site1" / "anat").mkdir(parents=True)
    >>> _ = (d / "site1" / "anat" / "a.nii.gz").write_bytes(b"")
    >>> [f.name for f in folders_left_out([d])], list_volume_paths([d]) == [d]
    (['site1'], True)
    """
    def holds_images(folder: Path, depth: int = 3) -> bool:
        """An image file within ``depth`` levels (a BIDS root's sub-*/ses-*/anat/), hidden folders not entered;
        stops at the first one (a DICOM archive is not walked to its end for a note)."""
        try:
            entries = sorted(folder.iterdir())
        except OSError:
            return False
        if any(f.is_file() and matching_suffix(f, WRITABLE_SUFFIXES) for f in entries):
            return True
        return depth > 1 and any(holds_images(d, depth - 1) for d in entries
                                 if d.is_dir() and not d.is_symlink() and not d.name.startswith("."))

    left = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            left += [d for d in sorted(p.iterdir()) if d.is_dir() and not d.name.startswith(".") and holds_images(d)]
    return left
