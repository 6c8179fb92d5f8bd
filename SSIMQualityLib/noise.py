"""The project's label on real scans: move the anatomy, keep the acquisition noise (DESIGN §1).

A real slice already carries its scanner's noise.  Moving the whole slice
would move that noise with the head, and the SSIM against the unmoved slice
would then also measure noise decorrelation, which no reader calls an
artefact.  So a real slice is split into a denoised part and a residual; only
the denoised part is moved, and the same residual is added back to both
images.  With no motion, the corrupted slice is the acquired slice exactly.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch


def split_noise(image: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Split one 2-D slice into (denoised, residual) with ``denoised + residual == image``.

    Denoising is scikit-image's non-local means (fast mode, 5 × 5 patches,
    search distance 6) with ``h = 0.8 σ`` and σ from :func:`noise_sigma`.
    The split is exact by construction, whatever the denoiser leaves.

    Parameters
    ----------
    image : ndarray (H, W)
        Raw intensities of one slice.

    Returns
    -------
    denoised, residual : ndarray (H, W), float32

    Examples
    --------
    >>> img = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    >>> d, r = split_noise(img)
    >>> bool(np.allclose(d + r, img, atol=1e-5))
    True
    """
    from skimage.restoration import denoise_nl_means

    a = np.asarray(image, dtype=np.float32)
    scale = float(np.percentile(a, 99.5)) if a.size else 0.0
    if scale <= 0 or min(a.shape) < 8:
        return a.copy(), np.zeros_like(a)
    x = (a / scale).astype(np.float64)
    sigma = noise_sigma(x)
    if not np.isfinite(sigma) or sigma <= 1e-6:
        return a.copy(), np.zeros_like(a)
    den = denoise_nl_means(x, patch_size=5, patch_distance=6, h=0.8 * sigma, sigma=sigma, fast_mode=True)
    denoised = (den * scale).astype(np.float32)
    return denoised, (a - denoised).astype(np.float32)


def noise_sigma(image: np.ndarray) -> float:
    """Gaussian noise σ of a 2-D image: median absolute Haar diagonal detail / 0.6745 (Donoho's estimator).

    The finest diagonal wavelet band holds almost only noise in MR images;
    the median makes edges count little.  (scikit-image's ``estimate_sigma``
    computes the same with Daubechies wavelets but needs PyWavelets.)

    Examples
    --------
    >>> x = np.random.default_rng(0).normal(0, 2.0, (256, 256))
    >>> round(noise_sigma(x), 1)
    2.0
    """
    a = np.asarray(image, dtype=np.float64)
    h, w = (a.shape[0] // 2) * 2, (a.shape[1] // 2) * 2
    a = a[:h, :w]
    d = (a[0::2, 0::2] - a[1::2, 0::2] - a[0::2, 1::2] + a[1::2, 1::2]) / 2.0
    return float(np.median(np.abs(d)) / 0.6745) if d.size else 0.0


def move_anatomy(image: np.ndarray, transform, split=None) -> np.ndarray:
    """``image`` corrupted by ``transform`` under the project's definition (noise held fixed).

    One slice of :func:`move_anatomy_batch`.

    Parameters
    ----------
    image : ndarray (H, W)
    transform : KSpaceMotion or TorchioMotion
    split : (denoised, residual), optional
        A precomputed :func:`split_noise` of ``image``.

    Returns
    -------
    ndarray (H, W) float32: moved denoised part plus the unmoved residual,
    clipped at zero (magnitude images are non-negative).
    """
    splits = None if split is None else [split]
    return move_anatomy_batch(np.asarray(image)[None], [transform], splits)[0]


def move_anatomy_batch(images: np.ndarray, transforms: Sequence, splits: Optional[Sequence] = None,
                       device: Union[str, torch.device] = "cpu") -> np.ndarray:
    """The noise-fixed corruption of a batch of slices, the motion batched on ``device``.

    Parameters
    ----------
    images : ndarray (B, H, W)
    transforms : sequence of KSpaceMotion or TorchioMotion, one per slice
    splits : sequence of (denoised, residual), optional
        Precomputed :func:`split_noise` of each slice (computed here when None).
    device : str or torch.device

    Returns
    -------
    ndarray (B, H, W) float32.  Slices whose transform is the identity come
    back bit-identical.
    """
    from .motion import apply_motion_batch

    host = np.asarray(images, dtype=np.float32)
    out = host.copy()
    moving = [i for i, t in enumerate(transforms) if not _is_identity(t)]
    if not moving:
        return out
    parts = [splits[i] if splits is not None else split_noise(host[i]) for i in moving]
    denoised = torch.as_tensor(np.stack([p[0] for p in parts])).to(device)
    moved = apply_motion_batch(denoised, [transforms[i] for i in moving]).cpu().numpy()
    for k, i in enumerate(moving):
        out[i] = np.maximum(moved[k] + parts[k][1], 0.0)
    return out


def _is_identity(transform) -> bool:
    from .motion import KSpaceMotion

    if isinstance(transform, KSpaceMotion):
        return not transform.degrees or all(s < 0 for s in transform.sources)
    return not transform.degrees
