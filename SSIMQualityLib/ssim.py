"""Batched SSIM on torch tensors, equal to scikit-image's defaults.

``skimage.metrics.structural_similarity(x, y, data_range=1)`` uses a 7 × 7
uniform window, K1 = 0.01, K2 = 0.03, the sample covariance (N / (N − 1)) and
averages the SSIM map after cropping (7 − 1) / 2 pixels from every border.
A "valid" box filter gives that cropped map directly, so no border handling
is needed.

Speed notes (measured on a 2-core CPU): ``avg_pool2d`` with a 7 × 1 kernel is
an order of magnitude slower than summing shifted views, so the window sums
are built from shifted views by doubling (sums of 1, 2, 4 samples, combined
into 7).  The five local moments of SSIM are reduced to four by working on
``s = x + y`` and ``d = x − y``::

    ux² + uy² = (us² + ud²) / 2        2 ux uy  = (us² − ud²) / 2
    E[x²] + E[y²] = (E[s²] + E[d²]) / 2   2 E[xy] = (E[s²] − E[d²]) / 2

Batches are processed in chunks that stay in cache.
"""
from __future__ import annotations

import numpy as np
import torch

WIN_SIZE = 7
K1 = 0.01
K2 = 0.03
_CHUNK = 2  # pairs per pass: keeps the intermediates in the CPU cache (measured best on 2 cores)


def window_sum(x: torch.Tensor, win: int, dim: int) -> torch.Tensor:
    """Sum over every run of ``win`` consecutive samples along ``dim`` ("valid").

    The result is ``win − 1`` shorter than ``x`` along ``dim``.
    """
    out_len = x.shape[dim] - win + 1
    if out_len < 1:
        raise ValueError(f"dimension {dim} of size {x.shape[dim]} is shorter than the window {win}")
    # Binary decomposition of win: block holds sums of `size` samples.
    total = None
    block, size, offset, remaining = x, 1, 0, win
    while remaining:
        if remaining & 1:
            piece = block.narrow(dim, offset, out_len)
            total = piece.clone() if total is None else total.add_(piece)
            offset += size
        remaining >>= 1
        if remaining:
            m = block.shape[dim] - size
            block = block.narrow(dim, 0, m) + block.narrow(dim, size, m)
            size *= 2
    return total


def _ssim_chunk(x: torch.Tensor, y: torch.Tensor, data_range: float, win: int, reduce: bool) -> torch.Tensor:
    s = x + y
    d = x - y
    m = torch.stack([s, d, s * s, d * d], dim=-3)
    m = window_sum(window_sum(m, win, -1), win, -2) / float(win * win)
    us, ud, ess, edd = m.unbind(-3)
    cov_norm = win * win / (win * win - 1.0)
    c1 = (K1 * data_range) ** 2
    c2 = (K2 * data_range) ** 2
    us2 = us * us
    ud2 = ud * ud
    num = (0.5 * (us2 - ud2) + c1) * (0.5 * cov_norm * ((ess - edd) - (us2 - ud2)) + c2)
    den = (0.5 * (us2 + ud2) + c1) * (0.5 * cov_norm * ((ess + edd) - (us2 + ud2)) + c2)
    smap = num / den
    return smap.mean(dim=(-2, -1)) if reduce else smap


def _check(x: torch.Tensor, y: torch.Tensor, win: int) -> None:
    if x.shape != y.shape:
        raise ValueError(f"images must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.ndim < 2 or min(x.shape[-2:]) < win:
        raise ValueError(f"images must be at least {win} x {win}, got {tuple(x.shape)}")
    if win % 2 != 1:
        raise ValueError(f"win_size must be odd, got {win}")


def _run(x: torch.Tensor, y: torch.Tensor, data_range: float, win: int, reduce: bool) -> torch.Tensor:
    _check(x, y, win)
    if not x.is_floating_point():
        x = x.float()
    if not y.is_floating_point():
        y = y.float()
    lead = x.shape[:-2]
    h, w = x.shape[-2:]
    xf = x.reshape(-1, h, w)
    yf = y.reshape(-1, h, w)
    # On a GPU one pass over the whole batch: small chunks there only multiply kernel launches.
    chunk = _CHUNK if xf.device.type == "cpu" else max(1, xf.shape[0])
    out = [_ssim_chunk(xf[i:i + chunk], yf[i:i + chunk], data_range, win, reduce) for i in range(0, xf.shape[0], chunk)]
    res = torch.cat(out) if out else xf.new_zeros((0,) if reduce else (0, h - win + 1, w - win + 1))
    return res.reshape(tuple(lead) + tuple(res.shape[1:]))


def ssim_map(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, win_size: int = WIN_SIZE) -> torch.Tensor:
    """Local SSIM of every valid window, shape (..., H − win + 1, W − win + 1)."""
    return _run(x, y, data_range, win_size, reduce=False)


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, win_size: int = WIN_SIZE) -> torch.Tensor:
    """Mean SSIM of each pair of images.

    Parameters
    ----------
    x, y : Tensor, shape (..., H, W)
        Images of equal shape; any leading dimensions are batch dimensions.
        Under the project's convention both are normalised slices in [0, 1].
    data_range : float
        Dynamic range of the images (1 for normalised slices).
    win_size : int
        Side of the uniform window (odd; scikit-image's default is 7).

    Returns
    -------
    Tensor, shape (...)
        SSIM per image pair, in [−1, 1]; 1 for identical images.

    References
    ----------
    Wang, Bovik, Sheikh, Simoncelli (2004). Image quality assessment: from
    error visibility to structural similarity. IEEE TIP 13(4).

    Examples
    --------
    >>> a = torch.rand(4, 64, 64)
    >>> bool(torch.allclose(ssim(a, a), torch.ones(4)))
    True
    """
    return _run(x, y, data_range, win_size, reduce=True)


def ssim_numpy(x: np.ndarray, y: np.ndarray, data_range: float = 1.0) -> float:
    """SSIM of two 2-D numpy arrays, computed in float64 through :func:`ssim`."""
    tx = torch.as_tensor(np.asarray(x, dtype=np.float64))
    ty = torch.as_tensor(np.asarray(y, dtype=np.float64))
    return float(ssim(tx, ty, data_range))
