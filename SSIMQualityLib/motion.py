"""Motion corruption of 2-D slices: our k-space algorithm and TorchIO's model.

Each algorithm is a deterministic class that holds every parameter of one
corruption (angles, shifts, which k-space lines come from which moved copy)
and a ``Random…`` twin that only samples those parameters, scaled by a
*severity* in [0, 1]; severity 0 is the identity.

k-space algorithm (DESIGN §3)
    Fourier transform the slice; make ``M`` copies of it, each rotated and
    translated; replace a subset of phase-encoding lines of the original
    k-space by the same lines of the copies' k-spaces; inverse transform;
    magnitude.  Rotation uses ``grid_sample`` (bilinear), translation an exact
    k-space phase ramp.  Everything is batched on torch (CPU or CUDA).

TorchIO's model (Shaw et al. 2019)
    ``torchio.Motion`` splits k-space into segments along the image's *last*
    axis.  With its own 2-D layout (1 × H × W × 1) that axis has one voxel,
    so the result is a rigid move with no ghosting.  We lay a slice out as
    1 × 1 × H × W instead, and sample the parameters ourselves: rotation
    about the 1-voxel axis and translation within the plane only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

ArrayOrTensor = Union[np.ndarray, torch.Tensor]

from .dft import dft
from .errors import BadParameterError
from .seeds import Seed, as_rng
from .vocabulary import MOTION_MODELS

LINE_MODES = ("lines", "segments")
METHODS = MOTION_MODELS


def _as_batch(image: ArrayOrTensor) -> Tuple[torch.Tensor, bool, bool]:
    """(B, H, W) float tensor, plus flags to restore the caller's type and rank."""
    is_numpy = not isinstance(image, torch.Tensor)
    t = torch.as_tensor(np.asarray(image)) if is_numpy else image
    if not t.is_floating_point():
        t = t.float()
    single = t.ndim == 2
    if single:
        t = t[None]
    if t.ndim != 3:
        raise ValueError(f"expected a slice (H, W) or a batch (B, H, W), got shape {tuple(t.shape)}")
    return t, is_numpy, single


def _restore(t: torch.Tensor, is_numpy: bool, single: bool) -> ArrayOrTensor:
    if single:
        t = t[0]
    return t.cpu().numpy() if is_numpy else t


# ----------------------------------------------------------------------------
# k-space algorithm: functional core
# ----------------------------------------------------------------------------

