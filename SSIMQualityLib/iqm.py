"""No-reference image quality metrics of MRIQC, on any contrast: CNR, CJV, EFC, QI1.

MRIQC computes these on BIDS T1w / T2w volumes after a full FSL / ANTs /
AFNI segmentation, and returns −1 on skull-stripped or defaced inputs.
Here the masks come from a light, contrast-agnostic segmentation (Otsu head
mask, a three-class intensity model inside it), and a metric that cannot be
computed is NaN with the reason.

The two tissue classes are "the two largest of the three classes inside the
brain region" and the third (the smallest) is taken as CSF: CNR and CJV are
symmetric in WM and GM, so the metrics do not need to know which tissue is
brighter (WM is darker than GM on T2 and FLAIR).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict

import numpy as np

#: Least number of voxels a mask needs for its statistics to mean anything.
MIN_VOXELS = 100


@dataclass
class Masks:
    """Masks derived from one volume."""

    head: np.ndarray
    air: np.ndarray
    tissue_a: np.ndarray
    tissue_b: np.ndarray
    reason: str = ""


@dataclass
class IQMResult:
    """The four metrics, and why any of them is NaN."""

    cnr: float = float("nan")
    cjv: float = float("nan")
    efc: float = float("nan")
    qi1: float = float("nan")
    reasons: Dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict:
        texts = set(self.reasons.values())
        if len(self.reasons) == 4 and len(texts) == 1:
            reason = texts.pop()  # one cause for all four: say it once
        else:
            reason = "; ".join(f"{k}: {v}" for k, v in self.reasons.items())
        return {"cnr": self.cnr, "cjv": self.cjv, "efc": self.efc, "qi1": self.qi1, "reason": reason}


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
    reason = ""
    if inner.sum() < 3 * MIN_VOXELS:
        return Masks(head, air, empty, empty, "too few head voxels for a tissue model")
    values = v[inner]
    try:
        t1, t2 = threshold_multiotsu(values, classes=3)
    except ValueError:
        return Masks(head, air, empty, empty, "intensities inside the head do not separate into tissue classes")
    classes = [inner & (v <= t1), inner & (v > t1) & (v <= t2), inner & (v > t2)]
    order = np.argsort([c.sum() for c in classes])[::-1]
    return Masks(head, air, classes[order[0]], classes[order[1]], reason)


def _robust(x: np.ndarray):
    """Median and MAD-based standard deviation (1.4826 · MAD)."""
    med = float(np.median(x))
    return med, float(1.4826 * np.median(np.abs(x - med)))


def cnr(volume: np.ndarray, masks: Masks) -> float:
    """Contrast-to-noise ratio, as MRIQC: |µ_WM − µ_GM| / sqrt(σ_air² + σ_WM² + σ_GM²).

    Higher is better.  Here WM / GM are the two tissue classes of :func:`segment`.
    """
    v = np.asarray(volume, dtype=np.float64)
    a, b, air = v[masks.tissue_a], v[masks.tissue_b], v[masks.air]
    return float(abs(a.mean() - b.mean()) / math.sqrt(air.std() ** 2 + a.std() ** 2 + b.std() ** 2))


def cjv(volume: np.ndarray, masks: Masks) -> float:
    """Coefficient of joint variation (Ganzetti et al., 2016): (σ_WM + σ_GM) / |µ_WM − µ_GM|.

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
    """
    x = np.abs(np.asarray(volume, dtype=np.float64)).ravel()
    n = x.size
    b_max = math.sqrt(float(np.sum(x ** 2)))
    e_max = n * (1.0 / math.sqrt(n)) * math.log(1.0 / math.sqrt(n))
    r = x / b_max
    e = float(np.sum(r * np.log(r + 1e-16)))
    return e / e_max


def qi1(volume: np.ndarray, masks: Masks) -> float:
    """Mortamet et al. (2009) QI1: share of air voxels flagged as artefact.

    An air voxel is artefactual when it is brighter than the air's robust
    noise level (median + 3 · MAD-σ) and part of a structure that survives a
    morphological opening (isolated noise does not; ghosts do).  0 is best.
    """
    from scipy import ndimage

    v = np.asarray(volume, dtype=np.float64)
    air_values = v[masks.air]
    med, sd = _robust(air_values)
    bright = masks.air & (v > med + 3.0 * max(sd, 1e-12))
    artefact = ndimage.binary_opening(bright, structure=ndimage.generate_binary_structure(3, 1))
    return float(artefact.sum() / masks.air.sum())


def compute_iqms(volume: np.ndarray) -> IQMResult:
    """All four metrics of a volume, NaN with a reason wherever one cannot be computed."""
    v = np.asarray(volume, dtype=np.float64)
    res = IQMResult()
    if v.ndim != 3:
        res.reasons = {m: f"expected a 3-D volume, got {v.ndim}-D" for m in ("cnr", "cjv", "efc", "qi1")}
        return res
    if not np.isfinite(v).all() or v.max() <= v.min():
        res.reasons = {m: "the volume is constant or not finite" for m in ("cnr", "cjv", "efc", "qi1")}
        return res
    masks = segment(v)
    head_share = masks.head.mean() if masks.head.size else 0.0
    if not masks.head.any():
        res.reasons = {m: masks.reason for m in ("cnr", "cjv", "efc", "qi1")}
        return res
    res.efc = efc(v)
    if masks.reason:
        for m in ("cnr", "cjv"):
            res.reasons[m] = masks.reason
    if head_share > 0.95 or head_share < 0.005:
        res.reasons.update({m: f"no head / background separation (head is {head_share:.0%} of the volume: pure noise or "
                               f"no air around the head)" for m in ("cnr", "cjv", "qi1")})
        return res
    n_air = int(masks.air.sum())
    air_values = v[masks.air]
    if n_air < MIN_VOXELS:
        res.reasons["qi1"] = res.reasons["cnr"] = f"only {n_air} background voxels"
    elif np.count_nonzero(air_values) < 0.05 * n_air:
        # Skull-stripped or defaced images have a zeroed background: nothing to measure (MRIQC returns -1).
        res.reasons["qi1"] = "background is zeroed (skull-stripped or defaced image)"
    else:
        res.qi1 = qi1(v, masks)
    for m in ("cnr", "cjv"):
        if m in res.reasons:
            continue
        if masks.tissue_a.sum() < MIN_VOXELS or masks.tissue_b.sum() < MIN_VOXELS:
            res.reasons[m] = "too few tissue voxels"
            continue
        value = cnr(v, masks) if m == "cnr" else cjv(v, masks)
        if not np.isfinite(value):
            res.reasons[m] = "tissue classes have the same intensity"
        else:
            setattr(res, m, value)
    return res
