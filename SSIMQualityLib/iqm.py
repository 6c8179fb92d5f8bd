"""No-reference image quality metrics of MRIQC, on any contrast: CNR, CJV, EFC, QI1.

MRIQC computes these on BIDS T1w / T2w volumes after a full FSL / ANTs /
AFNI segmentation and a registration to MNI space, and returns −1 on
skull-stripped or defaced inputs.  Here the masks come from a light,
contrast-agnostic segmentation (Otsu head mask, a three-class intensity model
inside it), and a metric that cannot be computed is NaN with the reason.

The statistics follow MRIQC's code (``mriqc/qc/anatomical.py`` and the
``StructuralQC`` / ``ArtifactMask`` interfaces, release 24.0.2), not only its
documented formulas; where they differ the docstring says so.

=====  =========================  ==========================================================
IQM    direction                  definition (as MRIQC's code computes it)
=====  =========================  ==========================================================
CNR    higher is better           |median_WM − median_GM| / sqrt(σ_air² + σ_WM² + σ_GM²)
CJV    lower is better            (MAD-σ_WM + MAD-σ_GM) / |median_WM − median_GM|
EFC    lower is better            Shannon entropy of x / sqrt(Σx²), normalised by its maximum
QI1    lower is better            artefact voxels / voxels of the air region ("hat")
=====  =========================  ==========================================================

The two tissue classes are "the two largest of the three classes inside the
brain region" and the third (the smallest) is taken as CSF: CNR and CJV are
symmetric in WM and GM, so the metrics do not need to know which tissue is
brighter (WM is darker than GM on T2 and FLAIR).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

#: Least number of voxels a mask needs for its statistics to mean anything.
MIN_VOXELS = 100

#: Each metric's direction: +1 where a higher value means a better image, −1 where a lower one does.
DIRECTIONS: Dict[str, int] = {"cnr": +1, "cjv": -1, "efc": -1, "qi1": -1}
#: The metrics, in the order tables show them.
IQM_NAMES: Tuple[str, ...] = tuple(DIRECTIONS)
#: Columns of an IQM row (after the file name): the metrics, which air QI1 used, and why any is missing.
IQM_COLUMNS: Tuple[str, ...] = IQM_NAMES + ("qi1_air", "reason")

#: QI1's artefact detection rules (see :func:`artefact_mask`); the first is the default.
QI1_DETECTIONS: Tuple[str, ...] = ("mriqc", "robust")
#: The two air regions QI1 can use (see :func:`air_region`).
AIR_HAT, AIR_ALL = "hat", "all background"

#: MRIQC's detection threshold: background value / MAD-σ of the non-zero background.
MRIQC_ZSCORE = 10.0
#: MRIQC's distance rule: air voxels nearer the head than this share of the largest distance are not artefacts.
MRIQC_MIN_DISTANCE = 0.10
#: The robust rule's threshold: median + this many MAD-σ of the air.
ROBUST_ZSCORE = 3.0


def direction_word(metric: str) -> str:
    """``"higher is better"`` or ``"lower is better"`` for one of :data:`IQM_NAMES`."""
    return "higher is better" if DIRECTIONS[metric] > 0 else "lower is better"


@dataclass
class Masks:
    """Masks derived from one volume (boolean arrays of the volume's shape)."""

    head: np.ndarray
    air: np.ndarray
    tissue_a: np.ndarray
    tissue_b: np.ndarray
    reason: str = ""


@dataclass
class IQMResult:
    """The four metrics, which air region QI1 used, and why any of them is NaN."""

    cnr: float = float("nan")
    cjv: float = float("nan")
    efc: float = float("nan")
    qi1: float = float("nan")
    qi1_air: str = ""
    reasons: Dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict:
        texts = set(self.reasons.values())
        if len(self.reasons) == len(IQM_NAMES) and len(texts) == 1:
            reason = texts.pop()  # one cause for all four: say it once
        else:
            reason = "; ".join(f"{k}: {v}" for k, v in self.reasons.items())
        return {**{m: getattr(self, m) for m in IQM_NAMES}, "qi1_air": self.qi1_air, "reason": reason}


def segment(volume: np.ndarray) -> Masks:
    """Head, air and two tissue masks of a volume, by intensity alone.

    Head: Otsu threshold, largest connected component, holes filled, a small
    closing.  Air: everything outside the head dilated by 3 voxels.  Tissues:
    three-class multi-Otsu inside the eroded head; the two most populous
    classes.
    """
    from scipy import ndimage
    from skimage.filters import threshold_multiotsu, threshold_otsu

    v = np.asarray(volume, dtype=np.float32)
    empty = np.zeros(v.shape, bool)
    if not np.isfinite(v).all() or v.max() <= v.min():
        return Masks(empty, empty, empty, empty, "the volume is constant or not finite")
    t = threshold_otsu(v)
    fg = v > t
    labels, n = ndimage.label(fg)
    if n == 0:
        return Masks(empty, empty, empty, empty, "no head found above the Otsu threshold")
    sizes = ndimage.sum(fg, labels, index=np.arange(1, n + 1))
    head = labels == (int(np.argmax(sizes)) + 1)
    head = ndimage.binary_closing(head, iterations=2)
    head = ndimage.binary_fill_holes(head)
    # A head is mostly above the threshold; a noise field that percolates is not.
    if head.any() and float(fg[head].mean()) < 0.7:
        return Masks(empty, empty, empty, empty, "no head stands out from the background (pure noise?)")
    air = ~ndimage.binary_dilation(head, iterations=3)
    inner = ndimage.binary_erosion(head, iterations=2)
    if inner.sum() < 3 * MIN_VOXELS:
        return Masks(head, air, empty, empty, "too few head voxels for a tissue model")
    values = v[inner]
    try:
        t1, t2 = threshold_multiotsu(values, classes=3)
    except ValueError:
        return Masks(head, air, empty, empty, "intensities inside the head do not separate into tissue classes")
    classes = [inner & (v <= t1), inner & (v > t1) & (v <= t2), inner & (v > t2)]
    order = np.argsort([c.sum() for c in classes])[::-1]
    return Masks(head, air, classes[order[0]], classes[order[1]])


def superior_axis(direction: Optional[Sequence[float]]) -> Optional[Tuple[int, int]]:
    """The array axis (``(k, j, i)`` order) that points towards the top of the head, and its sign.

    ``direction`` is a SimpleITK direction (LPS, row-major 3 × 3, columns for
    the i, j, k index axes), as :class:`~SSIMQualityLib.volumes.Volume` keeps
    it.  None when no axis lies within 45° of superior (or no direction is
    known): the volume's orientation cannot place the head's top.

    Examples
    --------
    >>> superior_axis((-1, 0, 0, 0, -1, 0, 0, 0, 1))   # a RAS NIfTI read by SimpleITK: k goes up
    (0, 1)
    >>> superior_axis((1, 0, 0, 0, 0, 1, 0, -1, 0))    # coronal: j goes down
    (1, -1)
    >>> superior_axis(None) is None
    True
    """
    if direction is None or len(direction) != 9:
        return None
    s = [float(direction[6 + (2 - a)]) for a in range(3)]  # superior (LPS +z) component of array axis a
    axis = int(np.argmax(np.abs(s)))
    if abs(s[axis]) < math.cos(math.radians(45)):
        return None
    return axis, (1 if s[axis] > 0 else -1)


def air_region(masks: Masks, superior: Optional[Tuple[int, int]] = None) -> Tuple[np.ndarray, str]:
    """The air QI1 and CNR's σ_air look at: MRIQC's "hat" where orientation allows, else all background.

    MRIQC's hat is the air above the plane through the nasion and the inion,
    found by registering the head to MNI space.  Without registration we take
    the air above the head's centroid along the superior axis: on a whole-head
    field of view that plane lies close to (a little above) the nasion–inion
    plane, and like the hat it leaves out the neck, the face and the shoulders,
    where flow and swallowing put bright signal that is not head motion.
    When the superior axis is unknown, or the hat holds fewer than
    :data:`MIN_VOXELS` voxels, all background is used.

    Returns the mask and :data:`AIR_HAT` or :data:`AIR_ALL`.
    """
    if superior is None or not masks.head.any():
        return masks.air, AIR_ALL
    axis, sign = superior
    coords = np.nonzero(masks.head)[axis]
    centre = float(coords.mean())
    idx = np.arange(masks.air.shape[axis], dtype=float)
    above = (idx - centre) * sign > 0
    shape = [1, 1, 1]
    shape[axis] = -1
    hat = masks.air & above.reshape(shape)
    if hat.sum() < MIN_VOXELS:
        return masks.air, AIR_ALL
    return hat, AIR_HAT


def _robust(x: np.ndarray):
    """Median and MAD-based standard deviation (1.4826 · MAD, about the median)."""
    med = float(np.median(x))
    return med, float(1.4826 * np.median(np.abs(x - med)))


def artefact_mask(volume: np.ndarray, air: np.ndarray, head: np.ndarray, *, detection: str = "mriqc") -> np.ndarray:
    """Air voxels that carry artefact (ghosts, streaks) rather than noise, after Mortamet et al. (2009).

    ``detection="mriqc"`` (default) is MRIQC's ``artifact_mask``: an air voxel is
    a candidate when its value over the MAD-σ of the non-zero air values
    exceeds :data:`MRIQC_ZSCORE` (10; the value itself, not its distance from
    the median), candidates nearer the head than :data:`MRIQC_MIN_DISTANCE`
    (0.10) of the largest head distance in the air are dropped, and a binary
    opening (6-connected) keeps structures, not single bright voxels.

    The distance rule is applied as MRIQC intends it, not as 24.0.2 runs it:
    there the normalised distance map is set to zero over the whole air region
    before the ``distance < 0.10`` test, which then removes every candidate,
    so shipped MRIQC reports QI1 ≈ 0 (nipreps/mriqc#1182).

    ``detection="robust"`` is this project's earlier rule: brighter than the
    air's median + :data:`ROBUST_ZSCORE` (3) MAD-σ, then the same opening, no
    distance rule.  It flags fainter ghosts, and noise in heavy-tailed air.
    """
    from scipy import ndimage

    if detection not in QI1_DETECTIONS:
        raise ValueError(f"detection must be one of {QI1_DETECTIONS}, got {detection!r}")
    v = np.asarray(volume, dtype=np.float64)
    values = v[air]
    if detection == "mriqc":
        nonzero = values[values > 0]
        flagged = np.zeros(v.shape, bool)
        if nonzero.size < 10:
            return flagged
        _, sigma = _robust(nonzero)
        flagged[air] = values > MRIQC_ZSCORE * max(sigma, 1e-12)
        distance = ndimage.distance_transform_edt(~head)
        top = float(distance[air].max()) if air.any() else 0.0
        if top > 0:
            flagged &= distance / top >= MRIQC_MIN_DISTANCE
    else:
        med, sigma = _robust(values)
        flagged = air & (v > med + ROBUST_ZSCORE * max(sigma, 1e-12))
    return ndimage.binary_opening(flagged, structure=ndimage.generate_binary_structure(3, 1)) & air


def cnr(volume: np.ndarray, masks: Masks, air: Optional[np.ndarray] = None) -> float:
    """Contrast-to-noise ratio as MRIQC's code computes it.  Higher is better.

    |median_a − median_b| / sqrt(σ_air² + σ_a² + σ_b²), σ being plain standard
    deviations.  MRIQC's formula text writes means, but ``StructuralQC``
    passes tissue medians; its σ_air is over the air with the artefact
    voxels removed, which is what ``air`` should be (default: ``masks.air``).
    The tissues a and b are the two tissue classes of :func:`segment`.
    """
    v = np.asarray(volume, dtype=np.float64)
    air = masks.air if air is None else air
    a, b, bg = v[masks.tissue_a], v[masks.tissue_b], v[air]
    return float(abs(np.median(a) - np.median(b)) / math.sqrt(bg.std() ** 2 + a.std() ** 2 + b.std() ** 2))


def cjv(volume: np.ndarray, masks: Masks) -> float:
    """Coefficient of joint variation (Ganzetti et al., 2016): (σ_a + σ_b) / |median_a − median_b|.

    As in MRIQC, with medians and MAD-based standard deviations.  Lower is better.
    """
    v = np.asarray(volume, dtype=np.float64)
    ma, sa = _robust(v[masks.tissue_a])
    mb, sb = _robust(v[masks.tissue_b])
    return float((sa + sb) / abs(ma - mb))


def efc(volume: np.ndarray) -> float:
    """Entropy focus criterion (Atkinson et al., 1997), normalised by its maximum for N voxels.

    Shannon entropy of voxel intensities relative to the total image energy;
    motion spreads energy (ghosts, blur) and raises it.  Lower is better.

    Examples
    --------
    >>> round(efc(np.ones((4, 4, 4))), 6)    # energy spread evenly: the maximum
    1.0
    """
    x = np.abs(np.asarray(volume, dtype=np.float64)).ravel()
    n = x.size
    b_max = math.sqrt(float(np.sum(x ** 2)))
    e_max = n * (1.0 / math.sqrt(n)) * math.log(1.0 / math.sqrt(n))
    r = x / b_max
    e = float(np.sum(r * np.log(r + 1e-16)))
    return e / e_max


def qi1(artefacts: np.ndarray, air: np.ndarray) -> float:
    """Mortamet et al. (2009) QI1: the share of the air region's voxels flagged as artefact.  0 is best.

    MRIQC's ``art_qi1`` divides the artefact count by (air without artefacts +
    artefacts), which is the air region's size when ``artefacts ⊆ air``.
    """
    return float((artefacts & air).sum() / air.sum())


def compute_iqms(volume: np.ndarray, *, direction: Optional[Sequence[float]] = None,
                 qi1_detection: str = "mriqc", masks: Optional[Masks] = None) -> IQMResult:
    """All four metrics of a volume, NaN with a reason wherever one cannot be computed.

    ``direction`` (the volume's SimpleITK direction) lets QI1 and CNR's σ_air
    use the air above the head (:func:`air_region`); without it they use all
    background.  ``qi1_detection`` picks :func:`artefact_mask`'s rule.
    ``masks``: :func:`segment`'s result for this volume, when the caller has it.
    """
    from .errors import BadParameterError
    from .orientation import direction_matrix

    # Options first: a bad detection failed after seconds of segmentation, a direction of the wrong length
    # silently meant "all background".
    if qi1_detection not in QI1_DETECTIONS:
        raise BadParameterError(f"qi1_detection must be one of {', '.join(QI1_DETECTIONS)}, got {qi1_detection!r}")
    if direction is not None:
        direction_matrix(direction)
    v = np.asarray(volume, dtype=np.float64)
    res = IQMResult()
    if v.ndim != 3:
        res.reasons = {m: f"expected a 3-D volume, got {v.ndim}-D" for m in IQM_NAMES}
        return res
    if not np.isfinite(v).all() or v.max() <= v.min():
        res.reasons = {m: "the volume is constant or not finite" for m in IQM_NAMES}
        return res
    masks = segment(v) if masks is None else masks
    head_share = masks.head.mean() if masks.head.size else 0.0
    if not masks.head.any():
        res.reasons = {m: masks.reason for m in IQM_NAMES}
        return res
    res.efc = efc(v)
    if masks.reason:
        for m in ("cnr", "cjv"):
            res.reasons[m] = masks.reason
    if head_share > 0.95 or head_share < 0.005:
        res.reasons.update({m: f"no head / background separation (head is {head_share:.0%} of the volume: pure noise or "
                               f"no air around the head)" for m in ("cnr", "cjv", "qi1")})
        return res
    air, res.qi1_air = air_region(masks, superior_axis(direction))
    n_air = int(air.sum())
    air_values = v[air]
    clean_air = air
    if n_air < MIN_VOXELS:
        res.reasons["qi1"] = res.reasons["cnr"] = f"only {n_air} background voxels"
    elif np.count_nonzero(air_values) < 0.05 * n_air:
        # Skull-stripped or defaced images have a zeroed background: nothing to measure (MRIQC returns -1).
        res.reasons["qi1"] = "background is zeroed (skull-stripped or defaced image)"
    else:
        artefacts = artefact_mask(v, air, masks.head, detection=qi1_detection)
        res.qi1 = qi1(artefacts, air)
        clean_air = air & ~artefacts
    for m in ("cnr", "cjv"):
        if m in res.reasons:
            continue
        if masks.tissue_a.sum() < MIN_VOXELS or masks.tissue_b.sum() < MIN_VOXELS:
            res.reasons[m] = "too few tissue voxels"
            continue
        value = cnr(v, masks, clean_air) if m == "cnr" else cjv(v, masks)
        if not np.isfinite(value):
            res.reasons[m] = "tissue classes have the same intensity"
        else:
            setattr(res, m, value)
    if "qi1" in res.reasons:
        res.qi1_air = ""
    return res
