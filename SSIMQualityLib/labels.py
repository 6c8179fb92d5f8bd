"""SSIM → quality class.

Two schemes:

* equal bins: SSIM in [0, 1] split into ``n`` bins of equal width; class ``k``
  (0-based) holds SSIM in ``[k/n, (k+1)/n)``, the last bin also holds 1.0.
  SSIM below 0 (possible for anti-correlated images) counts as class 0.
* the clinical scheme: class 1 *good* (SSIM >= 0.85), class 2 *sufficient*
  (0.60 <= SSIM < 0.85), class 3 *rescan* (SSIM < 0.60).
"""
from __future__ import annotations

from typing import Union

import numpy as np

ArrayLike = Union[float, np.ndarray, list]

# The thresholds and class names are defined in vocabulary.py and re-exported here, beside the functions.
from .vocabulary import CLINICAL_GOOD, CLINICAL_NAMES, CLINICAL_SUFFICIENT, NOT_SCORED

__all__ = ["CLINICAL_GOOD", "CLINICAL_NAMES", "CLINICAL_SUFFICIENT", "NOT_SCORED", "equal_bin_class", "clinical_class", "all_classes"]

# Products like 0.3 * 10 land a hair below the integer edge in floating point, and a float32 prediction of 0.6
# is 0.59999996: every scheme compares s plus this hair with its edges, so that a value that *is* an edge (to
# float32 precision) is in the upper class of every scheme alike (rounding s * n instead gave each number of
# bins its own band, and the clinical scheme none).
_EDGE_TOLERANCE = 1e-7


def _on_grid(s: np.ndarray) -> np.ndarray:
    """SSIM values as every scheme compares them with its edges (plus :data:`_EDGE_TOLERANCE`; NaN as 0, its
    class is set apart), so that a value on a shared edge (0.6) is on it in every scheme."""
    return np.nan_to_num(s) + _EDGE_TOLERANCE


def equal_bin_class(ssim: ArrayLike, n_bins: int) -> np.ndarray:
    """Class index of each SSIM value for ``n_bins`` equal bins over [0, 1].

    Parameters
    ----------
    ssim : float or array_like
        SSIM values; values outside [0, 1] are clipped into it.  NaN (a slice that was not scored) gets class
        -1, as the results tables write it.
    n_bins : int
        Number of bins, at least 2 (the paper uses 3, 5 and 10).

    Returns
    -------
    ndarray of int
        Class ``k`` in ``0 .. n_bins - 1``; higher means better quality.

    Examples
    --------
    >>> equal_bin_class([0.0, 0.5, 0.6, 1.0, float("nan")], 5).tolist()
    [0, 2, 3, 4, -1]
    """
    if int(n_bins) != n_bins or n_bins < 2:
        raise ValueError(f"n_bins must be an integer >= 2, got {n_bins!r}")
    s = np.asarray(ssim, dtype=np.float64)
    k = np.floor(np.clip(_on_grid(s), 0.0, 1.0) * n_bins).astype(np.int64)
    return np.where(np.isnan(s), NOT_SCORED, np.minimum(k, int(n_bins) - 1))


def clinical_class(ssim: ArrayLike) -> np.ndarray:
    """Clinical class of each SSIM value: 1 good, 2 sufficient, 3 rescan; -1 for NaN (a slice not scored).

    Examples
    --------
    >>> clinical_class([0.9, 0.85, 0.7, 0.6, 0.59, float("nan")]).tolist()
    [1, 1, 2, 2, 3, -1]

    A float32 prediction of 0.6 is 0.59999996: it is on the edge, as the equal bins count it (within
    :data:`_EDGE_TOLERANCE`; it was "rescan" here and 0.6 or above in ``class5`` and ``class10``).

    >>> clinical_class(np.float32(0.6)).tolist(), equal_bin_class(np.float32(0.6), 5).tolist()
    (2, 3)
    """
    s = np.asarray(ssim, dtype=np.float64)
    r = _on_grid(s)
    cls = np.where(r >= CLINICAL_GOOD, 1, np.where(r >= CLINICAL_SUFFICIENT, 2, 3))
    return np.where(np.isnan(s), NOT_SCORED, cls).astype(np.int64)


def all_classes(ssim: ArrayLike) -> dict:
    """The classes of every scheme the project reports, keyed by column name."""
    return {
        "clinical_class": clinical_class(ssim),
        "class3": equal_bin_class(ssim, 3),
        "class5": equal_bin_class(ssim, 5),
        "class10": equal_bin_class(ssim, 10),
    }
