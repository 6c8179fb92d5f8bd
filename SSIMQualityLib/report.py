"""The visual report of ``ssimquality score --report-dir``: one PNG per volume and an index page."""
from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np

from .scoring import VolumeScore


def volume_figure(path: Union[str, Path], array: np.ndarray, score: VolumeScore, out_png: Union[str, Path],
                  n_worst: int = 6, *, direction: Optional[Sequence[float]] = None) -> Path:
    """One PNG per volume: the worst slices with their scores, and the per-slice curve with thresholds.
    ``direction`` (the volume's) turns the slices as a viewer shows them
    (:func:`~SSIMQualityLib.orientation.display_slice`)."""
    from .figures import _pyplot, integer_ticks
    from .orientation import display_slice
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
        ax.imshow(display_slice(normalize(moved[i].astype(np.float32)), direction=direction, axis=score.axis),
                  cmap="gray")
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
    ax.xaxis.set_major_locator(integer_ticks())
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


#: The index's entries as data, beside index.html: a resumed run lists the volumes scored before it.
INDEX_DATA = "index.json"
_FIGURE = re.compile(r"^(\d{4,})_.*\.png$")


def _number(value) -> float:
    """A summary value as a float (a CSV's summary holds text; an empty field is NaN)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def write_index(entries: List[dict], report_dir: Union[str, Path]) -> Path:
    """index.html listing volumes worst first, each with its PNG (an entry whose ``png`` is None has none), and
    :data:`INDEX_DATA` with the same entries."""
    from .outputs import json_text, write_text

    entries = sorted(entries, key=lambda e: np.nan_to_num(_number(e["mean_predicted_ssim"]), nan=2.0))
    rows = []
    for e in entries:
        figure = (f"<a href='{html.escape(e['png'])}'><img src='{html.escape(e['png'])}' width='600'></a>"
                  if e.get("png") else "no figure here (scored by an earlier run that did not draw it into this folder)")
        note = f"<br><small class='note'>{html.escape(e['note'])}</small>" if e.get("note") else ""
        rows.append(
            f"<tr><td>{html.escape(e['file'])}</td><td>{_number(e['mean_predicted_ssim']):.3f}</td>"
            f"<td>{_number(e['min_predicted_ssim']):.3f}</td><td class='{html.escape(e['verdict'])}'>"
            f"{html.escape(e['verdict'])}{note}</td><td>{figure}</td></tr>")
    doc = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>SSIMQuality report</title><style>"
           "body{font-family:sans-serif}td{padding:4px;vertical-align:top}.rescan{color:#c62828;font-weight:bold}"
           ".sufficient{color:#b28704}.good{color:#2e7d32}</style></head><body>"
           f"<h1>SSIMQuality report</h1><p>{len(entries)} volumes, worst first (mean predicted SSIM).</p>"
           "<table><tr><th>file</th><th>mean</th><th>min</th><th>verdict</th><th>slices</th></tr>"
           + "".join(rows) + "</table></body></html>\n")
    write_text(Path(report_dir) / INDEX_DATA, json_text(entries), force=True)
    return write_text(Path(report_dir) / "index.html", doc, force=True)


def read_index(report_dir: Union[str, Path]) -> List[dict]:
    """The entries :func:`write_index` kept in ``report_dir`` ([] where there are none: a new folder, or one
    written before the entries were kept)."""
    from .errors import UnreadableFileError

    path = Path(report_dir) / INDEX_DATA
    if not path.exists():
        return []
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
        if not all(isinstance(e, dict) and {"file", "png"} <= set(e) for e in entries):
            raise ValueError("an entry without file or png")
    except (OSError, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise UnreadableFileError(f"cannot read the report's index ({type(exc).__name__}: {exc})", str(path),
                                  "remove it (the index then lists earlier volumes without their figures)") from None
    return entries


class ReportFolder:
    """The ``--report-dir`` of a score run: one figure per volume and the index of them all.

    A resumed run carries the entries of the volumes its results already hold (``carried``: their summaries;
    figures found through :data:`INDEX_DATA`), and numbers its figures on from the highest already in the
    folder, so that no figure there is overwritten (two volumes may share a name in different folders).

    Examples
    --------
    >>> import tempfile
    >>> report = ReportFolder(tempfile.mkdtemp())
    >>> report.figure_path("scans/sub-01/t1.nii.gz").name, report.figure_path("scans/sub-02/t1.nii.gz").name
    ('0000_t1.png', '0001_t1.png')
    """

    def __init__(self, folder: Union[str, Path], *, carried: Sequence[dict] = ()):
        self.folder = Path(folder)
        # A new run replaces the report (the caller asked --force): the figures the earlier index named go when
        # this run writes its own (they stayed beside the new ones, numbered on); any other file is the user's.
        # Not before: a run that stops early or scores nothing must leave the earlier report whole.
        self._stale: List[str] = [] if carried else self._indexed_figures()
        numbers = [int(m.group(1)) for m in map(_FIGURE.match, (p.name for p in self.folder.glob("*.png")
                                                                 if p.name not in self._stale)) if m]
        self._next = max(numbers, default=-1) + 1
        if carried:
            # The results' own summary (an index may be older than the results: a run stopped before it wrote its
            # index, then a --force run), and the figure the index names for that volume if it is still there.
            kept = {e["file"]: e["png"] for e in read_index(self.folder)
                    if e["png"] and (self.folder / e["png"]).is_file()}
            self.entries = [{**summary, "png": kept.get(summary["file"])} for summary in carried]
        else:  # a new run: its first write replaces the earlier index (results and index are saved together)
            self.entries = []

    def figure_path(self, file: str) -> Path:
        """The next figure's path for the volume ``file`` (numbered, then the file's name without extensions)."""
        path = self.folder / f"{self._next:04d}_{Path(file).name.split('.')[0]}.png"
        self._next += 1
        return path

    def add(self, file: str, array: np.ndarray, score: VolumeScore, summary: dict,
            direction: Optional[Sequence[float]] = None) -> Path:
        """Draw the volume's figure (its slices turned by ``direction``, the volume's) and list it."""
        png = volume_figure(file, array, score, self.figure_path(file), direction=direction)
        self.entries.append({**summary, "png": png.name})
        return png

    def _indexed_figures(self) -> List[str]:
        """The figures the folder's index names (plain numbered file names only; an unreadable index: none)."""
        from .errors import SSIMQualityError

        try:
            old = read_index(self.folder)
        except SSIMQualityError:
            return []
        return [e["png"] for e in old if e.get("png") and Path(e["png"]).name == e["png"] and _FIGURE.match(e["png"])]

    def write(self) -> Path:
        """Write index.html (and its data); returns its path.  The first write of a new run removes the figures
        of the report it replaces (those not redrawn under the same name by this run)."""
        mine = {e.get("png") for e in self.entries}
        for png in self._stale:
            if png not in mine and (self.folder / png).is_file():
                (self.folder / png).unlink()
        self._stale = []
        return write_index(self.entries, self.folder)