def warp(images: torch.Tensor, degrees: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Rigidly move each image of (N, H, W): rotate by ``degrees`` (N,) about the centre, then
    translate by ``shifts`` (N, 2) = (rows, columns) pixels.  Bilinear, zero fill.

    The sampling grid is built directly (two multiply-adds per pixel):
    ``affine_grid`` costs more than the resampling itself on a CPU.
    """
    n, h, w = images.shape
    dev, dt = images.device, images.dtype
    rad = degrees.to(dev, dt) * (math.pi / 180.0)
    c, s = torch.cos(rad)[:, None, None], torch.sin(rad)[:, None, None]
    # Normalised pixel-centre coordinates (align_corners=False).
    ys = (2 * torch.arange(h, device=dev, dtype=dt) + 1) / h - 1
    xs = (2 * torch.arange(w, device=dev, dtype=dt) + 1) / w - 1
    # Undo the shift first (output pixel p samples the input at R^-1 (p - t)), in normalised units.
    ty = (2.0 * shifts[:, 0].to(dev, dt) / h)[:, None, None]
    tx = (2.0 * shifts[:, 1].to(dev, dt) / w)[:, None, None]
    yy = ys[None, :, None] - ty
    xx = xs[None, None, :] - tx
    # Rotation in pixel space, expressed in normalised coordinates of a non-square image; each coordinate
    # written straight into the grid (a stack of two full-size planes was a sixth of the motion's time on a CPU).
    grid = torch.empty(n, h, w, 2, dtype=dt, device=dev)
    torch.add(c * xx, yy * (-s * (h / w)), out=grid[..., 0])
    torch.add(s * (w / h) * xx, c * yy, out=grid[..., 1])
    return F.grid_sample(images[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[:, 0]


def rotate(images: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate each image of (N, H, W) about its centre by ``degrees`` (N,), bilinear, zero fill."""
    return warp(images, degrees, torch.zeros(images.shape[0], 2, dtype=images.dtype, device=images.device))


def kspace_motion(images: torch.Tensor, owner: torch.Tensor, degrees: torch.Tensor, shifts: torch.Tensor,
                  sources: torch.Tensor, real_part: bool = False) -> torch.Tensor:
    """k-space line replacement along the *last* axis, for a batch.

    Phase-encoding lines are the columns of k-space: line ``l`` holds the
    frequency ``l`` along the last axis.  Replacing whole lines only mixes
    spectra along that axis, so 1-D transforms along it are enough (the
    transform along the other axis would cancel).

    Parameters
    ----------
    images : Tensor (B, R, L), float
    owner : Tensor (C,), long
        For each moved copy, the image it is a copy of.
    degrees, shifts : Tensor (C,), (C, 2)
        Rigid motion of each copy (degrees; rows, columns in pixels).
    sources : Tensor (B, L), long
        For each line in acquisition order (centred: most negative frequency
        first) the copy it comes from, as an index into the C copies, or −1
        for the image's own line.

    real_part : bool
        Return the real part of the reconstruction instead of its magnitude
        (what ``torchio.Motion`` returns; only for checks against it).

    Returns
    -------
    Tensor (B, R, L): magnitude of the corrupted images.
    """
    b, r, l = images.shape
    dev = images.device
    work = images if images.dtype in (torch.float32, torch.float64) else images.float()
    # One buffer for the images' spectra and the copies' (B + C, R, L): no concatenation pass.
    k_all = torch.empty((b + owner.numel(), r, l), dtype=torch.complex64 if work.dtype == torch.float32
                        else torch.complex128, device=dev)
    dft(work, dim=-1, out=k_all[:b])
    if owner.numel():
        dft(warp(work[owner.to(dev)], degrees, shifts), dim=-1, out=k_all[b:])
    # Acquisition order is centred; FFT order starts at frequency 0.
    src = torch.fft.ifftshift(sources.to(dev).long(), dim=-1)
    rows = torch.where(src < 0, torch.arange(b, device=dev)[:, None], src + b)  # (B, L) index into k_all
    cols = torch.arange(l, device=dev)[None, :].expand(b, l)
    k_out = k_all[rows, :, cols]  # (B, L, R)
    rec = dft(k_out.transpose(1, 2), dim=-1, inverse=True)
    out = (rec.real if real_part else rec.abs()).to(images.dtype)
    # Untouched slices stay bit-identical (no FFT round-off).  Found where the sources are (the factory's are
    # the host's) and used as indices, not a mask: a mask on a GPU makes the host wait for its size.
    untouched = torch.nonzero((sources < 0).all(dim=1)).view(-1)
    if untouched.numel():
        untouched = untouched.to(dev)
        out[untouched] = images[untouched]
    return out


# ----------------------------------------------------------------------------
# k-space algorithm: deterministic and random classes
# ----------------------------------------------------------------------------

@dataclass
class KSpaceMotion:
    """k-space line replacement with fixed parameters.

    Parameters
    ----------
    degrees : sequence of float, length M
        Rotation of each moved copy (degrees).
    shifts : sequence of (float, float), length M
        Translation (rows, columns) of each copy, in pixels.
    sources : sequence of int
        Per phase-encoding line, in acquisition order (centred k-space), the
        copy it comes from (0 … M−1), or −1 to keep the original.  Its length
        is the number of phase-encoding lines (H for ``pe_axis`` 0, W for 1).
    pe_axis : {0, 1}
        Phase-encoding direction: 0 lines are rows, 1 lines are columns.

    Examples
    --------
    >>> img = np.random.rand(32, 32).astype(np.float32)
    >>> t = KSpaceMotion(degrees=[3.0], shifts=[(0.0, 2.0)], sources=[-1] * 16 + [0] * 16, pe_axis=0)
    >>> t(img).shape
    (32, 32)
    """

    degrees: Sequence[float]
    shifts: Sequence[Tuple[float, float]]
    sources: Sequence[int]
    pe_axis: int = 0

    def __post_init__(self):
        self.degrees = [float(d) for d in self.degrees]
        self.shifts = [(float(a), float(b)) for a, b in self.shifts]
        # One conversion for the whole line list (a per-line int() was a tenth of a sample's host time).
        self.sources = np.asarray(self.sources, dtype=np.int64).reshape(-1).tolist()
        if len(self.degrees) != len(self.shifts):
            raise BadParameterError("degrees and shifts must have one entry per moved copy")
        if self.pe_axis not in (0, 1):
            raise BadParameterError(f"pe_axis must be 0 or 1, got {self.pe_axis}")
        if self.sources and (min(self.sources) < -1 or max(self.sources) >= len(self.degrees)):
            raise BadParameterError(f"sources must lie in -1 .. {len(self.degrees) - 1}")

    @property
    def fraction_replaced(self) -> float:
        """Share of phase-encoding lines taken from a moved copy."""
        return float(np.mean(np.asarray(self.sources) >= 0)) if self.sources else 0.0

    def __call__(self, image: ArrayOrTensor) -> ArrayOrTensor:
        t, is_numpy, single = _as_batch(image)
        out = apply_kspace_batch(t, [self] * t.shape[0])
        return _restore(out, is_numpy, single)


def apply_kspace_batch(images: torch.Tensor, transforms: Sequence[KSpaceMotion], real_part: bool = False) -> torch.Tensor:
    """Apply one :class:`KSpaceMotion` per image of a (B, H, W) batch (see :func:`apply_motion_draws`)."""
    b, h, w = images.shape
    if len(transforms) != b:
        raise BadParameterError(f"need one transform per image: {len(transforms)} for {b}")
    moves = max([len(t.degrees) for t in transforms] + [1])
    src = np.full((b, max(h, w)), -1, dtype=np.int64)
    deg = np.zeros((b, moves))
    sh = np.zeros((b, moves, 2))
    pe = np.array([t.pe_axis for t in transforms], dtype=np.int64)
    for i, t in enumerate(transforms):
        if t.sources:
            n = h if t.pe_axis == 0 else w
            if len(t.sources) != n:
                raise BadParameterError(f"transform {i} has {len(t.sources)} line sources for {n} phase-encoding lines")
            src[i, :n] = t.sources
        if t.degrees:
            deg[i, :len(t.degrees)] = t.degrees
            sh[i, :len(t.shifts)] = t.shifts
    return _apply_lines(images, pe, src, deg, sh, real_part)


def _apply_lines(images: torch.Tensor, pe_axis: np.ndarray, src: np.ndarray, deg: np.ndarray, sh: np.ndarray,
                 real_part: bool = False) -> torch.Tensor:
    """The k-space algorithm on a (B, H, W) batch from arrays: ``pe_axis`` (B,); ``src`` (B, ≥ max(H, W)) each
    line's copy or −1 (a row reads its first H or W entries); ``deg`` (B, M) and ``sh`` (B, M, 2) the copies'
    moves.

    Slices whose phase-encoding lines are rows are transposed so that the
    lines always lie along the last, contiguous axis (a transpose mirrors
    the image, so their rotations change sign and their shifts swap).
    Only copies that give at least one line are computed.
    """
    b, h, w = images.shape
    moves = deg.shape[1]
    out = torch.empty_like(images) if images.is_floating_point() else torch.empty(images.shape)
    for pe in (0, 1):
        members = np.flatnonzero(pe_axis == pe)
        if not members.size:
            continue
        n = h if pe == 0 else w
        batch = images[torch.from_numpy(members)] if members.size < b else images
        if pe == 0:
            batch = batch.transpose(1, 2)
        # Vectorised bookkeeping (a per-slice loop of small tensor calls cost more than the FFTs): one moved
        # copy per (slice, move) that gives at least one line.
        lines = src[members, :n]
        used = (lines[:, :, None] == np.arange(moves)).any(axis=1)  # (B, moves)
        rows, ms = np.nonzero(used)
        remap = np.full((len(members), moves + 1), -1, dtype=np.int64)
        remap[rows, ms + 1] = np.arange(len(rows))
        sources = torch.from_numpy(np.take_along_axis(remap, lines + 1, axis=1))
        degrees = deg[members][rows, ms] * (-1.0 if pe == 0 else 1.0)  # a transpose mirrors: rotations change sign
        shifts = sh[members][rows, ms][:, ::-1] if pe == 0 else sh[members][rows, ms]  # ... and shifts swap
        res = kspace_motion(batch, torch.from_numpy(rows.astype(np.int64)), torch.from_numpy(degrees),
                            torch.from_numpy(np.ascontiguousarray(shifts)).reshape(-1, 2), sources,
                            real_part=real_part)
        res = res.transpose(1, 2) if pe == 0 else res
        if members.size == b:
            out.copy_(res)
        else:
            out[torch.from_numpy(members)] = res
    return out


class RandomKSpaceMotion:
    """Samples :class:`KSpaceMotion` parameters for a given severity.

    Parameters
    ----------
    severity : float in [0, 1] or (low, high), optional
        Scales the motion amplitude and the share of replaced lines; 0 is the
        identity.  A range (default (0, 1)) draws a severity per slice.
    max_degrees : float
        Largest rotation of a moved copy at severity 1 (default 8°).
    max_translation : float
        Largest shift at severity 1, in pixels (default 8).
    max_moves : int
        Most moved copies (positions); 1 … ``max_moves`` are drawn.
    max_fraction : float in (0, 1]
        Share of phase-encoding lines replaced at severity 1 (default 0.7).
    mode : {"lines", "segments", "random"}
        Replace scattered lines, contiguous segments (motion at given
        times during a sequential acquisition), or either at random.
    pe_axis : {0, 1}, optional
        Phase-encoding direction; random when None.
    keep_centre : float in [0, 0.5)
        Share of the phase-encoding lines, centred on the k-space centre, that
        always keep the original position (default 0.04; at least one line;
        0 turns the rule off and lets moved lines cover the centre).
        The centre of k-space sets where the head appears, so the original
        position is the reference, as in TorchIO's model: without this, a
        slice whose centre came from a moved copy is a *shifted* head with a
        faint ghost, and its low SSIM against the unmoved slice measures a
        displacement that no one can see in the image (a poisoned label).
        In ``"segments"`` mode the replaced run lies wholly on one side of
        the band, so it covers at most about half of k-space.
    paper : bool
        The paper's in-house variant instead: two copies rotated by −σ and
        +σ (σ uniform in [0, ``max_degrees`` · severity], ``max_degrees``
        5 in the paper), no translation, and *every* line refilled at random
        from the original or one of the two copies.

    Examples
    --------
    >>> t = RandomKSpaceMotion(severity=0.5).sample((64, 64), seed=0)
    >>> isinstance(t, KSpaceMotion)
    True
    """

    def __init__(self, severity: Union[float, Tuple[float, float]] = (0.0, 1.0), max_degrees: float = 8.0,
                 max_translation: float = 8.0, max_moves: int = 4, max_fraction: float = 0.7,
                 mode: str = "random", pe_axis: Optional[int] = None, keep_centre: float = 0.04,
                 paper: bool = False):
        self.severity = _check_severity(severity)
        if not 0 <= keep_centre < 0.5:
            raise BadParameterError(f"keep_centre must be in [0, 0.5), got {keep_centre}")
        if mode not in LINE_MODES + ("random",):
            raise BadParameterError(f"mode must be one of {LINE_MODES + ('random',)}, got {mode!r}")
        if pe_axis not in (None, 0, 1):
            raise BadParameterError(f"pe_axis must be 0, 1 or None, got {pe_axis}")
        if max_moves < 1:
            raise BadParameterError("max_moves must be >= 1")
        if not 0 < max_fraction <= 1:
            raise BadParameterError("max_fraction must be in (0, 1]")
        self.max_degrees = float(max_degrees)
        self.max_translation = float(max_translation)
        self.max_moves = int(max_moves)
        self.max_fraction = float(max_fraction)
        self.mode = mode
        self.pe_axis = pe_axis
        self.keep_centre = float(keep_centre)
        self.paper = bool(paper)

    def sample(self, shape: Tuple[int, int], seed: Seed = None) -> KSpaceMotion:
        """Draw the parameters for one slice of ``shape`` (H, W): :meth:`draw` of one."""
        return self.draw(shape, as_rng(seed), 1).transform(0)

    def draw(self, shape: Tuple[int, int], rng: np.random.Generator, n: int) -> "MotionDraws":
        """Parameters for ``n`` slices of ``shape`` (H, W), each field drawn for all of them at once.

        Every slice takes the same number of draws, whatever its severity: a slice drawn again from the same
        seed at another severity gets the same motion, larger (the real-scan evaluation's common random
        numbers), and the draws cost a few calls of the generator per batch, not per slice.
        """
        h, w = _check_shape(shape)
        big, m = max(h, w), self.max_moves
        sev, pe, lines = _draw_slices(self, (h, w), rng, n)
        valid = np.arange(big)[None, :] < lines[:, None]
        moving = sev > 0
        if self.paper:
            sigma = rng.uniform(0.0, 1.0, size=n) * self.max_degrees * sev
            src = np.where(valid & moving[:, None], rng.integers(-1, 2, size=(n, big)), -1)
            return MotionDraws((h, w), pe, np.where(moving, 2, 0), np.stack([-sigma, sigma], axis=1),
                               np.zeros((n, 2, 2)), src)
        moves, deg, shifts = _draw_moves(self, sev, rng, n)
        fraction = self.max_fraction * sev
        segments = rng.integers(2, size=n) == 1 if self.mode == "random" else np.full(n, self.mode == "segments")
        band = np.maximum(1, np.round(self.keep_centre * lines)).astype(np.int64) if self.keep_centre > 0 \
            else np.zeros(n, np.int64)
        # Centred order: the zero frequency is line n // 2; [lo, hi) keeps the original.
        lo = lines // 2 - band // 2
        hi = lo + band
        pos = np.arange(big)[None, :]
        # "lines": each line outside the band replaced with probability ``fraction``, from a copy at random.
        chosen = (rng.random((n, big)) < fraction[:, None]) & valid & ((pos < lo[:, None]) | (pos >= hi[:, None]))
        copy = (rng.random((n, big)) * moves[:, None]).astype(np.int64)
        by_line = np.where(chosen, copy, -1)
        # "segments": a sequential acquisition; the head moves at ``moves`` times and each new position holds
        # for a contiguous run of lines, all on one side of the band (either side when there is none).
        left = rng.random(n) < 0.5
        first = np.where((band == 0) | left, 0, hi)
        last = np.where(band == 0, lines, np.where(left, lo, lines))
        room = last - first
        total = np.minimum(room, np.maximum(1, np.round(fraction * lines).astype(np.int64)))
        cuts = _distinct_cuts(rng.random((n, m - 1)), total, np.minimum(moves - 1, total - 1))
        start = first + (rng.random(n) * (room - total + 1)).astype(np.int64)
        d = pos - start[:, None]
        inside = (d >= 0) & (d < total[:, None])
        by_segment = np.where(inside, (d[:, :, None] >= cuts[:, None, :]).sum(axis=2), -1)
        src = np.where(moving[:, None], np.where(segments[:, None], by_segment, by_line), -1)
        return MotionDraws((h, w), pe, np.where(moving, moves, 0), deg, shifts, src)

    def __call__(self, image: ArrayOrTensor, seed: Seed = None) -> ArrayOrTensor:
        t, is_numpy, single = _as_batch(image)
        rng = as_rng(seed)
        out = apply_kspace_batch(t, [self.sample(t.shape[-2:], rng) for _ in range(t.shape[0])])
        return _restore(out, is_numpy, single)


def _check_severity(severity) -> Tuple[float, float]:
    try:
        if isinstance(severity, (str, bytes, bool)):  # float("0.5") would pass, and fail later in a name's format
            raise TypeError(type(severity).__name__)
        lo, hi = (severity, severity) if np.isscalar(severity) else tuple(severity)
        lo, hi = float(lo), float(hi)
    except (TypeError, ValueError):
        lo = hi = float("nan")
    if not (0.0 <= lo <= hi <= 1.0):
        raise BadParameterError(f"severity must be in [0, 1] (or a range within it), got {severity!r}")
    return lo, hi


def _check_shape(shape) -> Tuple[int, int]:
    """(H, W) as two ints of at least one pixel; otherwise one line (an empty slice failed later inside torch's
    FFT with "Invalid number of data points")."""
    try:
        h, w = (int(v) for v in shape)
        if h != shape[0] or w != shape[1]:
            raise ValueError
    except (TypeError, ValueError):
        h = w = 0
    if h < 1 or w < 1:
        raise BadParameterError(f"shape must be a slice's two sizes (H, W), each at least 1 pixel; got {shape!r}")
    return h, w


def _draw_slices(sampler, shape: Tuple[int, int], rng: np.random.Generator, n: int):
    """What both algorithms' ``draw`` take first: ``n`` severities (drawn where ``sampler.severity`` is a range),
    phase-encoding axes (drawn where ``sampler.pe_axis`` is None) and the number of lines along each."""
    lo, hi = sampler.severity
    sev = np.full(n, lo) if lo == hi else rng.uniform(lo, hi, size=n)
    pe = rng.integers(2, size=n) if sampler.pe_axis is None else np.full(n, sampler.pe_axis)
    return sev, pe, np.where(pe == 0, shape[0], shape[1])


def _draw_moves(sampler, sev: np.ndarray, rng: np.random.Generator, n: int):
    """Both algorithms' moves: 1 … ``sampler.max_moves`` of them a slice, each a rotation and a shift uniform
    within ``max_degrees`` and ``max_translation`` times the slice's severity (drawn for every place, used or not,
    so that every slice takes the same draws).  Returns moves (n,), degrees (n, M) and shifts (n, M, 2)."""
    m = sampler.max_moves
    moves = rng.integers(1, m + 1, size=n)
    u = rng.uniform(-1, 1, size=(n, m, 3))
    return moves, u[..., 0] * sampler.max_degrees * sev[:, None], u[..., 1:] * sampler.max_translation * sev[:, None, None]


def _distinct_cuts(u: np.ndarray, total: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Per row, ``count`` distinct integers drawn uniformly from 1 … ``total`` − 1 (all subsets equally likely),
    sorted, from the uniforms ``u`` (rows × most counts); the unused places hold the largest int64.

    Draw ``j`` picks among the ``total − 1 − j`` values not yet taken, then steps over those taken (in
    ascending order), which is sampling without replacement.

    >>> _distinct_cuts(np.array([[0.0, 0.0], [0.99, 0.5]]), np.array([5, 10]), np.array([2, 1])).tolist()[0]
    [1, 2]
    """
    none = np.iinfo(np.int64).max
    taken = np.full(u.shape, none, dtype=np.int64)
    for j in range(u.shape[1]):
        r = (u[:, j] * np.maximum(total - 1 - j, 1)).astype(np.int64) + 1
        for c in range(j):  # taken[:, :j] is sorted
            r += r >= taken[:, c]
        taken[:, j] = np.where(j < count, r, none)
        taken.sort(axis=1)
    return taken


# ----------------------------------------------------------------------------
# TorchIO's model
# ----------------------------------------------------------------------------

@dataclass
class TorchioMotion:
    """TorchIO's ``Motion`` (Shaw et al. 2019) on a slice laid out as 1 × 1 × H × W.

    Parameters
    ----------
    degrees : sequence of float, length M
        TorchIO's rotation of each position after a move (degrees, about the
        1-voxel axis, i.e. in-plane).
    translations : sequence of (float, float), length M
        TorchIO's translation (rows, columns) of each position, in pixels.
    times : sequence of float in (0, 1), length M
        When each move happens, as a share of the acquisition.
    pe_axis : {0, 1}
        Phase-encoding direction.  TorchIO segments k-space along the last
        axis, so for ``pe_axis=0`` the slice is transposed around the call.

    Notes
    -----
    The parameters are TorchIO's own: its rigid transforms lose their centre
    (``get_rigid_transforms`` keeps only matrix and translation), so a
    rotation turns the slice about pixel (0, 0), not about its centre.
    :meth:`about_centre` builds the parameters of a move about the centre,
    which is what :class:`RandomTorchioMotion` draws.

    Calling the object runs TorchIO itself (the reference; per slice, numpy
    and SimpleITK) and returns the absolute value of TorchIO's real-valued
    output.  :func:`apply_motion_batch` runs the same model batched on torch
    through :meth:`to_kspace`, and returns the magnitude of the complex
    reconstruction, as a scanner stores it; with ``real_part=True`` it
    equals TorchIO's output to float32 round-off.
    """

    degrees: Sequence[float]
    translations: Sequence[Tuple[float, float]]
    times: Sequence[float]
    pe_axis: int = 1

    def __post_init__(self):
        self.degrees = [float(d) for d in self.degrees]
        self.translations = [(float(a), float(b)) for a, b in self.translations]
        self.times = [float(t) for t in self.times]
        if not len(self.degrees) == len(self.translations) == len(self.times):
            raise BadParameterError("degrees, translations and times need one entry per move")
        if any(not 0 < t < 1 for t in self.times):
            raise BadParameterError("times must lie in (0, 1)")
        if self.pe_axis not in (0, 1):
            raise BadParameterError(f"pe_axis must be 0 or 1, got {self.pe_axis}")

    @classmethod
    def about_centre(cls, shape: Tuple[int, int], degrees: Sequence[float], shifts: Sequence[Tuple[float, float]],
                     times: Sequence[float], pe_axis: int = 1) -> "TorchioMotion":
        """TorchIO parameters for moves that rotate the slice about its centre by ``degrees`` and then
        shift it by ``shifts`` (rows, columns; pixels), as :func:`warp` does."""
        h, w = (int(shape[1]), int(shape[0])) if pe_axis == 0 else (int(shape[0]), int(shape[1]))
        cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
        degs, translations = [], []
        for d, sh in zip(degrees, shifts):
            d, s0, s1 = float(d), float(sh[0]), float(sh[1])
            if pe_axis == 0:  # TorchIO sees the transposed slice: a mirror, so the angle flips and the shift swaps
                d, s0, s1 = -d, s1, s0
            co, si = _cos_sin(d)
            # Invert to_kspace: shift = (R - I) c + R (ty, -tz) in the frame TorchIO sees, R = [[co, -si], [si, co]].
            vy, vx = s0 - ((co - 1) * cy - si * cx), s1 - (si * cy + (co - 1) * cx)
            ty, mtz = co * vy + si * vx, co * vx - si * vy
            degs.append(d)
            translations.append((ty, -mtz) if pe_axis == 1 else (-mtz, ty))
        return cls(degs, translations, list(times), pe_axis)

    def sources(self, n: int) -> list:
        """Per phase-encoding line (centred order) the move it is acquired at, −1 for the reference.

        TorchIO's rule: line segments split at ``int(n · time)``; the segment
        holding the centre of k-space keeps the reference position and the
        move that owned it takes the first segment instead.
        """
        times = self.times
        cuts = [int(n * t) for t in times] + [n]
        owners = list(range(len(times) + 1))  # 0: reference, k: move k - 1
        centre = next((k for k, t in enumerate(times) if t > 0.5), len(times))
        owners[0], owners[centre] = owners[centre], owners[0]
        out = [-1] * n
        first = 0
        for k, last in zip(owners, cuts):
            if last > first:
                out[first:last] = [k - 1] * (last - first)
            first = last
        return out

    def to_kspace(self, shape: Tuple[int, int]) -> "KSpaceMotion":
        """The same corruption as a :class:`KSpaceMotion` for a slice of ``shape`` (H, W)."""
        if not self.degrees:
            return KSpaceMotion([], [], [-1] * int(shape[self.pe_axis]), self.pe_axis)
        h, w = (int(shape[1]), int(shape[0])) if self.pe_axis == 0 else (int(shape[0]), int(shape[1]))
        cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
        degrees, shifts = [], []
        for d, (ty, tz) in zip(self.degrees, self.translations):
            if self.pe_axis == 0:
                ty, tz = tz, ty
            co, si = _cos_sin(d)
            # (R - I) c + R (ty, -tz) in the frame TorchIO sees, R = [[co, -si], [si, co]]
            s0 = (co - 1) * cy - si * cx + co * ty + si * tz
            s1 = si * cy + (co - 1) * cx + si * ty - co * tz
            if self.pe_axis == 0:
                d, s0, s1 = -d, s1, s0
            degrees.append(float(d))
            shifts.append((s0, s1))
        return KSpaceMotion(degrees, shifts, self.sources(w), self.pe_axis)

    def _one(self, image: torch.Tensor) -> torch.Tensor:
        import torchio as tio

        if not self.degrees:
            return image.clone()
        img = image.T if self.pe_axis == 0 else image
        m = len(self.degrees)
        degrees = np.zeros((m, 3))
        degrees[:, 0] = self.degrees  # about the 1-voxel axis: in-plane rotation
        translation = np.zeros((m, 3))
        translation[:, 1:] = np.asarray(self.translations)[:, ::-1] if self.pe_axis == 0 else self.translations
        data = img.detach().to("cpu", torch.float32)[None, None]  # (C=1, X=1, Y=H, Z=W)
        motion = tio.Motion(degrees=degrees, translation=translation, times=np.asarray(self.times),
                            image_interpolation="linear")
        out = motion(tio.ScalarImage(tensor=data)).data[0, 0].abs()
        out = out.T if self.pe_axis == 0 else out
        return out.to(image.device, image.dtype)

    def __call__(self, image: ArrayOrTensor) -> ArrayOrTensor:
        t, is_numpy, single = _as_batch(image)
        out = torch.stack([self._one(x) for x in t])
        return _restore(out, is_numpy, single)


def _cos_sin(degrees: float) -> Tuple[float, float]:
    r = math.radians(degrees)
    return math.cos(r), math.sin(r)


class RandomTorchioMotion:
    """Samples :class:`TorchioMotion` parameters for a given severity.

    Severity scales both what a reader sees grow: the size of the moves and
    the share of k-space acquired away from the reference position.  (Drawing
    move times uniformly, as before, often left only a few outer lines moved:
    the label then hardly fell with severity, and that half of the training
    set taught nothing.)

    Parameters
    ----------
    severity : float in [0, 1] or (low, high)
        0 is the identity.
    max_degrees : float
        Largest rotation about the slice centre at severity 1 (default 10°).
    max_translation : float
        Largest shift at severity 1, in pixels (default 10).
    max_moves : int
        Most moves during the acquisition; 1 … ``max_moves`` are drawn.
    max_fraction : float in (0, 1)
        Largest share of k-space acquired at a moved position, at severity 1
        (default 0.8; one move can hold at most half of k-space).
    pe_axis : {0, 1}, optional
        Phase-encoding direction; random when None.

    Examples
    --------
    >>> t = RandomTorchioMotion(severity=0.5).sample((64, 64), seed=0)
    >>> isinstance(t, TorchioMotion)
    True
    """

    def __init__(self, severity: Union[float, Tuple[float, float]] = (0.0, 1.0), max_degrees: float = 10.0,
                 max_translation: float = 10.0, max_moves: int = 3, max_fraction: float = 0.8,
                 pe_axis: Optional[int] = None):
        self.severity = _check_severity(severity)
        if max_moves < 1:
            raise BadParameterError("max_moves must be >= 1")
        if pe_axis not in (None, 0, 1):
            raise BadParameterError(f"pe_axis must be 0, 1 or None, got {pe_axis}")
        if not 0 < max_fraction < 1:
            raise BadParameterError("max_fraction must be in (0, 1)")
        self.max_degrees = float(max_degrees)
        self.max_translation = float(max_translation)
        self.max_moves = int(max_moves)
        self.max_fraction = float(max_fraction)
        self.pe_axis = pe_axis

    def sample(self, shape: Tuple[int, int], seed: Seed = None) -> TorchioMotion:
        """Draw the parameters for one slice of ``shape`` (H, W): :meth:`draw` of one.  The shape is asked for,
        as :meth:`RandomKSpaceMotion.sample` asks: a default of 256² moved a 193 × 157 slice off its centre."""
        return self.draw(shape, as_rng(seed), 1).transform(0)

    def draw(self, shape: Tuple[int, int], rng: np.random.Generator, n: int) -> "MotionDraws":
        """Parameters for ``n`` slices of ``shape`` (H, W), each field drawn for all of them at once (the same
        number of draws for every slice, as :meth:`RandomKSpaceMotion.draw`), with TorchIO's rule for which
        lines each move holds."""
        h, w = _check_shape(shape)
        big, m = max(h, w), self.max_moves
        sev, pe, lines = _draw_slices(self, (h, w), rng, n)
        moving = sev > 0
        moves, deg, shifts = _draw_moves(self, sev, rng, n)
        moved = self.max_fraction * sev * rng.uniform(0.5, 1.0, size=n)
        lo, hi = 0.02, 0.98
        # One move: it holds the outer ``moved`` share of k-space (at most half), on either side.
        t = np.minimum(moved, 0.5)
        one = np.where(rng.random(n) < 0.5, t, 1.0 - t)
        # Several: the reference segment [a, b) holds the centre; the moves own the rest.
        width = 1.0 - moved
        a = 0.5 - width * rng.uniform(0.0, 1.0, size=n)
        a, b = np.maximum(lo, a), np.minimum(hi, a + width)
        a, b = np.minimum(a, 0.49), np.maximum(b, 0.51)
        extra = lo + rng.uniform(0, 1, size=(n, max(0, m - 2))) * ((a - lo) + (hi - b))[:, None]
        extra = np.where(extra < a[:, None], extra, b[:, None] + (extra - a[:, None]))
        times = np.concatenate([np.where(moves == 1, one, a)[:, None], b[:, None], extra], axis=1)[:, :m]
        times = np.where(np.arange(m)[None, :] < moves[:, None], np.clip(times, lo, hi), np.nan)
        times = np.sort(times, axis=1)  # unused times (NaN) last
        # TorchIO's segments split at int(n · time); the one holding the centre keeps the reference position
        # and the move that owned it takes the first segment.
        cut = np.where(np.isnan(times), np.iinfo(np.int64).max, np.floor(lines[:, None] * np.nan_to_num(times)))
        segment = (np.arange(big)[None, :, None] >= cut[:, None, :]).sum(axis=2)
        late = np.nan_to_num(times, nan=0.0) > 0.5
        centre = np.where(late.any(axis=1), late.argmax(axis=1), moves)[:, None]
        owner = np.where(segment == 0, centre, np.where(segment == centre, 0, segment))
        src = np.where(moving[:, None] & (np.arange(big)[None, :] < lines[:, None]), owner - 1, -1)
        times[~moving] = np.inf  # marks TorchIO's identity
        return MotionDraws((h, w), pe, np.where(moving, moves, 0), deg, shifts, src, times=times)

    def __call__(self, image: ArrayOrTensor, seed: Seed = None) -> ArrayOrTensor:
        t, is_numpy, single = _as_batch(image)
        rng = as_rng(seed)
        out = apply_motion_batch(t, [self.sample(tuple(t.shape[-2:]), rng) for _ in range(t.shape[0])])
        return _restore(out, is_numpy, single)


@dataclass
class MotionDraws:
    """Motion parameters of ``n`` slices of one ``shape``, drawn at once, as arrays: what the random twins'
    ``draw`` returns and :func:`apply_motion_draws` applies (the sample factory's path, with no object per
    slice).  Either algorithm in the k-space algorithm's terms:

    * ``pe_axis`` (n,): phase-encoding direction;
    * ``moves`` (n,): moved copies (0: the slice is left as it is);
    * ``degrees`` (n, M), ``shifts`` (n, M, 2): each copy's rotation about the centre and shift (rows,
      columns; pixels), as :func:`warp` moves it;
    * ``sources`` (n, max(H, W)): per phase-encoding line in acquisition order (centred) the copy it comes from,
      or −1; a row reads its first H (``pe_axis`` 0) or W lines;
    * ``times`` (n, M): TorchIO's move times, sorted, NaN past ``moves``; NaN throughout for the k-space
      algorithm's slices, infinite for TorchIO's that are left as they are (``None``: all the k-space algorithm's).

    :meth:`transform` gives slice ``k`` as a :class:`KSpaceMotion` or :class:`TorchioMotion`.

    Examples
    --------
    >>> d = RandomMotion(severity=0.5).draw((32, 40), np.random.default_rng(0), 3)
    >>> len(d), d.sources.shape
    (3, (3, 40))
    """

    shape: Tuple[int, int]
    pe_axis: np.ndarray
    moves: np.ndarray
    degrees: np.ndarray
    shifts: np.ndarray
    sources: np.ndarray
    times: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return len(self.pe_axis)

    def transform(self, k: int) -> Union[KSpaceMotion, TorchioMotion]:
        """Slice ``k``'s parameters as the deterministic transform (TorchIO's where it has move times)."""
        pe, m = int(self.pe_axis[k]), int(self.moves[k])
        n = int(self.shape[pe])
        deg = self.degrees[k, :m].tolist()
        shifts = [tuple(v) for v in self.shifts[k, :m].tolist()]
        if self.times is not None and not np.isnan(self.times[k, 0]):  # TorchIO's (its identity: m = 0, no moves)
            return TorchioMotion.about_centre(self.shape, deg, shifts, self.times[k, :m].tolist(), pe)
        return KSpaceMotion(deg, shifts, self.sources[k, :n] if m else [-1] * n, pe)

    def still(self, mask: np.ndarray) -> None:
        """Leave the slices where ``mask`` holds as they are (no moved copy, every line the slice's own)."""
        self.moves = np.where(mask, 0, self.moves)
        self.sources = np.where(np.asarray(mask)[:, None], -1, self.sources)

    @classmethod
    def merge(cls, first: np.ndarray, a: "MotionDraws", b: "MotionDraws") -> "MotionDraws":
        """One set of draws from two: slice ``k`` is the next of ``a`` where ``first[k]``, else the next of ``b``."""
        first = np.asarray(first, dtype=bool)
        n = len(first)

        def join(x, y, fill):
            if x.ndim > 1:  # the narrower padded to the wider (moves, lines)
                width = max(x.shape[1], y.shape[1])
                x, y = (np.concatenate([v, np.full((len(v), width - v.shape[1]) + v.shape[2:], fill)], axis=1)
                        for v in (x, y))
            out = np.empty((n,) + x.shape[1:], dtype=np.result_type(x, y))
            out[first], out[~first] = x, y
            return out

        def times(d):  # the k-space algorithm's slices have none
            return np.full(d.degrees.shape, np.nan) if d.times is None else d.times

        return cls(a.shape, join(a.pe_axis, b.pe_axis, 0), join(a.moves, b.moves, 0),
                   join(a.degrees, b.degrees, 0.0), join(a.shifts, b.shifts, 0.0), join(a.sources, b.sources, -1),
                   None if a.times is None and b.times is None else join(times(a), times(b), np.nan))


def apply_motion_draws(images: torch.Tensor, draws: MotionDraws, real_part: bool = False) -> torch.Tensor:
    """Apply :class:`MotionDraws` to a (B, H, W) batch of their shape in one batched k-space pass; equal to
    :func:`apply_motion_batch` of their :meth:`~MotionDraws.transform` s to float round-off (TorchIO's moves
    are not converted about the centre and back)."""
    if tuple(images.shape[-2:]) != tuple(draws.shape) or images.shape[0] != len(draws):
        raise BadParameterError(f"draws for {len(draws)} slices of {tuple(draws.shape)}, images {tuple(images.shape)}")
    return _apply_lines(images, draws.pe_axis, draws.sources, draws.degrees, draws.shifts, real_part)


class RandomMotion:
    """The method's corruption: one of the two algorithms, at random.

    Parameters
    ----------
    method : {"kspace", "torchio", "random"}
    severity : float or (low, high)
        Passed to the chosen algorithm.
    p_kspace : float
        Probability of the k-space algorithm when ``method="random"``.
    """

    def __init__(self, method: str = "random", severity: Union[float, Tuple[float, float]] = (0.0, 1.0),
                 p_kspace: float = 0.5, **kwargs):
        if method not in METHODS + ("random",):
            raise BadParameterError(f"method must be one of {', '.join(MOTION_MODELS + ('random',))}; got {method!r}")
        self.method = method
        self.p_kspace = float(p_kspace)
        self.kspace = RandomKSpaceMotion(severity, **kwargs.get("kspace", {}))
        self.torchio = RandomTorchioMotion(severity, **kwargs.get("torchio", {}))

    def sample(self, shape: Tuple[int, int], seed: Seed = None):
        """One slice's transform (:class:`KSpaceMotion` or :class:`TorchioMotion`): :meth:`draw` of one."""
        return self.draw(shape, as_rng(seed), 1).transform(0)

    def draw(self, shape: Tuple[int, int], rng: np.random.Generator, n: int) -> "MotionDraws":
        """Parameters for ``n`` slices of ``shape``: the algorithm of each, then each algorithm's draws for its
        slices at once."""
        if self.method == "random":
            kspace = rng.random(n) < self.p_kspace
        else:
            kspace = np.full(n, self.method == "kspace")
        if kspace.all() or not kspace.any():  # one algorithm (always, for one slice): nothing to merge
            return (self.kspace if kspace.all() else self.torchio).draw(shape, rng, n)
        return MotionDraws.merge(kspace, self.kspace.draw(shape, rng, int(kspace.sum())),
                                 self.torchio.draw(shape, rng, int(n - kspace.sum())))


def apply_motion_batch(images: torch.Tensor, transforms: Sequence[Union[KSpaceMotion, TorchioMotion]],
                       real_part: bool = False) -> torch.Tensor:
    """Apply a mixed list of motion transforms to a (B, H, W) batch in one batched k-space pass.

    TorchIO-model transforms run as their :meth:`TorchioMotion.to_kspace`
    equivalent (the same model on torch, checked against TorchIO in the tests).
    """
    shape = tuple(images.shape[-2:])
    ks = [t.to_kspace(shape) if isinstance(t, TorchioMotion) else t for t in transforms]
    return apply_kspace_batch(images, ks, real_part=real_part)
