"""Domain randomisation: realistic, varied "clean" slices from nilearn's MNI152 maps.

A model trained on one smooth, noise-free template would call every noisy
real scan corrupted.  As in SynthSeg (Billot et al., 2023), we synthesise
images from tissue maps instead: tissue-wise intensities giving T1-, T2-,
PD-, FLAIR- and EPI-like (and random) contrasts, texture, affine and elastic
deformation, skull kept or stripped, thick slices and blur, bias field and
Rician noise.  Everything here happens *before* the motion corruption, so a
clean slice and its corrupted twin share all of it and the label stays honest.

Sources (shipped inside the ``nilearn`` package, nothing downloaded):
``mni_icbm152_{t1,gm,wm}_tal_nlin_sym_09a_converted.nii.gz``; CSF is what the
brain mask leaves after GM and WM; "head" is the non-brain tissue of the T1.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Tuple

import numpy as np
import torch
import torch.nn.functional as F

#: Channels of a tissue slice stack ("skull" and "scalp" are synthetic shells:
#: nilearn's T1 template is brain-extracted).
CHANNELS = ("t1", "gm", "wm", "csf", "skull", "scalp")
#: Contrast families and the ranges of their tissue intensities (gm, wm, csf, scalp);
#: the skull is dark in every family (0 - 0.15 of the scalp).
FAMILIES = {
    "t1": ((0.45, 0.65), (0.75, 1.00), (0.02, 0.25), (0.30, 1.00)),
    "t2": ((0.45, 0.65), (0.25, 0.45), (0.80, 1.00), (0.15, 0.80)),
    "pd": ((0.70, 0.90), (0.55, 0.75), (0.75, 1.00), (0.30, 0.90)),
    "flair": ((0.60, 0.90), (0.40, 0.65), (0.00, 0.15), (0.20, 0.80)),
    "epi": ((0.45, 0.70), (0.30, 0.50), (0.70, 1.00), (0.05, 0.40)),
    "random": ((0.0, 1.0), (0.0, 1.0), (0.0, 1.0), (0.0, 1.0)),
}
FAMILY_WEIGHTS = {"template": 0.2, "t1": 0.15, "t2": 0.15, "pd": 0.1, "flair": 0.15, "epi": 0.1, "random": 0.15}


def mni_files() -> dict:
    """Paths of the MNI152 files that nilearn ships."""
    from .errors import MissingDependencyError

    try:
        import nilearn
    except ImportError:
        raise MissingDependencyError("nilearn is not installed; it ships the MNI152 maps used for training",
                                     hint="pip install nilearn") from None
    base = Path(nilearn.__file__).parent / "datasets" / "data"
    return {k: base / f"mni_icbm152_{k}_tal_nlin_sym_09a_converted.nii.gz" for k in ("t1", "gm", "wm")}


def load_tissue_volume() -> np.ndarray:
    """The (6, X, Y, Z) float16 stack of :data:`CHANNELS` from nilearn's MNI152 files."""
    import nibabel as nib
    from scipy import ndimage

    files = mni_files()
    t1, gm, wm = (np.asarray(nib.load(str(files[k])).dataobj, dtype=np.float32) / 255.0 for k in ("t1", "gm", "wm"))
    brain = ndimage.binary_fill_holes(ndimage.binary_closing(gm + wm > 0.2, iterations=3))
    brain = ndimage.binary_dilation(brain, iterations=1)
    csf = np.clip(brain.astype(np.float32) - gm - wm, 0.0, 1.0)
    # Skull (2-7 mm outside the brain) and scalp (7-12 mm), with soft edges.
    dist = ndimage.distance_transform_edt(~brain)
    skull = np.clip(dist - 2, 0, 1) * np.clip(7 - dist, 0, 1)
    scalp = np.clip(dist - 7, 0, 1) * np.clip(12 - dist, 0, 1)
    return np.stack([t1, gm, wm, csf, skull, scalp]).astype(np.float16)


@dataclass
class SynthesisParams:
    """Every parameter of one synthesised clean slice (what the random sampler draws)."""

    family: str
    intensities: Tuple[float, float, float, float]  # gm, wm, csf, scalp
    skull: float  # skull intensity
    skull_stripped: bool
    rotation: float  # degrees
    scale: Tuple[float, float]
    flip: bool
    transpose: bool
    elastic: np.ndarray  # (2, 6, 6) control-point displacements, pixels
    texture_seed: int
    texture_amount: float
    thick_factor: float  # >= 1: downsampling along thick_axis, then back
    thick_axis: int
    blur_sigma: float
    bias: np.ndarray  # (6,) quadratic polynomial coefficients of log-bias
    noise: float  # Rician sigma as a share of the image's maximum
    noise_seed: int


