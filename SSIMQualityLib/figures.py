"""Figures people would rather look at than read (matplotlib, no display needed)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from .orientation import display_slice  # noqa: F401  (figures draw slices with it; its home is orientation)

PathLike = Union[str, Path]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; works without a display
    import matplotlib.pyplot as plt

    return plt


def integer_ticks():
    """A tick locator for slice numbers (matplotlib's default put ticks at slice 2.5 on short volumes)."""
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def log_kspace(image: np.ndarray) -> np.ndarray:
    """Log-magnitude of the centred 2-D Fourier transform, for display (teaching)."""
    k = np.fft.fftshift(np.fft.fft2(np.asarray(image, dtype=np.float64)))
    return np.log1p(np.abs(k))


def corruption_panel(clean: np.ndarray, corrupted: Sequence[np.ndarray], labels: Sequence[str],
                     path: PathLike, title: str = "", *, clean_label: str = "clean") -> Path:
    """What motion does to a slice, for teaching: the clean slice and its k-space on the first row, then one
    row per corrupted version: the image | its log k-space | corrupted − clean, with a colour bar.

    Images are drawn as given, row 0 at the top (turn slices of a volume with :func:`display_slice` first),
    normalised slices in [0, 1] expected (what the SSIM label compares).  Every k-space panel shares the clean
    one's colour scale, so that rows compare; each difference has its own symmetric scale, so that mild
    motion is still visible.
    """
    if len(labels) != len(corrupted):  # fewer labels left rows unlabelled; more were dropped, both silently
        from .errors import BadParameterError

        raise BadParameterError(f"{len(corrupted)} corrupted images and {len(labels)} labels: give one label each")
    plt = _pyplot()
    n = len(corrupted)
    clean = np.asarray(clean, dtype=float)
    k_clean = log_kspace(clean)
    k_lim = (float(k_clean.min()), float(k_clean.max()))
    fig, axes = plt.subplots(n + 1, 3, figsize=(9.6, 2.9 * (n + 1) + 0.4), squeeze=False)
    rows = [(clean, clean_label, None)] + [(np.asarray(img, dtype=float), lab, np.asarray(img, dtype=float) - clean)
                                           for img, lab in zip(corrupted, labels)]
    for r, (img, lab, diff) in enumerate(rows):
        ax = axes[r]
        ax[0].imshow(img, cmap="gray", vmin=0, vmax=1)
        ax[0].set_title(lab, fontsize=9)
        ax[1].imshow(log_kspace(img), cmap="magma", vmin=k_lim[0], vmax=k_lim[1])
        ax[1].set_title("log |k-space|", fontsize=9)
        if diff is None:
            ax[2].text(0.5, 0.5, "rows below: the corrupted slice,\nits k-space (the clean one's scale)\n"
                                 "and corrupted − clean\n(each slice scaled to its own\n99.5th percentile, "
                                 "as the SSIM\nlabel compares them)", ha="center", va="center", fontsize=8,
                       transform=ax[2].transAxes)
        else:
            # The 99.5th percentile of |difference|, not ±0.5: at mild motion 99 % of pixels move by < 0.04.
            lim = max(float(np.percentile(np.abs(diff), 99.5)), 1e-3)
            im = ax[2].imshow(diff, cmap="coolwarm", vmin=-lim, vmax=lim)
            ax[2].set_title("corrupted − clean", fontsize=9)
            fig.colorbar(im, ax=ax[2], fraction=0.046, pad=0.04).ax.tick_params(labelsize=7)
        for a in ax:
            a.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def scored_volume_screenshot(array: np.ndarray, predicted: np.ndarray, axis: int, path: PathLike,
                             title: str = "", slice_index: int = -1, *,
                             direction: Optional[Sequence[float]] = None) -> Path:
    """A 1280 × 720 picture of a scored volume: a slice with its per-slice curve overlaid.

    The curve of predicted SSIM (with the clinical bands) runs along the
    bottom of the image; the shown slice is marked on it.  ``direction`` (the volume's) turns the slice as a
    viewer shows it (:func:`display_slice`).
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
    ax.imshow(display_slice(normalize(moved[slice_index].astype(np.float32)), direction=direction, axis=axis),
              cmap="gray", aspect="equal")
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
    curve.xaxis.set_major_locator(integer_ticks())
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
