"""Figures people would rather look at than read (matplotlib, no display needed)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence, Union

import numpy as np

PathLike = Union[str, Path]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; works without a display
    import matplotlib.pyplot as plt

    return plt


def log_kspace(image: np.ndarray) -> np.ndarray:
    """Log-magnitude of the centred 2-D Fourier transform, for display (teaching)."""
    k = np.fft.fftshift(np.fft.fft2(np.asarray(image, dtype=np.float64)))
    return np.log1p(np.abs(k))


def corruption_panel(clean: np.ndarray, corrupted: Sequence[np.ndarray], labels: Sequence[str],
                     path: PathLike, title: str = "") -> Path:
    """One row per corrupted version: clean | corrupted | log k-space | difference.

    Images are shown as given (normalised slices in [0, 1] expected).
    """
    plt = _pyplot()
    n = len(corrupted)
    fig, axes = plt.subplots(n, 4, figsize=(11, 2.8 * n + 0.4), squeeze=False)
    for r, (img, lab) in enumerate(zip(corrupted, labels)):
        panels = [(clean, "clean", "gray", (0, 1)), (img, lab, "gray", (0, 1)),
                  (log_kspace(img), "log |k-space|", "magma", None),
                  (img - clean, "corrupted − clean", "coolwarm", (-0.5, 0.5))]
        for c, (data, name, cmap, lim) in enumerate(panels):
            ax = axes[r, c]
            kw = {} if lim is None else {"vmin": lim[0], "vmax": lim[1]}
            ax.imshow(data, cmap=cmap, origin="lower", **kw)
            ax.set_title(name, fontsize=9)
            ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def scored_volume_screenshot(array: np.ndarray, predicted: np.ndarray, axis: int, path: PathLike,
                             title: str = "", slice_index: int = -1) -> Path:
    """A 1280 × 720 picture of a scored volume: a slice with its per-slice curve overlaid.

    The curve of predicted SSIM (with the clinical bands) runs along the
    bottom of the image; the shown slice is marked on it.
    """
    from .labels import CLINICAL_GOOD, CLINICAL_SUFFICIENT
    from .slices import normalize

    plt = _pyplot()
    moved = np.moveaxis(np.asarray(array), axis, 0)
    p = np.asarray(predicted, dtype=float)
    if slice_index < 0:
        finite = np.where(np.isfinite(p))[0]
        slice_index = int(finite[np.argmin(p[finite])]) if finite.size else len(p) // 2
    fig = plt.figure(figsize=(12.8, 7.2), dpi=100, facecolor="black")
    ax = fig.add_axes([0, 0, 1, 1])
    ax.imshow(normalize(moved[slice_index].astype(np.float32)), cmap="gray", origin="lower", aspect="equal")
    ax.axis("off")
    curve = fig.add_axes([0.06, 0.06, 0.88, 0.26], facecolor=(0, 0, 0, 0.55))
    xs = np.arange(len(p))
    curve.axhspan(CLINICAL_GOOD, 1.0, color="#2e7d32", alpha=0.35)
    curve.axhspan(CLINICAL_SUFFICIENT, CLINICAL_GOOD, color="#f9a825", alpha=0.30)
    curve.axhspan(0.0, CLINICAL_SUFFICIENT, color="#c62828", alpha=0.30)
    curve.plot(xs, p, "-o", color="white", ms=3, lw=1.2)
    curve.axvline(slice_index, color="#4fc3f7", lw=2)
    curve.set_ylim(0, 1.02)
    curve.set_xlim(-0.5, len(p) - 0.5)
    curve.tick_params(colors="white", labelsize=9)
    for s in curve.spines.values():
        s.set_color("white")
    curve.set_ylabel("predicted SSIM", color="white")
    curve.set_xlabel("slice", color="white")
    label = f"slice {slice_index}: predicted SSIM {p[slice_index]:.2f}" if np.isfinite(p[slice_index]) else ""
    fig.text(0.02, 0.95, (title + "   " if title else "") + label, color="white", fontsize=14, va="top")
    out = Path(path)
    fig.savefig(out, dpi=100, facecolor="black")
    plt.close(fig)
    return out