class RandomSynthesis:
    """Samples :class:`SynthesisParams`; ranges documented per attribute.

    Parameters
    ----------
    p_skull_strip : float
        Probability of removing non-brain tissue (default 0.3).
    max_rotation : float
        In-plane rotation range ± degrees (default 20).
    scale_range : (float, float)
        Zoom range per axis (default 0.85 – 1.15).
    max_elastic : float
        Largest elastic displacement, pixels (default 4).
    max_thick : float
        Largest slice-thickness factor (default 4; 1 means none).
    max_blur : float
        Largest Gaussian blur sigma, pixels (default 1.2).
    max_bias : float
        Largest log-bias coefficient (default 0.3, about ±30 %).
    noise_range : (float, float)
        Rician sigma as a share of the maximum intensity, drawn log-uniformly
        (default 0.005 – 0.08: SNR about 12 to 200).
    """

    def __init__(self, p_skull_strip: float = 0.3, max_rotation: float = 20.0, scale_range=(0.85, 1.15),
                 max_elastic: float = 4.0, max_thick: float = 4.0, max_blur: float = 1.2, max_bias: float = 0.3,
                 noise_range=(0.005, 0.08)):
        self.p_skull_strip = p_skull_strip
        self.max_rotation = max_rotation
        self.scale_range = scale_range
        self.max_elastic = max_elastic
        self.max_thick = max_thick
        self.max_blur = max_blur
        self.max_bias = max_bias
        self.noise_range = noise_range
        self._families = list(FAMILY_WEIGHTS)
        w = np.array([FAMILY_WEIGHTS[f] for f in self._families])
        self._weights = w / w.sum()

    def sample(self, rng: np.random.Generator) -> SynthesisParams:
        family = self._families[int(rng.choice(len(self._families), p=self._weights))]
        ranges = FAMILIES.get(family, FAMILIES["t1"])
        intens = tuple(float(rng.uniform(*r)) for r in ranges)
        epi = family == "epi"
        thick = float(rng.uniform(1.0, self.max_thick)) if (epi or rng.random() < 0.4) else 1.0
        return SynthesisParams(
            family=family, intensities=intens, skull=float(rng.uniform(0.0, 0.15)), skull_stripped=bool(rng.random() < self.p_skull_strip),
            rotation=float(rng.uniform(-self.max_rotation, self.max_rotation)),
            scale=tuple(float(v) for v in rng.uniform(*self.scale_range, size=2)),
            flip=bool(rng.integers(2)), transpose=bool(rng.random() < 0.2),
            elastic=rng.uniform(-1, 1, size=(2, 6, 6)) * self.max_elastic * float(rng.random()),
            texture_seed=int(rng.integers(2 ** 31)), texture_amount=float(rng.uniform(0.0, 0.15)),
            thick_factor=thick, thick_axis=int(rng.integers(2)),
            blur_sigma=float(rng.uniform(0.6, 1.5)) if epi else float(rng.uniform(0.0, self.max_blur)) * (rng.random() < 0.5),
            bias=rng.uniform(-1, 1, size=6) * self.max_bias * float(rng.random()),
            noise=float(np.exp(rng.uniform(*np.log(self.noise_range)))), noise_seed=int(rng.integers(2 ** 31)),
        )


