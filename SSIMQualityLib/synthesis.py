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

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .dft import dft, on_matmul_device
from .resizing import AREA, BILINEAR, axis_operators

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
    texture: np.ndarray = field(repr=False)  # (1, 24, 24) standard normal control points of the texture
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
        # Each family's tissue-intensity ranges as (families, 4) tables of lows and highs.
        self._ranges = np.array([FAMILIES.get(f, FAMILIES["t1"]) for f in self._families]).transpose(2, 0, 1)

    def sample(self, rng: np.random.Generator) -> SynthesisParams:
        """One parameter set: :meth:`sample_batch` of one."""
        return self.sample_batch(rng, 1)[0]

    def sample_batch(self, rng: np.random.Generator, n: int) -> List[SynthesisParams]:
        """``n`` independent parameter sets, each field drawn for all ``n`` in one call of ``rng``.

        Drawing field by field costs a few microseconds a sample, where one call of ``rng`` per field and
        sample cost ~150 µs (a GPU's sample factory is bound by such host work, not by the device).

        >>> ps = RandomSynthesis().sample_batch(np.random.default_rng(0), 3)
        >>> len(ps), ps[0].elastic.shape, ps[0].texture.shape
        (3, (2, 6, 6), (1, 24, 24))
        """
        n = int(n)
        u = rng.random((n, 16))  # the scalar draws of every sample, one column per field
        fam = np.minimum(np.searchsorted(np.cumsum(self._weights), u[:, 0], side="right"), len(self._families) - 1)
        families = [self._families[int(f)] for f in fam]
        lo, hi = self._ranges[0][fam], self._ranges[1][fam]
        intens = lo + (hi - lo) * rng.random((n, 4))
        epi = np.array([f == "epi" for f in families], dtype=bool)
        thick = np.where(epi | (u[:, 1] < 0.4), 1.0 + (self.max_thick - 1.0) * u[:, 2], 1.0)
        rotation = self.max_rotation * (2 * u[:, 3] - 1)
        scale = rng.uniform(*self.scale_range, size=(n, 2))
        elastic = rng.uniform(-1, 1, size=(n, 2, 6, 6)) * (self.max_elastic * u[:, 4])[:, None, None, None]
        blur = np.where(epi, 0.6 + 0.9 * u[:, 5], self.max_blur * u[:, 6] * (u[:, 7] < 0.5))
        bias = rng.uniform(-1, 1, size=(n, 6)) * (self.max_bias * u[:, 8])[:, None]
        log_lo, log_hi = np.log(self.noise_range)
        noise = np.exp(log_lo + (log_hi - log_lo) * u[:, 9])
        texture = rng.standard_normal((n, 1, 24, 24))
        seeds = rng.integers(2 ** 31, size=n)
        # Python scalars through tolist(): a float() per element and sample cost more than the draws.
        cols = (u[:, 10] * 0.15).tolist(), (u[:, 11] < self.p_skull_strip).tolist(), rotation.tolist(), \
            (u[:, 12] < 0.5).tolist(), (u[:, 13] < 0.2).tolist(), (u[:, 14] * 0.15).tolist(), thick.tolist(), \
            (u[:, 15] < 0.5).astype(int).tolist(), blur.tolist(), noise.tolist(), seeds.tolist()
        return [SynthesisParams(
            family=families[k], intensities=tuple(i), skull=skull, skull_stripped=stripped, rotation=rot,
            scale=tuple(sc), flip=flip, transpose=tr, elastic=elastic[k], texture=texture[k], texture_amount=amount,
            thick_factor=thf, thick_axis=tha, blur_sigma=bl, bias=bias[k], noise=nz, noise_seed=seed)
            for k, (i, sc, skull, stripped, rot, flip, tr, amount, thf, tha, bl, nz, seed)
            in enumerate(zip(intens.tolist(), scale.tolist(), *cols))]


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
        img = img * (1 + p.texture_amount * _smooth_field((h, w), p.texture)[0])
    # Resolution: thick slices (average then re-expand along one axis), blur.
    if p.thick_factor > 1.05:
        img = F.interpolate(F.interpolate(img[None, None], size=_thick_size(p, h, w), mode="area"), size=(h, w),
                            mode="bilinear", align_corners=False)[0, 0]
    img = _gaussian_blur(img, p.blur_sigma)
    # Bias field: exp of a quadratic polynomial.
    b = p.bias
    bias = torch.exp(b[0] * xx + b[1] * yy + b[2] * xx * yy + b[3] * xx ** 2 + b[4] * yy ** 2 + b[5] * 0)
    img = img.clamp_min(0) * bias
    if noise:
        img = add_rician_noise(img, p.noise * float(img.max()) if img.numel() else 0.0, p.noise_seed)
    return img


