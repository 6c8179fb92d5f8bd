"""The visual report of ``ssimquality score --report-dir``: one PNG per volume and an index page."""
from __future__ import annotations

import html
from pathlib import Path
from typing import List, Union

import numpy as np

from .scoring import VolumeScore


def volume_figure(path: Union[str, Path], array: np.ndarray, score: VolumeScore, out_png: Union[str, Path],
                  n_worst: int = 6) -> Path:
    """One PNG per volume: the worst slices with their scores, and the per-slice curve with thresholds."""
    from .figures import _pyplot
    from .labels import CLINICAL_GOOD, CLINICAL_SUFFICIENT
    from .slices import normalize

    plt = _pyplot()
    p = score.predicted
    order = [i for i in np.argsort(np.nan_to_num(p, nan=2.0)) if score.foreground[i]][:n_worst]
    cols = max(1, len(order))
    fig = plt.figure(figsize=(2.2 * max(cols, 4), 5.2))
    gs = fig.add_gridspec(2, max(cols, 4), height_ratios=[1.1, 1])
    moved = np.moveaxis(array, score.axis, 0)
    for c, i in enumerate(order):
        ax = fig.add_subplot(gs[0, c])
        ax.imshow(normalize(moved[i].astype(np.float32)), cmap="gray", origin="lower")
        colour = "#2e7d32" if p[i] >= CLINICAL_GOOD else ("#f9a825" if p[i] >= CLINICAL_SUFFICIENT else "#c62828")
        ax.set_title(f"slice {i}: {p[i]:.2f}", fontsize=9, color=colour)
        ax.axis("off")
    ax = fig.add_subplot(gs[1, :])
    xs = np.arange(len(p))
    ax.plot(xs, p, "o-", ms=3, lw=1, label="predicted SSIM")
    ax.axhspan(CLINICAL_GOOD, 1.0, color="#2e7d32", alpha=0.08)
    ax.axhspan(CLINICAL_SUFFICIENT, CLINICAL_GOOD, color="#f9a825", alpha=0.08)
    ax.axhspan(0, CLINICAL_SUFFICIENT, color="#c62828", alpha=0.08)
    ax.axhline(CLINICAL_GOOD, color="#2e7d32", ls="--", lw=0.8, label=f"good ≥ {CLINICAL_GOOD:.2f}")
    ax.axhline(CLINICAL_SUFFICIENT, color="#c62828", ls="--", lw=0.8, label=f"rescan < {CLINICAL_SUFFICIENT:.2f}")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(f"slice (axis {score.axis})")
    ax.set_ylabel("predicted SSIM")
    s = score.summary()
    ax.set_title(f"{Path(path).name}: mean {s['mean_predicted_ssim']:.3f}, min {s['min_predicted_ssim']:.3f} → {s['verdict']}",
                 fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(out_png, dpi=80)
    plt.close(fig)
    return Path(out_png)


def write_index(entries: List[dict], report_dir: Union[str, Path]) -> Path:
    """index.html listing volumes worst first, each with its PNG."""
    from .outputs import write_text

    entries = sorted(entries, key=lambda e: (np.nan_to_num(e["mean_predicted_ssim"], nan=2.0)))
    rows = []
    for e in entries:
        rows.append(
            f"<tr><td>{html.escape(e['file'])}</td><td>{e['mean_predicted_ssim']:.3f}</td>"
            f"<td>{e['min_predicted_ssim']:.3f}</td><td class='{e['verdict']}'>{e['verdict']}</td>"
            f"<td><a href='{html.escape(e['png'])}'><img src='{html.escape(e['png'])}' width='600'></a></td></tr>")
    doc = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>SSIMQuality report</title><style>"
           "body{font-family:sans-serif}td{padding:4px;vertical-align:top}.rescan{color:#c62828;font-weight:bold}"
           ".sufficient{color:#b28704}.good{color:#2e7d32}</style></head><body>"
           f"<h1>SSIMQuality report</h1><p>{len(entries)} volumes, worst first (mean predicted SSIM).</p>"
           "<table><tr><th>file</th><th>mean</th><th>min</th><th>verdict</th><th>slices</th></tr>"
           + "".join(rows) + "</table></body></html>\n")
    return write_text(Path(report_dir) / "index.html", doc, force=True)