def _gaussian_blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    if sigma <= 0.05:
        return img
    r = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-r, r + 1, dtype=img.dtype)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    t = img[None, None]
    t = F.conv2d(F.pad(t, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
    t = F.conv2d(F.pad(t, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1))
    return t[0, 0]


def _smooth_field(shape: Tuple[int, int], coarse: np.ndarray) -> torch.Tensor:
    """Upsample a small grid of values to a smooth field of ``shape`` (bicubic)."""
    t = torch.as_tensor(coarse, dtype=torch.float32)[None]
    if t.ndim == 3:
        t = t[None]
    return F.interpolate(t, size=shape, mode="bilinear", align_corners=True)[0]


def synthesize(stack: torch.Tensor, p: SynthesisParams, noise: bool = True) -> torch.Tensor:
    """One clean slice (H, W) from a tissue stack (5, H, W) and its parameters.

    Deformation, texture, resolution, bias and (unless ``noise`` is False)
    Rician noise are applied in that order; the result is non-negative, in
    arbitrary units.  Training leaves the noise out here and adds it after the
    motion with :func:`add_rician_noise`, the same draw to both images.
    """
    c, h, w = stack.shape
    stack = stack.float()
    # Geometry: flip / transpose, then one resampling for affine + elastic.
    if p.transpose and h == w:
        stack = stack.transpose(1, 2)
    if p.flip:
        stack = stack.flip(-1)
    rad = math.radians(p.rotation)
    cs, sn = math.cos(rad), math.sin(rad)
    ys = (2 * torch.arange(h, dtype=torch.float32) + 1) / h - 1
    xs = (2 * torch.arange(w, dtype=torch.float32) + 1) / w - 1
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    disp = _smooth_field((h, w), p.elastic)  # (2, H, W) pixels
    xx = xx / p.scale[1] + 2 * disp[1] / w
    yy = yy / p.scale[0] + 2 * disp[0] / h
    gx = cs * xx - sn * (h / w) * yy
    gy = sn * (w / h) * xx + cs * yy
    grid = torch.stack([gx, gy], dim=-1)[None]
    stack = F.grid_sample(stack[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    t1, gm, wm, csf, skull, scalp = stack
    # Intensities.
    if p.family == "template":
        img = t1 * (gm + wm + csf).clamp(0, 1)
        if not p.skull_stripped:
            img = img + (scalp + skull * p.skull) * p.intensities[3] * float(t1.max())
    else:
        i_gm, i_wm, i_csf, i_head = p.intensities
        img = gm * i_gm + wm * i_wm + csf * i_csf
        if not p.skull_stripped:
            img = img + scalp * i_head + skull * p.skull * i_head
    if p.texture_amount > 0:
        g = np.random.default_rng(p.texture_seed).standard_normal((1, 24, 24))
        img = img * (1 + p.texture_amount * _smooth_field((h, w), g)[0])
    # Resolution: thick slices (average then re-expand along one axis), blur.
    if p.thick_factor > 1.05:
        size = (max(4, int(round(h / p.thick_factor))), w) if p.thick_axis == 0 else (h, max(4, int(round(w / p.thick_factor))))
        img = F.interpolate(F.interpolate(img[None, None], size=size, mode="area"), size=(h, w), mode="bilinear",
                            align_corners=False)[0, 0]
    img = _gaussian_blur(img, p.blur_sigma)
    # Bias field: exp of a quadratic polynomial.
    b = p.bias
    bias = torch.exp(b[0] * xx + b[1] * yy + b[2] * xx * yy + b[3] * xx ** 2 + b[4] * yy ** 2 + b[5] * 0)
    img = img.clamp_min(0) * bias
    if noise:
        img = add_rician_noise(img, p.noise * float(img.max()) if img.numel() else 0.0, p.noise_seed)
    return img


def add_rician_noise(image: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    """Magnitude of ``image`` plus complex Gaussian noise of standard deviation ``sigma``.

    Parameters
    ----------
    image : Tensor (..., H, W)
        Non-negative magnitude image; every leading index gets the *same*
        noise draw, so a clean slice and its corrupted twin stacked together
        share their noise.
    sigma : float
        Noise standard deviation in the image's units (0: returned unchanged).
    seed : int
        Seed of the draw.

    Notes
    -----
    Thermal noise enters at acquisition, after the head has moved: adding it
    after the motion, identically to both images, keeps the SSIM label about
    the motion.  Noise added before the motion would be moved with the head,
    and the label would then fall with the noise level on images whose
    artefact cannot be seen (a clean noisy scan would look "corrupted").

    Examples
    --------
    >>> img = torch.zeros(8, 8)
    >>> bool((add_rician_noise(img, 0.1, 0) > 0).all())
    True
    """
    if sigma <= 0:
        return image
    g = torch.Generator().manual_seed(int(seed))
    n1 = torch.randn(image.shape[-2:], generator=g) * sigma
    n2 = torch.randn(image.shape[-2:], generator=g) * sigma
    return torch.sqrt((image + n1) ** 2 + n2 ** 2)


def nyquist_ghost(image: torch.Tensor, phase: float, pe_axis: int = 0) -> torch.Tensor:
    """EPI's N/2 ghost: every other phase-encoding line of k-space carries a phase error of ``phase`` radians.

    The image dims to cos(phase / 2) of itself and a copy shifted by half the
    field of view along ``pe_axis`` appears at sin(phase / 2): the faint
    double of the head that most real EPI and DWI slices show.  It is part of
    the acquisition, not of the motion, so training applies it to a clean
    slice and to its moved twin alike (as it does the noise).  Magnitude out;
    the same operator on every leading index.

    Examples
    --------
    >>> img = torch.zeros(8, 8); img[1, 3] = 1.0
    >>> out = nyquist_ghost(img, math.pi / 3)
    >>> round(float(out[1, 3]), 3), round(float(out[5, 3]), 3)    # cos(pi/6), sin(pi/6)
    (0.866, 0.5)
    """
    dim = -2 if pe_axis == 0 else -1
    n = image.shape[dim]
    k = torch.fft.fft(image.to(torch.complex64), dim=dim)
    odd = (torch.arange(n) % 2 == 1).to(torch.complex64)
    factor = 1 + odd * (complex(math.cos(phase), math.sin(phase)) - 1)
    k = k * (factor.view(n, 1) if dim == -2 else factor)
    return torch.fft.ifft(k, dim=dim).abs().to(image.dtype)