def add_rician_noise(image: torch.Tensor, sigma: float, seed: int, *, smooth=(0.0, 0.0),
                     gain: Optional[torch.Tensor] = None) -> torch.Tensor:
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
    smooth : (float, float)
        Sigmas (down the rows, along them) of a reconstruction filter that
        acts on the noise (:func:`scanner_blur`; the caller filters ``image``
        itself, the filter being linear): correlated noise, as an apodised
        scan has.  Zeros: white noise.
    gain : Tensor (H, W), optional
        The noise's amplitude, pixel by pixel, after the filter (a standing
        ghost band: :func:`ghost_band`).  None: 1 everywhere.

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
    if max(smooth) > 0:
        n1, n2 = scanner_blur(torch.stack([n1, n2]), *smooth).unbind(0)
    if gain is not None:
        n1, n2 = n1 * gain, n2 * gain
    return rician_magnitude(image, n1, n2)


def ghost_band(rows: np.ndarray, cols: np.ndarray, gains, axes, shape: Tuple[int, int],
               device="cpu") -> torch.Tensor:
    """The noise's amplitude over a standing ghost band: 1 + gain across the head's extent, 1 elsewhere.

    A real scan's air is rarely even.  Pulsating vessels and the eyes ghost
    along the phase-encoding axis, over the rows (or columns) that hold the
    head, and an EPI's N/2 ghost lifts the air above and below it; v10 read
    such a band as head motion (air zeroed: clean slices 0.89 - 0.98 → 0.99;
    ``scripts/probe_background.py``).  The band is a property of the scanner,
    the same in a clean acquisition and its moved twin, so it scales the shared
    noise draw and leaves the label about the motion.

    Parameters
    ----------
    rows, cols : ndarray (B, 3)
        The head's rows and columns as :func:`slices.head_boxes` gives them.
    gains : array-like (B,)
        Extra amplitude in the band (0: no band).
    axes : array-like (B,)
        0: the band spans the head's rows (all columns); 1: its columns (all rows).
    shape : (H, W)

    Returns
    -------
    Tensor (B, H, W)
        Amplitudes, with edges a pixel soft.

    Examples
    --------
    >>> rows, cols = np.array([[3, 9, 6]]), np.array([[1, 3, 2]])   # head on rows 3 - 8
    >>> amp = ghost_band(rows, cols, [2.0], [0], (12, 4))
    >>> [round(float(v), 1) for v in amp[0, :, 0]]
    [1.2, 1.4, 1.8, 2.2, 2.6, 2.8, 2.8, 2.6, 2.2, 1.8, 1.4, 1.2]
    """
    h, w = shape
    gains = torch.as_tensor(np.asarray(gains, dtype=np.float32), device=device)[:, None, None]
    on_rows = np.asarray(axes) == 0

    def per_image(values) -> torch.Tensor:
        return torch.as_tensor(values, dtype=torch.float32, device=device)[:, None, None]

    along_rows = torch.as_tensor(on_rows, device=device)[:, None, None]
    lo = per_image(np.where(on_rows, rows[:, 0], cols[:, 0]))
    hi = per_image(np.where(on_rows, rows[:, 1], cols[:, 1]))
    ii = torch.arange(h, dtype=torch.float32, device=device)[None, :, None].expand(-1, h, w)
    jj = torch.arange(w, dtype=torch.float32, device=device)[None, None, :].expand(-1, h, w)
    pos = torch.where(along_rows, ii, jj)
    inside = torch.sigmoid(pos - lo + 0.5) * torch.sigmoid(hi - 0.5 - pos)  # edges half a pixel out
    return 1 + gains * inside


