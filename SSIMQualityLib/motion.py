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

Seed = Union[None, int, np.random.Generator]
ArrayOrTensor = Union[np.ndarray, torch.Tensor]

from .dft import dft
from .vocabulary import MOTION_MODELS

LINE_MODES = ("lines", "segments")
METHODS = MOTION_MODELS


def _rng(seed: Seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


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
    # Rotation in pixel space, expressed in normalised coordinates of a non-square image.
    gx = c * xx - s * (h / w) * yy
    gy = s * (w / h) * xx + c * yy
    grid = torch.stack([gx, gy], dim=-1)
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
            raise ValueError("degrees and shifts must have one entry per moved copy")
        if self.pe_axis not in (0, 1):
            raise ValueError(f"pe_axis must be 0 or 1, got {self.pe_axis}")
        if self.sources and (min(self.sources) < -1 or max(self.sources) >= len(self.degrees)):
            raise ValueError(f"sources must lie in -1 .. {len(self.degrees) - 1}")

    @property
    def fraction_replaced(self) -> float:
        """Share of phase-encoding lines taken from a moved copy."""
        return float(np.mean(np.asarray(self.sources) >= 0)) if self.sources else 0.0

    def __call__(self, image: ArrayOrTensor) -> ArrayOrTensor:
        t, is_numpy, single = _as_batch(image)
        out = apply_kspace_batch(t, [self] * t.shape[0])
        return _restore(out, is_numpy, single)


def apply_kspace_batch(images: torch.Tensor, transforms: Sequence[KSpaceMotion], real_part: bool = False) -> torch.Tensor:
    """Apply one :class:`KSpaceMotion` per image of a (B, H, W) batch.

    Slices whose phase-encoding lines are rows are transposed so that the
    lines always lie along the last, contiguous axis (a transpose mirrors
    the image, so their rotations change sign and their shifts swap).
    Only copies that give at least one line are computed.
    """
    b, h, w = images.shape
    if len(transforms) != b:
        raise ValueError(f"need one transform per image: {len(transforms)} for {b}")
    out = torch.empty_like(images) if images.is_floating_point() else torch.empty(images.shape)
    for pe in (0, 1):
        members = [i for i, t in enumerate(transforms) if t.pe_axis == pe]
        if not members:
            continue
        n = h if pe == 0 else w
        batch = images[members]
        if pe == 0:
            batch = batch.transpose(1, 2)
        # Vectorised bookkeeping (a per-slice loop of small tensor calls cost more than the FFTs):
        # line sources (B, n), then one moved copy per (slice, move) that gives at least one line.
        moves = max([len(transforms[i].degrees) for i in members] + [1])
        src = np.full((len(members), n), -1, dtype=np.int64)
        deg = np.zeros((len(members), moves))
        sh = np.zeros((len(members), moves, 2))
        for row, i in enumerate(members):
            t = transforms[i]
            if t.sources:
                if len(t.sources) != n:
                    raise ValueError(f"transform {i} has {len(t.sources)} line sources for {n} phase-encoding lines")
                src[row] = t.sources
            if t.degrees:
                deg[row, :len(t.degrees)] = t.degrees
                sh[row, :len(t.shifts)] = t.shifts
        used = (src[:, :, None] == np.arange(moves)).any(axis=1)  # (B, moves)
        rows, ms = np.nonzero(used)
        remap = np.full((len(members), moves + 1), -1, dtype=np.int64)
        remap[rows, ms + 1] = np.arange(len(rows))
        sources = torch.from_numpy(np.take_along_axis(remap, src + 1, axis=1))
        degrees = deg[rows, ms] * (-1.0 if pe == 0 else 1.0)  # a transpose mirrors: rotations change sign
        shifts = sh[rows, ms][:, ::-1] if pe == 0 else sh[rows, ms]  # ... and shifts swap
        res = kspace_motion(batch, torch.from_numpy(rows.astype(np.int64)), torch.from_numpy(degrees),
                            torch.from_numpy(np.ascontiguousarray(shifts)).reshape(-1, 2), sources,
                            real_part=real_part)
        out[members] = res.transpose(1, 2) if pe == 0 else res
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
            raise ValueError(f"keep_centre must be in [0, 0.5), got {keep_centre}")
        if mode not in LINE_MODES + ("random",):
            raise ValueError(f"mode must be one of {LINE_MODES + ('random',)}, got {mode!r}")
        if pe_axis not in (None, 0, 1):
            raise ValueError(f"pe_axis must be 0, 1 or None, got {pe_axis}")
        if max_moves < 1:
            raise ValueError("max_moves must be >= 1")
        if not 0 < max_fraction <= 1:
            raise ValueError("max_fraction must be in (0, 1]")
        self.max_degrees = float(max_degrees)
        self.max_translation = float(max_translation)
        self.max_moves = int(max_moves)
        self.max_fraction = float(max_fraction)
        self.mode = mode
        self.pe_axis = pe_axis
        self.keep_centre = float(keep_centre)
        self.paper = bool(paper)

    def sample(self, shape: Tuple[int, int], seed: Seed = None) -> KSpaceMotion:
        """Draw the parameters for one slice of ``shape`` (H, W)."""
        rng = _rng(seed)
        sev = _draw_severity(self.severity, rng)
        pe = int(rng.integers(2)) if self.pe_axis is None else self.pe_axis
        n = int(shape[pe])
        if sev <= 0:
            return KSpaceMotion([], [], [-1] * n, pe)
        if self.paper:
            sigma = float(rng.uniform(0.0, self.max_degrees * sev))
            sources = rng.integers(-1, 2, size=n)
            return KSpaceMotion([-sigma, sigma], [(0.0, 0.0), (0.0, 0.0)], sources.tolist(), pe)
        moves = int(rng.integers(1, self.max_moves + 1))
        deg = rng.uniform(-1, 1, size=moves) * self.max_degrees * sev
        shifts = rng.uniform(-1, 1, size=(moves, 2)) * self.max_translation * sev
        fraction = self.max_fraction * sev
        mode = self.mode if self.mode != "random" else LINE_MODES[int(rng.integers(2))]
        band = max(1, int(round(self.keep_centre * n))) if self.keep_centre > 0 else 0
        # Centred order: the zero frequency is line n // 2; [lo, hi) keeps the original.
        lo = n // 2 - band // 2
        hi = lo + band
        sources = np.full(n, -1)
        if mode == "lines":
            chosen = rng.random(n) < fraction
            chosen[lo:hi] = False
            sources[chosen] = rng.integers(0, moves, size=int(chosen.sum()))
        else:
            # Sequential acquisition: the head moves at `moves` times and each
            # new position holds for a contiguous run of lines, all on one
            # side of the k-space centre.
            if band == 0:
                first, last = 0, n
            else:
                first, last = (0, lo) if rng.random() < 0.5 else (hi, n)
            room = last - first
            total = min(room, max(1, int(round(fraction * n))))
            if total > 0:
                # choice(total - 1) + 1 draws as choice(arange(1, total)) does, without building the array
                cuts = np.sort(rng.choice(total - 1, size=min(moves - 1, total - 1), replace=False) + 1) \
                    if total > 1 else np.array([], dtype=int)
                lengths = np.diff(np.concatenate([[0], cuts, [total]]))
                pos = first + int(rng.integers(0, room - total + 1))
                for copy, length in enumerate(lengths):
                    sources[pos:pos + length] = copy
                    pos += length
        return KSpaceMotion(deg.tolist(), [tuple(s) for s in shifts.tolist()], sources, pe)

    def __call__(self, image: ArrayOrTensor, seed: Seed = None) -> ArrayOrTensor:
        t, is_numpy, single = _as_batch(image)
        rng = _rng(seed)
        out = apply_kspace_batch(t, [self.sample(t.shape[-2:], rng) for _ in range(t.shape[0])])
        return _restore(out, is_numpy, single)


def _check_severity(severity) -> Tuple[float, float]:
    lo, hi = (severity, severity) if np.isscalar(severity) else tuple(severity)
    lo, hi = float(lo), float(hi)
    if not (0.0 <= lo <= hi <= 1.0):
        raise ValueError(f"severity must be in [0, 1] (or a range within it), got {severity!r}")
    return lo, hi


def _draw_severity(rng_range: Tuple[float, float], rng: np.random.Generator) -> float:
    lo, hi = rng_range
    return lo if lo == hi else float(rng.uniform(lo, hi))


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
            raise ValueError("degrees, translations and times need one entry per move")
        if any(not 0 < t < 1 for t in self.times):
            raise ValueError("times must lie in (0, 1)")
        if self.pe_axis not in (0, 1):
            raise ValueError(f"pe_axis must be 0 or 1, got {self.pe_axis}")

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
            raise ValueError("max_moves must be >= 1")
        if pe_axis not in (None, 0, 1):
            raise ValueError(f"pe_axis must be 0, 1 or None, got {pe_axis}")
        if not 0 < max_fraction < 1:
            raise ValueError("max_fraction must be in (0, 1)")
        self.max_degrees = float(max_degrees)
        self.max_translation = float(max_translation)
        self.max_moves = int(max_moves)
        self.max_fraction = float(max_fraction)
        self.pe_axis = pe_axis

    def sample(self, shape: Tuple[int, int] = (256, 256), seed: Seed = None) -> TorchioMotion:
        rng = _rng(seed)
        sev = _draw_severity(self.severity, rng)
        pe = int(rng.integers(2)) if self.pe_axis is None else self.pe_axis
        if sev <= 0:
            return TorchioMotion([], [], [], pe)
        moves = int(rng.integers(1, self.max_moves + 1))
        deg = rng.uniform(-1, 1, size=moves) * self.max_degrees * sev
        shifts = rng.uniform(-1, 1, size=(moves, 2)) * self.max_translation * sev
        moved = self.max_fraction * sev * float(rng.uniform(0.5, 1.0))
        lo, hi = 0.02, 0.98
        if moves == 1:
            t = min(moved, 0.5)
            times = [t if rng.random() < 0.5 else 1.0 - t]
        else:
            # The reference segment [a, b) holds the centre; the moves own the rest.
            width = 1.0 - moved
            a = 0.5 - width * float(rng.uniform(0.0, 1.0))
            a, b = max(lo, a), min(hi, a + width)
            a, b = min(a, 0.49), max(b, 0.51)
            extra = rng.uniform(0, 1, size=moves - 2)
            outside = (a - lo) + (hi - b)
            times = [a, b] + [float(lo + u * outside) if lo + u * outside < a else float(b + (lo + u * outside - a))
                              for u in extra]
        times = sorted(min(max(float(t), lo), hi) for t in times)
        return TorchioMotion.about_centre(tuple(shape), deg.tolist(), [tuple(v) for v in shifts.tolist()], times, pe)

    def __call__(self, image: ArrayOrTensor, seed: Seed = None) -> ArrayOrTensor:
        t, is_numpy, single = _as_batch(image)
        rng = _rng(seed)
        out = apply_motion_batch(t, [self.sample(tuple(t.shape[-2:]), rng) for _ in range(t.shape[0])])
        return _restore(out, is_numpy, single)


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
            raise ValueError(f"method must be one of kspace, torchio, random; got {method!r}")
        self.method = method
        self.p_kspace = float(p_kspace)
        self.kspace = RandomKSpaceMotion(severity, **kwargs.get("kspace", {}))
        self.torchio = RandomTorchioMotion(severity, **kwargs.get("torchio", {}))

    def sample(self, shape: Tuple[int, int], seed: Seed = None):
        rng = _rng(seed)
        method = self.method
        if method == "random":
            method = "kspace" if rng.random() < self.p_kspace else "torchio"
        return (self.kspace if method == "kspace" else self.torchio).sample(shape, rng)


def apply_motion_batch(images: torch.Tensor, transforms: Sequence[Union[KSpaceMotion, TorchioMotion]],
                       real_part: bool = False) -> torch.Tensor:
    """Apply a mixed list of motion transforms to a (B, H, W) batch in one batched k-space pass.

    TorchIO-model transforms run as their :meth:`TorchioMotion.to_kspace`
    equivalent (the same model on torch, checked against TorchIO in the tests).
    """
    shape = tuple(images.shape[-2:])
    ks = [t.to_kspace(shape) if isinstance(t, TorchioMotion) else t for t in transforms]
    return apply_kspace_batch(images, ks, real_part=real_part)
