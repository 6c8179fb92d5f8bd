"""Which way round a slice is: as a viewer shows it (figures) and as the network is given it (scoring).

A file stores its voxels in any order (DICOM's, a NIfTI reoriented to RAS, ...), so the same image can reach us
upside down, mirrored or transposed.  The network is not invariant to that (single slices of one scan moved by
up to 0.3 between two storage orders), so every slice is turned into one orientation before it is scored:
:func:`network_slice`, the order of a volume stored RAS+ (what most NIfTI files hold), chosen by measurement: the
model learnt from slices in several orders (MNI152 as nibabel reads it is this order with rows and columns
swapped, then flipped and transposed at random), so none is its own.  On the 12 held-out real scans (v12, 2026-11-29) that orientation scored
as well as each file's own order (ρ 0.871 against 0.875, σ 0.076 against 0.075, 22 of 24 curves falling against 21)
where 3D Slicer's view scored worse (ρ 0.863, σ 0.082), and so did RAS with rows and columns swapped (ρ 0.858).
Figures draw slices as 3D Slicer shows them (:func:`display_slice`).
"""
from __future__ import annotations

from typing import Optional, Sequence, TypeVar

import numpy as np
import torch

Slices = TypeVar("Slices", np.ndarray, torch.Tensor)


#: Where each view puts the patient, as 3D Slicer's default views do (radiological): for the physical axis
#: nearest the slice's normal (0 x, 1 y, 2 z in SimpleITK's LPS), the physical axis and direction that run down
#: the screen's rows and right along its columns.  Axial: anterior at the top, the patient's left on the right;
#: coronal: superior at the top, left on the right; sagittal: superior at the top, anterior on the left.
_VIEWS = {2: ((1, 1), (0, 1)), 1: ((2, -1), (0, 1)), 0: ((2, -1), (1, 1))}


#: The same for the order of a volume stored RAS+ (index i running to the patient's right, j anterior, k
#: superior): every view of :data:`_VIEWS` turned by 180 degrees.
_RAS_VIEWS = {normal: ((rows, -row_sign), (cols, -col_sign))
              for normal, ((rows, row_sign), (cols, col_sign)) in _VIEWS.items()}


def display_slice(image: Slices, *, direction: Optional[Sequence[float]] = None, axis: int = 0) -> Slices:
    """A slice (or a stack of them, over the last two axes; numpy or torch) turned the way a viewer shows it,
    to draw with row 0 at the top (matplotlib's default).

    A slice taken along array ``axis`` of a volume (array order (k, j, i), as
    :class:`~SSIMQualityLib.volumes.Volume` holds it) is stored in whatever order its file was written:
    drawn as stored, one file shows the face at the top and another at the bottom.  Here it is transposed
    and flipped by the volume's ``direction`` (SimpleITK's LPS 3 × 3, row-major; identity when None) into
    3D Slicer's default views (radiological: the patient's left on the screen's right).  Slices of strongly
    oblique volumes, whose two in-plane axes lie nearest the same physical axis, are returned as stored.

    Examples
    --------
    >>> ras = (-1, 0, 0, 0, -1, 0, 0, 0, 1)  # a NIfTI stored RAS: rows run anterior, columns to the right
    >>> display_slice(np.arange(4).reshape(2, 2), direction=ras, axis=0).tolist()
    [[3, 2], [1, 0]]
    >>> display_slice(torch.arange(8).reshape(2, 2, 2), direction=ras, axis=0)[1].tolist()
    [[7, 6], [5, 4]]
    """
    return _turn(image, direction, axis, _VIEWS)


def network_slice(image: Slices, *, direction: Optional[Sequence[float]] = None, axis: int = 0) -> Slices:
    """A slice (or a stack, as :func:`display_slice` takes them) turned the way the network is given it: as a
    volume stored RAS+ holds it (the module notes say why), so that one image scores alike however its file
    stores it.

    Examples
    --------
    >>> ras = (-1, 0, 0, 0, -1, 0, 0, 0, 1)  # stored RAS already: as it is
    >>> network_slice(np.arange(4).reshape(2, 2), direction=ras, axis=0).tolist()
    [[0, 1], [2, 3]]
    >>> lps = (1, 0, 0, 0, 1, 0, 0, 0, 1)  # DICOM's order: both in-plane axes reversed
    >>> network_slice(np.arange(4).reshape(2, 2), direction=lps, axis=0).tolist()
    [[3, 2], [1, 0]]
    """
    return _turn(image, direction, axis, _RAS_VIEWS)


def direction_matrix(direction: Sequence[float]) -> np.ndarray:
    """A volume's direction (SimpleITK's 9 numbers, row-major, as :attr:`~SSIMQualityLib.volumes.Volume.direction`)
    as a 3 × 3 matrix; anything else is one line (a wrong length failed inside numpy's reshape, or meant "all
    background" to the IQMs).

    >>> direction_matrix((1, 0, 0, 0, 1, 0, 0, 0, 1)).shape
    (3, 3)
    """
    from .errors import BadParameterError

    try:
        d = np.asarray(direction, dtype=float)
    except (TypeError, ValueError):
        d = np.zeros(0)
    if d.size != 9 or not np.isfinite(d).all():
        raise BadParameterError(f"direction must be a volume's 3 x 3 direction (9 numbers, as Volume.direction), "
                                f"got {direction!r}")
    return d.reshape(3, 3)


def _turn(image: Slices, direction: Optional[Sequence[float]], axis: int, views: dict) -> Slices:
    """``image`` transposed and flipped into ``views`` (for the physical axis nearest the slice's normal, the
    physical axis and sign that run down the rows and along the columns); as stored where the volume is so
    oblique that both in-plane axes lie nearest one physical axis."""
    img = image if isinstance(image, torch.Tensor) else np.asarray(image)
    d = np.eye(3) if direction is None else direction_matrix(direction)
    column = {0: 2, 1: 1, 2: 0}  # array axis (k, j, i) -> the direction matrix's column (index i, j, k)
    rows_axis, cols_axis = [a for a in range(3) if a != axis]

    def nearest(a):  # (physical axis, its sign) nearest array axis a
        v = d[:, column[a]]
        p = int(np.argmax(np.abs(v)))
        return p, 1 if v[p] >= 0 else -1

    (want_rows, row_sign), (want_cols, col_sign) = views[nearest(axis)[0]]
    (p_rows, s_rows), (p_cols, s_cols) = nearest(rows_axis), nearest(cols_axis)
    if (p_rows, p_cols) == (want_cols, want_rows):
        img, (p_rows, s_rows), (p_cols, s_cols) = img.swapaxes(-1, -2), (p_cols, s_cols), (p_rows, s_rows)
    if (p_rows, p_cols) != (want_rows, want_cols):
        return img
    flip = tuple(dim for dim, step in ((-2, s_rows * row_sign), (-1, s_cols * col_sign)) if step < 0)
    if not flip:
        return img
    return img.flip(flip) if isinstance(img, torch.Tensor) else np.flip(img, flip)  # numpy: a view