def rician_magnitude(image: torch.Tensor, real: torch.Tensor, imaginary: torch.Tensor) -> torch.Tensor:
    """The magnitude a scanner reconstructs from ``image`` (real, non-negative) plus complex Gaussian noise with
    parts ``real`` and ``imaginary`` (broadcast against it): the one Rician noise formula of both training paths.

    >>> float(rician_magnitude(torch.tensor(3.0), torch.tensor(0.0), torch.tensor(4.0)))
    5.0
    """
    return torch.sqrt((image + real) ** 2 + imaginary ** 2)


def nyquist_ghost(image: torch.Tensor, phase, pe_axis: int = 0) -> torch.Tensor:
    """EPI's N/2 ghost: every other phase-encoding line of k-space carries a phase error of ``phase`` radians.

    The image dims to cos(phase / 2) of itself and a copy shifted by half the
    field of view along ``pe_axis`` appears at sin(phase / 2): the faint
    double of the head that most real EPI and DWI slices show.  It is part of
    the acquisition, not of the motion, so training applies it to a clean
    slice and to its moved twin alike (as it does the noise).  Magnitude out;
    the same operator on every leading index, or, with ``phase`` a (B,)
    tensor, one phase per index of the first axis.

    Examples
    --------
    >>> img = torch.zeros(8, 8); img[1, 3] = 1.0
    >>> out = nyquist_ghost(img, math.pi / 3)
    >>> round(float(out[1, 3]), 3), round(float(out[5, 3]), 3)    # cos(pi/6), sin(pi/6)
    (0.866, 0.5)
    """
    dim = -2 if pe_axis == 0 else -1
    n = image.shape[dim]
    k = dft(image.to(torch.complex64), dim=dim)
    odd = (torch.arange(n, device=image.device) % 2 == 1).to(torch.complex64)
    if isinstance(phase, torch.Tensor) and phase.ndim == 1:
        ph = phase.to(image.device, torch.float64)
        error = torch.polar(torch.ones_like(ph), ph).to(torch.complex64)
        factor = 1 + odd[None] * (error[:, None] - 1)  # (B, n)
        factor = factor.view(-1, *([1] * (image.ndim - 3)), n, 1) if dim == -2 else \
            factor.view(-1, *([1] * (image.ndim - 2)), n)
    else:
        factor = 1 + odd * (complex(math.cos(phase), math.sin(phase)) - 1)
        factor = factor.view(n, 1) if dim == -2 else factor
    return dft(k * factor, dim=dim, inverse=True).abs().to(image.dtype)


# ----------------------------------------------------------------------------
# The same synthesis for a batch, each slice with its own parameters (the sample factory)
# ----------------------------------------------------------------------------

def mix_weights(params: Sequence[SynthesisParams]) -> torch.Tensor:
    """(B, 3, 6) weights that fold a tissue stack of :data:`CHANNELS` into the three images synthesis needs.

    Resampling is linear, so tissues can be mixed before the deformation
    instead of after it (3 images to warp instead of 6): ``a`` is the tissue
    image (the T1 template, or the weighted tissues), ``b`` the brain share
    that the template family multiplies by, ``c`` the skull and scalp that the
    template family scales by the warped template's maximum.
    """
    w = np.zeros((len(params), 3, len(CHANNELS)), dtype=np.float32)  # numpy: ~10 element writes a sample
    for k, p in enumerate(params):
        if p.family == "template":
            w[k, 0, 0] = 1.0
            w[k, 1, 1:4] = 1.0
            if not p.skull_stripped:
                w[k, 2, 5] = p.intensities[3]
                w[k, 2, 4] = p.skull * p.intensities[3]
        else:
            w[k, 0, 1:4] = p.intensities[:3]
            if not p.skull_stripped:
                w[k, 0, 5] = p.intensities[3]
                w[k, 0, 4] = p.skull * p.intensities[3]
    return torch.from_numpy(w)


