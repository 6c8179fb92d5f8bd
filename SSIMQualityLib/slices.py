"""Slices: the orientation rule, a seeded sampler, normalisation, sizing.

Array convention: volumes are numpy arrays in (k, j, i) order — the order of
SimpleITK and of Slicer's ``arrayFromVolume`` — with ``spacing`` given per
array axis.
"""
from __future__ import annotations

import contextlib

import functools
import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from .vocabulary import FEW_VALUES, MIN_NEIGHBOUR_CORRELATION

#: Size of the network input.
INPUT_SIZE = 256
#: Upper percentile used by the normalisation.
UPPER_PERCENTILE = 99.5
#: Spacings within this relative tolerance count as isotropic.
ISOTROPY_TOLERANCE = 0.1

ArrayOrTensor = Union[np.ndarray, torch.Tensor]


def is_isotropic(spacing: Sequence[float], tolerance: float = ISOTROPY_TOLERANCE) -> bool:
    """True when the largest spacing is within ``tolerance`` of the smallest."""
    sp = np.asarray(spacing, dtype=float)
    return bool(sp.max() <= sp.min() * (1.0 + tolerance))


def acquisition_axis(spacing: Sequence[float], tolerance: float = ISOTROPY_TOLERANCE) -> int:
    """Array axis along which the volume was acquired: the thickest spacing.

    For an isotropic volume there is no thickest axis; axis 0 (the file's
    slice-stacking direction, *k* in Slicer) is returned.

    Examples
    --------
    >>> acquisition_axis([3.0, 1.0, 1.0])
    0
    >>> acquisition_axis([1.0, 1.0, 4.0])
    2
    """
    sp = np.asarray(spacing, dtype=float)
    if is_isotropic(sp, tolerance):
        return 0
    return int(np.argmax(sp))


def slicing_axis(spacing: Sequence[float], axis: Optional[int] = None, name: Optional[str] = None, *,
                 shape: Optional[Sequence[int]] = None) -> int:
    """The axis to slice along: ``axis`` when given (0, 1 or 2), else the acquisition axis.

    With the volume's ``shape``, every slice must be at least ``MIN_SIZE`` voxels on each side: a default axis
    whose slices would be thinner (a single slice or a thin slab stored across another axis) gives way to the
    volume's thinnest axis, and a given one is refused.

    Raises :class:`~SSIMQualityLib.errors.SSIMQualityError` naming ``name``
    (the volume) for any other value.

    Examples
    --------
    >>> slicing_axis([1.0, 1.0, 4.0]), slicing_axis([1.0, 1.0, 4.0], 1)
    (2, 1)
    >>> slicing_axis([1.0, 1.0, 1.0], shape=(80, 193, 1))   # one sagittal slice: sliced across its thin axis
    2
    """
    from .errors import SSIMQualityError
    from .vocabulary import MIN_SIZE

    if axis is not None and (isinstance(axis, (bool, np.bool_)) or axis not in (0, 1, 2)):  # True == 1
        raise SSIMQualityError(f"axis must be 0, 1, 2 or None (acquisition axis), got {axis!r}", name)
    chosen = acquisition_axis(spacing) if axis is None else int(axis)
    if shape is None or len(shape) != 3:
        return chosen

    def plane(a: int) -> Tuple[int, ...]:
        return tuple(int(n) for k, n in enumerate(shape) if k != a)

    if min(plane(chosen)) >= MIN_SIZE:
        return chosen
    thinnest = int(np.argmin(shape))
    if axis is None and min(plane(thinnest)) >= MIN_SIZE:
        return thinnest
    fix = (f"slice along axis {thinnest} (--axis {thinnest}, or leave the axis out)" if min(plane(thinnest)) >= MIN_SIZE
           else "use the full-resolution image")
    raise SSIMQualityError(f"slices along axis {chosen} are {plane(chosen)[0]} x {plane(chosen)[1]} voxels, fewer than "
                           f"{MIN_SIZE} x {MIN_SIZE}", name, fix)


