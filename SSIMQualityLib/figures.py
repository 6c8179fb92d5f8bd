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