def _kernels(sigmas: np.ndarray, r: int, like: torch.Tensor) -> torch.Tensor:
    """(B, 2r + 1) normalised Gaussian kernels, each cut at its own radius ceil(3 sigma) and zero beyond it;
    sigma <= 0.05 gives the identity."""
    r_each = np.where(sigmas > 0.05, np.maximum(1, np.ceil(3 * np.maximum(sigmas, 1e-6))), 0).astype(int)
    x = torch.arange(-r, r + 1, dtype=like.dtype, device=like.device)
    s = torch.as_tensor(np.maximum(sigmas, 1e-6), dtype=like.dtype, device=like.device)[:, None]
    k = torch.exp(-0.5 * (x[None] / s) ** 2) * (x[None].abs() <= torch.as_tensor(r_each, device=like.device)[:, None])
    k = k / k.sum(dim=1, keepdim=True)
    k[torch.as_tensor(r_each == 0, device=like.device)] = (x == 0).to(like.dtype)
    return k


def _blur_batch(img: torch.Tensor, sigmas: np.ndarray, sigmas_cols: Optional[np.ndarray] = None) -> torch.Tensor:
    """:func:`_gaussian_blur` with one sigma per image of (B, H, W) (``sigmas`` down the rows and, when
    ``sigmas_cols`` is given, that one along them): zero-padded kernels of one common radius (reflect padding
    of that radius gives each kernel the same neighbours as its own radius would)."""
    sig_r = np.asarray(sigmas, dtype=float)
    sig_c = sig_r if sigmas_cols is None else np.asarray(sigmas_cols, dtype=float)
    both = np.concatenate([sig_r, sig_c])
    if not (both > 0.05).any():
        return img
    b, h, w = img.shape
    r = int(max(1, np.ceil(3 * both.max())))
    t = img[None]
    t = F.conv2d(F.pad(t, (r, r, 0, 0), mode="reflect"), _kernels(sig_c, r, img).view(b, 1, 1, -1), groups=b)
    t = F.conv2d(F.pad(t, (0, 0, r, r), mode="reflect"), _kernels(sig_r, r, img).view(b, 1, -1, 1), groups=b)
    return t[0]


def scanner_blur(images: torch.Tensor, sigma_rows, sigma_cols) -> torch.Tensor:
    """The scanner's point-spread function at the acquired matrix: a Gaussian blur, ``sigma_rows`` pixels down
    the rows and ``sigma_cols`` along them, the same for every leading index or one pair of sigmas per index of
    the first axis (arrays of length B).

    Real EPI, DWI and apodised 2-D scans are softer at their own matrix than a sharp image resampled to it (T2*
    decay along the phase-encoding axis, k-space filters).  Like the N/2 ghost and the noise it is part of the
    acquisition, so training applies it to a clean slice and to its moved twin alike: softness alone must not
    read as motion.

    Examples
    --------
    >>> img = torch.zeros(2, 9, 9); img[:, 4, 4] = 1.0
    >>> out = scanner_blur(img, np.array([1.0, 0.0]), np.array([0.0, 0.0]))
    >>> round(float(out[0].sum()), 4), float(out[1, 4, 4]), bool(out[0, 3, 4] > 0), float(out[0, 4, 3])
    (1.0, 1.0, True, 0.0)
    """
    lead = images.shape[:-2]
    flat = images.reshape(-1, *images.shape[-2:])
    per = int(np.prod(lead[1:]))  # images per index of the first axis (1 for (B, H, W) or (H, W))
    rows = np.broadcast_to(np.asarray(sigma_rows, dtype=float), lead[:1] if lead else (1,))
    cols = np.broadcast_to(np.asarray(sigma_cols, dtype=float), lead[:1] if lead else (1,))
    out = _blur_batch(flat, np.repeat(rows, per), np.repeat(cols, per))
    return out.reshape(images.shape)