def candidate_axes(spacing: Sequence[float], tolerance: float = ISOTROPY_TOLERANCE) -> Tuple[int, ...]:
    """Axes the orientation rule may slice along: all three if isotropic, else the thickest."""
    if is_isotropic(spacing, tolerance):
        return (0, 1, 2)
    return (acquisition_axis(spacing, tolerance),)


def take_slice(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    """The 2-D slice ``index`` along ``axis`` (a view, no copy)."""
    return np.take(volume, index, axis=axis)


def foreground_fractions(stack: torch.Tensor, threshold: float = 0.1,
                         reference: Optional[Tuple[float, float]] = None) -> torch.Tensor:
    """Per slice of a (n, H, W) stack, on any device: the share of pixels above ``threshold`` of the way from
    the minimum to the robust maximum (p99.5), or through ``reference`` when given (0 for an empty range).

    Without ``reference`` each slice's own range is used, which calls an empty
    slice of tiny values (air above the head) "all foreground"; the whole
    volume's (minimum, p99.5) keeps those out.
    """
    flat = stack.reshape(stack.shape[0], -1).float()
    if reference is None:
        lo = flat.amin(dim=1, keepdim=True)
        hi = upper_quantile(flat, UPPER_PERCENTILE / 100.0).float()
    else:
        lo = torch.full((len(flat), 1), float(reference[0]), device=flat.device)
        hi = torch.full((len(flat), 1), float(reference[1]), device=flat.device)
    share = (flat > lo + threshold * (hi - lo)).float().mean(dim=1)
    return torch.where((hi > lo).flatten(), share, torch.zeros_like(share))


def foreground_fraction(image: ArrayOrTensor, threshold: float = 0.1,
                        reference: Optional[Tuple[float, float]] = None) -> float:
    """:func:`foreground_fractions` of one (H, W) slice.

    Examples
    --------
    >>> img = np.zeros((10, 10)); img[:5] = 100.0
    >>> foreground_fraction(img), foreground_fraction(img * 0.01, reference=(0.0, 100.0))
    (0.5, 0.0)
    """
    t = torch.as_tensor(np.asarray(image, dtype=np.float32))
    return float(foreground_fractions(t[None], threshold, reference)[0])


def volume_range(volume: np.ndarray) -> Tuple[float, float]:
    """Robust (low, high) = (p0.5, p99.5) of a volume, from every second voxel along each axis (cheap on large
    volumes).  Robust at the low end too: a few negative outliers (resampled or filtered data) would otherwise
    drag the foreground threshold below the air."""
    v = np.asarray(volume)
    sub = v[tuple(slice(None, None, 2) if n > 8 else slice(None) for n in v.shape)]
    lo, hi = np.percentile(sub, [100.0 - UPPER_PERCENTILE, UPPER_PERCENTILE])
    return float(lo), float(hi)


@dataclass
class SlicePick:
    """One slice chosen by :class:`SliceSampler`."""

    axis: int
    index: int


def pick_slices(axes: Sequence[int], positions: dict, n: int, rng: np.random.Generator) -> List[SlicePick]:
    """``n`` slice picks: one of ``axes`` uniformly, then one of ``positions[axis]`` uniformly, all from one
    call of ``rng`` (the sample factory draws a batch's slices at once; :meth:`SliceSampler.sample` draws one
    by the same rule).

    >>> picks = pick_slices([0, 2], {0: np.arange(3, 6), 2: np.arange(10, 12)}, 4, np.random.default_rng(0))
    >>> all(p.axis in (0, 2) and p.index in ({0: range(3, 6), 2: range(10, 12)}[p.axis]) for p in picks)
    True
    """
    u = rng.random((int(n), 2))
    out = []
    for a, v in zip(np.minimum((u[:, 0] * len(axes)).astype(int), len(axes) - 1), u[:, 1]):
        axis = int(axes[a])
        pos = positions[axis]
        out.append(SlicePick(axis, int(pos[min(int(v * len(pos)), len(pos) - 1)])))
    return out


class SliceSampler:
    """Draws slices by the orientation rule of the method (DESIGN §1 step 1).

    Isotropic volume: a random axis among the three, then a random position.
    Anisotropic volume: only the acquisition (thickest-spacing) axis.
    Positions are restricted to slices that hold at least
    ``min_foreground`` of head (so that empty air slices, whose label is
    trivially 1, do not waste training samples).

    Parameters
    ----------
    volume : ndarray, 3-D
        The volume, (k, j, i) order.
    spacing : sequence of 3 floats
        Spacing per array axis.
    seed : int or numpy Generator, optional
        Seed for reproducible draws.
    min_foreground : float
        Least share of foreground pixels for a slice to be drawn (0 to disable).

    Examples
    --------
    >>> vol = np.random.rand(20, 30, 40)
    >>> pick = SliceSampler(vol, (1, 1, 1), seed=0).sample()
    >>> pick.axis in (0, 1, 2)
    True
    """

    def __init__(self, volume: np.ndarray, spacing: Sequence[float], seed=None, min_foreground: float = 0.05):
        if volume.ndim != 3:
            raise ValueError(f"expected a 3-D volume, got shape {volume.shape}")
        self.volume = volume
        self.spacing = tuple(float(s) for s in spacing)
        self.axes = candidate_axes(self.spacing)
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        self._valid = {}
        for axis in self.axes:
            self._valid[axis] = self._valid_positions(axis, min_foreground)

    def _valid_positions(self, axis: int, min_foreground: float) -> np.ndarray:
        n = self.volume.shape[axis]
        if min_foreground <= 0:
            return np.arange(n)
        v = self.volume
        lo = float(v.min())
        hi = float(np.percentile(v, UPPER_PERCENTILE))
        if hi <= lo:
            return np.arange(n)
        other = tuple(a for a in range(3) if a != axis)
        frac = np.mean(v > lo + 0.1 * (hi - lo), axis=other)
        ok = np.flatnonzero(frac >= min_foreground)
        return ok if ok.size else np.arange(n)

    def positions(self, axis: int) -> np.ndarray:
        """The slice positions along ``axis`` that may be drawn (enough head in them)."""
        return self._valid[axis]

    def sample(self) -> SlicePick:
        """Draw one (axis, index), by :func:`pick_slices`' rule, one call of :attr:`rng` per choice (the
        reference's draws: drawing it as a batch of one would change every reference sample)."""
        axis = int(self.axes[self.rng.integers(len(self.axes))])
        positions = self._valid[axis]
        return SlicePick(axis, int(positions[self.rng.integers(len(positions))]))

    def sample_slice(self) -> Tuple[np.ndarray, SlicePick]:
        """Draw one slice; returns the 2-D array (float32 copy) and where it came from."""
        pick = self.sample()
        return np.ascontiguousarray(take_slice(self.volume, pick.axis, pick.index), dtype=np.float32), pick


def upper_quantile(flat: torch.Tensor, q: float) -> torch.Tensor:
    """The ``q`` quantile along the last axis, interpolated linearly as ``numpy.percentile`` and
    ``torch.quantile`` do (float64, keepdim).

    For a high quantile only the top values matter: ``torch.topk`` of the last
    ``n − ⌊q (n − 1)⌋`` values is exact and about five times faster than the
    full sort ``torch.quantile`` makes (0.3 % of a 256² slice for p99.5).

    Examples
    --------
    >>> x = torch.arange(101.0)[None]
    >>> float(upper_quantile(x, 0.995)), float(torch.quantile(x.double(), 0.995))
    (99.5, 99.5)
    """
    n = flat.shape[-1]
    if q < 0.5 or n < 2:
        return torch.quantile(flat.double(), q, dim=-1, keepdim=True)
    pos = q * (n - 1)
    below = int(pos)
    top = torch.topk(flat, n - below, dim=-1, sorted=True).values.double()  # descending
    a = top[..., -1:]
    b = top[..., -2:-1] if n - below >= 2 else a
    return a + (b - a) * (pos - below)


def magnitude(image: np.ndarray) -> np.ndarray:
    """The slice (or volume) as a magnitude image: values below zero set to zero (the same dtype back; a copy
    only where something changes).

    A scanner stores magnitudes, and both motion models return one; negative voxels come from later
    processing (interpolation overshoot of resampled volumes, e.g. MNI-space templates).  Before a real slice
    is moved, it passes through here: otherwise the smallest motion lifts its minimum to about zero, the
    normalisation (minimum → 0) shifts the whole background, and the label measures that shift, not the
    artefact (an MNI-space T1 with a quarter of its voxels slightly negative: SSIM 0.16 for a barely visible
    ghost).

    Examples
    --------
    >>> magnitude(np.array([[-2.0, 0.5], [3.0, -0.1]])).tolist()
    [[0.0, 0.5], [3.0, 0.0]]
    """
    x = np.asarray(image)
    return np.maximum(x, 0).astype(x.dtype, copy=False) if (x < 0).any() else x


#: Share of voxels well below zero (:func:`signed_share`) above which a volume holds signed intensities
#: (z-scored, phase, inverted), not a magnitude image with some interpolation overshoot.
SIGNED_LIMIT = 0.01


def signed_share(volume: np.ndarray, *, depth: float = 0.05) -> float:
    """Share of the voxels more than ``depth`` of the volume's p99.5 (of the absolute values) below zero: about
    0 for a magnitude image, even one with interpolation overshoot; a large share for signed intensities
    (z-scored, phase, an inverted image), which :func:`magnitude` would damage and the motion models cannot
    move meaningfully.

    >>> signed_share(np.array([0.0, 1.0, 2.0, -0.01])), signed_share(np.array([-1.0, -0.8, 0.5, 2.0]))
    (0.0, 0.5)
    >>> signed_share(np.array([-3.0, -2.0, -1.0, -0.5]))   # all below zero: all of it
    1.0
    """
    v = np.asarray(volume)
    if v.size == 0 or v.min() >= 0:  # most volumes: no percentile over a float copy (and min() allocates nothing)
        return 0.0
    if v.ndim >= 3 and v.size > 2 ** 23:  # a large volume: every k-th slice (a view) tells the share as well
        v = v[::-(-v.shape[0] // 32)]
    # The scale from the absolute values: an all-negative volume has no positive p99.5 to measure against.
    top = float(np.percentile(np.abs(v), UPPER_PERCENTILE))
    return float(np.mean(v < -depth * top)) if top > 0 else 0.0


class ImageWarning(UserWarning):
    """A volume given to the Python functions that is not the magnitude image they expect (the commands and the
    Slicer module say it in their own line, naming the file or node, instead)."""


class SignedIntensityWarning(ImageWarning):
    """Signed intensities (z-scored, phase): :func:`signed_share` above :data:`SIGNED_LIMIT`."""


class FewValuesWarning(ImageWarning):
    """A handful of distinct values (a label map or a mask loaded as an image): :func:`distinct_values`."""


class NoiseLikeWarning(ImageWarning):
    """Neighbouring pixels hardly correlated (noise, a shuffled or scrambled volume):
    :func:`neighbour_correlation`."""


def warn_image(line: Optional[str], kind: type = SignedIntensityWarning) -> None:
    """Raise the warning ``line`` (``warning: <name>: ...``; None: nothing to say) as ``kind``, to the caller's
    caller."""
    import warnings

    if line:
        warnings.warn(line[len("warning: "):], kind, stacklevel=3)


@contextlib.contextmanager
def own_warning_lines():
    """A context in which no :class:`ImageWarning` is raised: for callers that say it in their own line,
    naming the file or node (the commands, the Slicer module)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ImageWarning)
        yield


def distinct_values(volume: np.ndarray, *, limit: int = FEW_VALUES) -> int:
    """How many distinct values ``volume`` holds when they are ``limit`` or fewer (a label map or mask loaded as
    an image, a thresholded scan); 0 for an image.  Cheap for images: a sample of the voxels tells first.

    >>> distinct_values(np.arange(1000.0).reshape(10, 10, 10)), distinct_values(np.eye(8)[None] * 3)
    (0, 2)
    """
    v = np.asarray(volume)
    if v.size == 0:
        return 0
    step = max(1, v.size // 200_000)
    if np.unique(v.flat[::step]).size > limit:  # .flat: no copy of a transposed or flipped view (ravel copies)
        return 0
    n = int(np.unique(v).size)
    return n if n <= limit else 0


def few_values_message(count: int, name: str) -> Optional[str]:
    """The warning line for a volume of ``count`` distinct values (:func:`distinct_values`; 0, an image: None).

    >>> few_values_message(2, "mask.nii")[:60]
    'warning: mask.nii: the voxels take only 2 distinct values (a'
    """
    if not count:
        return None
    return (f"warning: {name}: the voxels take only {count} distinct values (a label map or a mask?): its scores "
            f"mean nothing; score the image itself")


def neighbour_correlation(stack: torch.Tensor) -> torch.Tensor:
    """Per slice of a (n, H, W) stack, on any device: the correlation of each pixel with its right and lower
    neighbours (the mean of the two).  An image has structure at the scale of a pixel (0.5 – 1.0 for every input
    of the training recipe at its acquired matrix); white noise and a voxel-shuffled scan have none (about 0),
    and the network's score of them means nothing (:data:`~SSIMQualityLib.vocabulary.MIN_NEIGHBOUR_CORRELATION`).
    A constant slice gives 0.

    >>> ramp = torch.arange(64.0).reshape(1, 8, 8)
    >>> round(float(neighbour_correlation(ramp)[0]), 2)
    0.86
    >>> noise = torch.randn(2, 128, 128, generator=torch.Generator().manual_seed(0))
    >>> bool((neighbour_correlation(noise).abs() < 0.05).all())
    True
    """
    d = stack.float()
    d = d - d.mean(dim=(-2, -1), keepdim=True)
    # Scaled first: the products of values above ~1e19 overflow float32 (NaN, which no threshold flags).
    d = d / d.abs().amax(dim=(-2, -1), keepdim=True).clamp_min(torch.finfo(d.dtype).tiny)
    var = (d * d).mean(dim=(-2, -1))
    across = (d[..., :, 1:] * d[..., :, :-1]).mean(dim=(-2, -1))
    down = (d[..., 1:, :] * d[..., :-1, :]).mean(dim=(-2, -1))
    return torch.where(var > 0, (across + down) / (2 * var.clamp_min(torch.finfo(var.dtype).tiny)),
                       torch.zeros_like(var))


def noise_like_message(correlation: float, name: str) -> Optional[str]:
    """The warning line for a volume whose scored slices' median :func:`neighbour_correlation` is
    ``correlation``: None for an image (at least :data:`~SSIMQualityLib.vocabulary.MIN_NEIGHBOUR_CORRELATION`,
    or NaN: nothing scored).

    >>> noise_like_message(0.97, "t1.nii") is None
    True
    >>> noise_like_message(0.01, "noise.nii")[:63]
    'warning: noise.nii: neighbouring voxels are hardly correlated ('
    """
    if not correlation < MIN_NEIGHBOUR_CORRELATION:  # NaN: no slice scored, nothing to say
        return None
    return (f"warning: {name}: neighbouring voxels are hardly correlated ({correlation:.2f}; every image the "
            f"network learnt from is above 0.5): this is noise or a scrambled volume, not an image, and its scores "
            f"mean nothing; check that it is the image you meant to score")


def signed_message(share: float, name: str, consequence: str) -> Optional[str]:
    """The one warning line for a volume whose :func:`signed_share` is ``share``: None up to
    :data:`SIGNED_LIMIT` (a magnitude image), else ``warning: <name>: ...`` ending in ``consequence`` (what the
    command does with it and what to do instead).

    >>> signed_message(0.0, "t1.nii", "-") is None
    True
    >>> signed_message(0.4, "z.nii", "it is scored as it is")[:40]
    'warning: z.nii: 40% of the voxels are we'
    """
    if share <= SIGNED_LIMIT:
        return None
    return (f"warning: {name}: {share:.0%} of the voxels are well below zero (signed intensities: z-scored or "
            f"phase?); {consequence}")


def normalize(image: ArrayOrTensor, percentile: float = UPPER_PERCENTILE) -> ArrayOrTensor:
    """The project's slice normalisation: clip((x − min) / (p99.5 − min), 0, 1).

    Each 2-D slice is normalised on its own.  A constant slice maps to zeros.

    Parameters
    ----------
    image : ndarray or Tensor, shape (..., H, W)
        One slice or a batch of slices; leading dimensions are batch dims.
    percentile : float
        Upper percentile (99.5 in the project's convention).

    Returns
    -------
    Same type as ``image``, float, values in [0, 1].

    Examples
    --------
    >>> x = np.arange(400, dtype=float).reshape(20, 20)
    >>> y = normalize(x)
    >>> float(y.min()), float(y.max())
    (0.0, 1.0)
    """
    if isinstance(image, torch.Tensor):
        x = image if image.is_floating_point() else image.float()
        flat = x.reshape(*x.shape[:-2], -1)
        lo = flat.amin(dim=-1, keepdim=True)
        hi = upper_quantile(flat, percentile / 100.0).to(x.dtype)
        scale = hi - lo
        # One pass over the image: a multiply by the per-slice reciprocal (0 for a constant slice), not a
        # full-size division and select (measured 10x slower on a CPU, where the factory calls this per step).
        inv = torch.where(scale > 0, 1.0 / torch.where(scale > 0, scale, torch.ones_like(scale)),
                          torch.zeros_like(scale))
        return (flat - lo).mul_(inv).clamp_(0.0, 1.0).reshape(x.shape)
    x = np.asarray(image)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    flat = x.reshape(*x.shape[:-2], -1)
    lo = flat.min(axis=-1, keepdims=True)
    hi = np.percentile(flat, percentile, axis=-1, keepdims=True).astype(x.dtype)
    scale = hi - lo
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(scale > 0, (flat - lo) / np.where(scale > 0, scale, 1), 0)
    return np.clip(out, 0.0, 1.0).astype(x.dtype).reshape(x.shape)


def fit_to_size(image: ArrayOrTensor, size: int = INPUT_SIZE) -> ArrayOrTensor:
    """Resize a slice so that its longest side is ``size`` (aspect kept), then pad it to ``size`` × ``size``.

    Larger slices are shrunk by area averaging, smaller ones enlarged
    bilinearly, and the short side is zero-padded around the centre.  Small
    matrices are resized, not padded: a 64 × 64 EPI slice padded into 256²
    is a stamp whose anatomy and ghosts are four times smaller than anything
    the network learnt from (the paper: "resized or padded").  Zero is the
    background of a normalised slice, so padding adds air, not an edge.

    Parameters
    ----------
    image : ndarray or Tensor, shape (..., H, W)
    size : int

    Returns
    -------
    Same type as ``image``, shape (..., size, size).

    Examples
    --------
    >>> fit_to_size(np.ones((64, 32), np.float32)).shape
    (256, 256)
    """
    is_numpy = not isinstance(image, torch.Tensor)
    t = torch.as_tensor(np.asarray(image, dtype=np.float32)) if is_numpy else image
    if not t.is_floating_point():
        t = t.float()
    lead = t.shape[:-2]
    h, w = t.shape[-2:]
    t = t.reshape(-1, 1, h, w)
    if max(h, w) != size:
        scale = size / max(h, w)
        nh, nw = min(size, max(1, round(h * scale))), min(size, max(1, round(w * scale)))
        t = resample(t, (nh, nw))
        h, w = nh, nw
    top = (size - h) // 2
    left = (size - w) // 2
    t = F.pad(t, (left, size - w - left, top, size - h - top))
    t = t.reshape(*lead, size, size)
    return t.numpy() if is_numpy else t


def crop(image: torch.Tensor, box: Sequence[int]) -> torch.Tensor:
    """Rows ``box[0]:box[1]`` and columns ``box[2]:box[3]`` of a (..., H, W) image; parts outside it are zeros.

    Examples
    --------
    >>> crop(torch.ones(4, 4), (-1, 2, 2, 5))
    tensor([[0., 0., 0.],
            [1., 1., 0.],
            [1., 1., 0.]])
    """
    r0, r1, c0, c1 = (int(v) for v in box)
    h, w = image.shape[-2:]
    pad = max(0, -r0, -c0, r1 - h, c1 - w)
    view = F.pad(image, (pad, pad, pad, pad)) if pad else image
    return view[..., r0 + pad:r1 + pad, c0 + pad:c1 + pad]


def resample(image: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Resize (N, C, H, W) images to ``size``: area averaging when the longest side shrinks, bilinear otherwise.

    Examples
    --------
    >>> resample(torch.ones(1, 1, 64, 32), (128, 64)).shape
    torch.Size([1, 1, 128, 64])
    """
    if max(size) < max(image.shape[-2:]):
        return F.interpolate(image, size=size, mode="area")
    return F.interpolate(image, size=size, mode="bilinear", align_corners=False)


@functools.lru_cache(maxsize=256)
def _truncation_matrix(n_in: int, n_out: int, device: str) -> torch.Tensor:
    """(n_out, n_in) complex operator of :func:`fourier_resample` along one axis: the DFT of ``n_in`` samples,
    the frequencies both grids hold kept, the inverse DFT on ``n_out`` samples (the mean preserved)."""
    m = min(n_in, n_out)
    # Built where it is used: the crops' sizes vary per sample, so new shapes are common, and a build on the
    # host followed by a copy would cost what the FFT plan it replaces did.
    freqs = torch.arange(-(m // 2), m - m // 2, dtype=torch.float64, device=device)

    def waves(n: int) -> torch.Tensor:  # (m, n): exp(2 pi i f x / n)
        phase = 2 * math.pi * freqs[:, None] * torch.arange(n, dtype=torch.float64, device=device)[None] / n
        return torch.polar(torch.ones_like(phase), phase)

    return (waves(n_out).transpose(0, 1) @ waves(n_in).conj() / n_in).to(torch.complex64)


def fourier_resample(image: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Resize (..., H, W) images to ``size`` the way a scanner samples a field of view on a matrix: in k-space.

    The frequencies the target matrix holds are kept (the rest cut off, or zeros added when it is larger) and
    the magnitude is taken, so sharp edges ring (Gibbs ringing) as they do on real low-resolution scans,
    where image-space averaging (:func:`resample`) gives none.  On a CPU by the FFT (crop or zero-fill the
    centred spectrum); on a GPU by two matrix products per image, with no FFT plan to build for every new shape
    (:mod:`~SSIMQualityLib.dft`); the two agree to float32 round-off (tested).

    Examples
    --------
    >>> img = torch.zeros(1, 32, 32); img[0, 8:24, 8:24] = 1.0
    >>> out = fourier_resample(img, (16, 16))
    >>> out.shape, round(float(out[0, 4:12, 4:12].mean()), 1)   # the square, halved, still at 1
    (torch.Size([1, 16, 16]), 1.0)
    >>> bool(out.max() > 1.03), bool(out[0, 1, 8] > 0.02)   # the overshoot and the ripple of Gibbs ringing
    (True, True)
    """
    from . import dft

    h, w = image.shape[-2:]
    oh, ow = int(size[0]), int(size[1])
    if dft.on_matmul_device(image.device):  # a GPU: no FFT plan to build for every new shape
        dev = str(image.device)
        out = _truncation_matrix(h, oh, dev) @ image.to(torch.complex64) @ _truncation_matrix(w, ow, dev).T
        return out.abs().to(image.dtype)
    # A CPU: the FFT.  The crops' sizes vary per sample, so the matrices above would mostly be built anew (about
    # 10 ms each here), which slowed the CPU factory by a fifth.  The image is real, so half its spectrum is
    # the conjugate mirror of the other: one real FFT (rfft2, about half the work of a complex one; crops of
    # fields of view widened to a group's aspect reach 1,850 rows), the kept frequencies copied straight into
    # FFT order (no shifts): rows and columns 0 .. m - m//2 - 1 and -(m//2) .. -1 of each axis.
    mh, mw = min(h, oh), min(w, ow)
    a, b = mh - mh // 2, mh // 2
    a2, b2 = mw - mw // 2, mw // 2
    spec = torch.fft.rfft2(image.float())  # (..., h, w // 2 + 1): columns 0 .. w // 2
    kept = spec.new_zeros(*image.shape[:-2], oh, ow)
    kept[..., :a, :a2] = spec[..., :a, :a2]
    if b:
        kept[..., oh - b:, :a2] = spec[..., h - b:, :a2]
    if b2:  # column -f at row -r is the conjugate of column f at row r
        mirror = torch.remainder(-torch.arange(h, device=spec.device), h)
        neg = spec[..., 1:b2 + 1].flip(-1).index_select(-2, mirror).conj()
        kept[..., :a, ow - b2:] = neg[..., :a, :]
        if b:
            kept[..., oh - b:, ow - b2:] = neg[..., h - b:, :]
    out = torch.fft.ifft2(kept) * ((oh * ow) / (h * w))
    return out.abs().to(image.dtype)


def prepare_input(image: ArrayOrTensor, size: int = INPUT_SIZE) -> torch.Tensor:
    """Network input from raw slices: normalise each, then fit to ``size``²."""
    t = image if isinstance(image, torch.Tensor) else torch.as_tensor(np.asarray(image, dtype=np.float32))
    return fit_to_size(normalize(t.float()), size)


def head_boxes(images: torch.Tensor) -> Tuple[np.ndarray, np.ndarray]:
    """Per image of (B, H, W): the rows and columns that hold head (above 5 % of its maximum) as
    (first, last + 1, count) arrays ``rows`` and ``cols`` of shape (B, 3).  The one rule for the head's box on
    both training paths (a real scan's box in ``realeval`` is taken against its 99.5th percentile instead, as
    single bright voxels are common there and absent from synthetic slices).

    Examples
    --------
    >>> img = torch.zeros(1, 6, 8); img[0, 1:4, 2:7] = 1.0
    >>> rows, cols = head_boxes(img)
    >>> rows.tolist(), cols.tolist()
    ([[1, 4, 3]], [[2, 7, 5]])
    """
    head = images > 0.05 * images.amax(dim=(1, 2), keepdim=True)

    def span(any_along: torch.Tensor) -> np.ndarray:
        n = any_along.shape[1]
        count = any_along.sum(dim=1)
        first = any_along.to(torch.uint8).argmax(dim=1)
        last = n - any_along.flip(1).to(torch.uint8).argmax(dim=1)
        return torch.stack([first, last, count], dim=1).cpu().numpy()

    return span(head.any(dim=2)), span(head.any(dim=1))