def _upsample_corners(coarse: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``F.interpolate(coarse, (h, w), mode="bilinear", align_corners=True)`` as two small matrix products
    (4x faster on a CPU for the 6² and 24² grids used here; equal to float round-off)."""

    def weights(n_in: int, n_out: int) -> torch.Tensor:
        pos = torch.linspace(0, n_in - 1, n_out, dtype=torch.float64)
        i0 = pos.floor().clamp(max=max(n_in - 2, 0)).long()
        frac = pos - i0
        m = torch.zeros(n_out, n_in, dtype=torch.float64)
        m[torch.arange(n_out), i0] = 1 - frac
        if n_in > 1:
            m[torch.arange(n_out), i0 + 1] += frac
        return m.to(coarse.device, coarse.dtype)

    return weights(coarse.shape[-2], h) @ coarse @ weights(coarse.shape[-1], w).T


def _thick_slices(img: torch.Tensor, params: Sequence[SynthesisParams]) -> None:
    """Thick slices (40 % of the samples), in place on (B, H, W): averaged down along one axis and expanded
    back, as :func:`synthesize`.  On a GPU as one batched product per axis (each sample's down-and-up is an
    (H, H) or (W, W) matrix), on a CPU one sample at a time (twice as fast there as the products)."""
    b, h, w = img.shape
    thick = [k for k, p in enumerate(params) if p.thick_factor > 1.05]
    if not on_matmul_device(img.device):
        for k in thick:
            img[k] = F.interpolate(F.interpolate(img[k][None, None], size=_thick_size(params[k], h, w), mode="area"),
                                   size=(h, w), mode="bilinear", align_corners=False)[0, 0]
        return
    for axis, n in ((0, h), (1, w)):
        ks = [k for k in thick if params[k].thick_axis == axis]
        if ks:
            op = torch.stack([_thick_operator(n, _thick_size(params[k], h, w)[axis], str(img.device))
                              for k in ks])  # (K, n, n)
            img[ks] = op @ img[ks] if axis == 0 else img[ks] @ op.transpose(1, 2)


def _thick_size(p: SynthesisParams, h: int, w: int) -> Tuple[int, int]:
    """The (rows, columns) a thick slice of an (h, w) image is averaged down to: its thick axis divided by
    ``thick_factor``, at least 4."""
    if p.thick_axis == 0:
        return max(4, int(round(h / p.thick_factor))), w
    return h, max(4, int(round(w / p.thick_factor)))


@functools.lru_cache(maxsize=1024)
def _thick_operator(n: int, size: int, device: str) -> torch.Tensor:
    """(n, n) matrix of a thick slice along one axis: area average from ``n`` down to ``size`` samples, then
    bilinear back to ``n`` (a few hundred sizes occur; cached on the device, 256 KB each at n = 256)."""
    down = axis_operators([n], [size], [AREA], in_len=n, out_len=size, device=device)
    up = axis_operators([size], [n], [BILINEAR], in_len=size, out_len=n, device=device)
    return (up @ down)[0]


def synthesize_mixed(mixed: torch.Tensor, params: Sequence[SynthesisParams]) -> torch.Tensor:
    """Batched :func:`synthesize` (without noise) from pre-mixed stacks (B, 3, H, W) (see :func:`mix_weights`).

    Equals :func:`synthesize` slice by slice to float round-off (tested).  Written for few passes over
    memory (the factory's cost on a CPU is the number of full-size passes, not arithmetic): the sampling
    grid is one batched product of the displacement field plus an affine part that is an outer sum, only
    the template family warps three images (the others one), and the bias polynomial is in Horner form.
    """
    b, _, h, w = mixed.shape
    dev, dt = mixed.device, mixed.dtype

    def column(values):
        return torch.as_tensor(np.asarray(values, dtype=np.float32), device=dev)[:, None, None]

    rad = np.radians([p.rotation for p in params])
    cs, sn = column(np.cos(rad)), column(np.sin(rad))
    s0, s1 = column([p.scale[0] for p in params]), column([p.scale[1] for p in params])
    ys = ((2 * torch.arange(h, dtype=dt, device=dev) + 1) / h - 1)[None, :, None]
    xs = ((2 * torch.arange(w, dtype=dt, device=dev) + 1) / w - 1)[None, None, :]
    coarse = torch.as_tensor(np.stack([p.elastic for p in params]), dtype=dt, device=dev)
    disp = _upsample_corners(coarse, h, w)  # (B, 2, H, W) pixels
    # Deformed coordinates before the rotation (the bias field is a polynomial in them, as in synthesize).
    xx = torch.addcmul(xs / s1, disp[:, 1], torch.tensor(2.0 / w, dtype=dt, device=dev))
    yy = torch.addcmul(ys / s0, disp[:, 0], torch.tensor(2.0 / h, dtype=dt, device=dev))
    grid = torch.empty(b, h, w, 2, dtype=dt, device=dev)
    torch.addcmul(cs * xx, yy, -sn * (h / w), out=grid[..., 0])
    torch.addcmul(cs * yy, xx, sn * (w / h), out=grid[..., 1])
    # The flip and the transpose of the input (in that order in synthesize: transpose, then flip) are read
    # through the grid instead of copying the stacks: a flipped input sampled at x is the input sampled at -x,
    # a transposed one has its two coordinates swapped.
    flip = [k for k, p in enumerate(params) if p.flip]
    if flip:
        grid[flip, ..., 0] = -grid[flip, ..., 0]
    transpose = [k for k, p in enumerate(params) if p.transpose and h == w]
    if transpose:
        grid[transpose] = grid[transpose].flip(-1)
    template = [k for k, p in enumerate(params) if p.family == "template"]
    others = [k for k, p in enumerate(params) if p.family != "template"]
    img = torch.empty(b, h, w, dtype=dt, device=dev)
    if others:
        img[others] = F.grid_sample(mixed[others, :1], grid[others], mode="bilinear", padding_mode="zeros",
                                    align_corners=False)[:, 0]
    if template:
        a, brain, head = F.grid_sample(mixed[template], grid[template], mode="bilinear", padding_mode="zeros",
                                       align_corners=False).unbind(1)
        img[template] = a * brain.clamp(0, 1) + head * a.amax(dim=(1, 2), keepdim=True)
    amount = [p.texture_amount for p in params]
    texture = _upsample_corners(torch.as_tensor(np.stack([p.texture for p in params]), dtype=dt, device=dev), h, w)[:, 0]
    img.mul_(torch.addcmul(torch.ones((), dtype=dt, device=dev), texture, column(amount)))
    _thick_slices(img, params)
    sigmas = np.array([p.blur_sigma for p in params])
    blurred = np.flatnonzero(sigmas > 0.05)
    if blurred.size:
        img[blurred] = _blur_batch(img[blurred], sigmas[blurred])
    c = np.stack([p.bias for p in params]).astype(np.float32)
    # exp(c0 x + c1 y + c2 x y + c3 x² + c4 y²) = exp(x (c0 + c3 x + c2 y) + y (c1 + c4 y))
    poly = torch.addcmul(column(c[:, 0]), xx, column(c[:, 3]))
    poly.addcmul_(yy, column(c[:, 2])).mul_(xx)
    poly.addcmul_(torch.addcmul(column(c[:, 1]), yy, column(c[:, 4])), yy)
    return img.clamp_min_(0).mul_(poly.exp_())


def synthesize_batch(stacks: torch.Tensor, params: Sequence[SynthesisParams]) -> torch.Tensor:
    """Batched :func:`synthesize` without noise: tissue stacks (B, 6, H, W), one parameter set each → (B, H, W)."""
    mixed = torch.einsum("bkc,bchw->bkhw", mix_weights(params).to(stacks.device, torch.float32), stacks.float())
    return synthesize_mixed(mixed, params)
