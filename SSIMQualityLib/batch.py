"""Batch scoring of many volumes: prefetching loader, one model, tables and a visual report.

Used by ``ssimquality score`` and the Slicer CLI module.  Reading and
decompressing the next volumes runs in background threads while the model
works on the current one; slices go to the model in batches; a bad file is
reported and skipped, never fatal to the batch.
"""
from __future__ import annotations

import csv
import html
import io
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence, Union

import numpy as np

from .errors import SSIMQualityError
from .scoring import VolumeScore

from .vocabulary import SLICE_COLUMNS, SUMMARY_COLUMNS


@dataclass
class VolumeResult:
    """The outcome for one input: a score, or the error that stopped it."""

    file: str
    score: Optional[VolumeScore] = None
    error: Optional[SSIMQualityError] = None
    extra: dict = field(default_factory=dict)
    array: Optional[np.ndarray] = None  # the voxels, kept only until the caller has drawn them

    def slice_rows(self) -> List[dict]:
        if self.score is None:
            return []
        return [{"file": self.file, **r} for r in self.score.rows()]

    def summary(self) -> dict:
        s = {"file": self.file, **self.score.summary()} if self.score is not None else {"file": self.file}
        s.update(self.extra)
        return s


def _read(path: Path, frame: Optional[int], series_uid: Optional[str] = None):
    from .volumes import read_volume

    try:
        return read_volume(path, frame=frame, series_uid=series_uid), None
    except SSIMQualityError as exc:
        return None, exc
    except Exception as exc:  # an unexpected reader failure is still one file's problem
        from .errors import UnreadableFileError

        return None, UnreadableFileError(f"could not be read ({type(exc).__name__}: {' '.join(str(exc).split())[:120]})",
                                         str(path), "check the file")


def _reader_pool(workers: int, processes: bool):
    """Where files are decoded: worker processes (``processes``), else background threads.

    Processes keep decompression and DICOM parsing off the interpreter that
    drives the device.  They are started by "spawn" (safe with CUDA and with
    torch's thread pools), which re-imports the caller's main module: only a
    program with a ``__main__`` guard (the ``ssimquality`` command) may ask
    for them; a script, a notebook or Slicer keeps threads.
    """
    if processes and workers >= 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        return ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"))
    return ThreadPoolExecutor(max_workers=max(1, workers))


def score_files(paths: Sequence[Union[str, Path]], model, device="cpu", batch_size: Optional[int] = None,
                axis: Optional[int] = None, workers: int = 2, frame: Optional[int] = None, bf16: bool = False,
                iqm: bool = False, series_uid: Optional[str] = None, progress: Optional[Callable[[int], None]] = None,
                on_volume: Optional[Callable[[VolumeResult], None]] = None,
                processes: bool = False) -> Iterator[VolumeResult]:
    """Score each file; yields one :class:`VolumeResult` per input in order.

    Up to ``workers`` volumes are read ahead and decoded in background threads,
    or worker processes with ``processes`` (:func:`_reader_pool`), while
    :func:`~SSIMQualityLib.scoring.score_volumes`
    fills network batches with slices of consecutive volumes.  With ``iqm`` the MRIQC metrics join each
    volume's summary.  ``frame`` picks the frame of 4-D files, ``series_uid``
    the series of DICOM folders holding several.
    """
    from .scoring import score_volumes

    paths = [Path(p) for p in paths]
    read: dict = {}  # index -> (volume or None, read error or None), until its result is out

    def volumes():
        with _reader_pool(workers, processes) as pool:
            pending = {}
            ahead = max(1, workers)

            def submit(i):
                if i < len(paths) and i not in pending:
                    pending[i] = pool.submit(_read, paths[i], frame, series_uid)

            for i in range(ahead):
                submit(i)
            for i in range(len(paths)):
                submit(i + ahead)
                vol, err = pending.pop(i).result()
                read[i] = (vol, err)
                yield (i, None, None, None) if err is not None else (i, vol.array, vol.spacing, axis)

    for i, outcome in score_volumes(volumes(), model, device=device, batch_size=batch_size, bf16=bf16,
                                    progress=progress):
        vol, err = read.pop(i)
        path = str(paths[i])
        if err is not None:
            result = VolumeResult(path, error=err)
        elif isinstance(outcome, SSIMQualityError):
            result = VolumeResult(path, error=outcome)
        else:
            result = VolumeResult(path, score=outcome, array=vol.array)
            if iqm:
                from .iqm import compute_iqms

                result.extra = compute_iqms(vol.array, direction=vol.direction).as_dict()
        if on_volume:
            on_volume(result)
        yield result


def rows_to_csv(rows: List[dict], columns: Sequence[str], delimiter: str = ",") -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n", delimiter=delimiter)
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6f}" if isinstance(v, float) and v == v else ("" if isinstance(v, float) else v))
                    for k, v in r.items()})
    return buf.getvalue()


def summary_path(output: Union[str, Path]) -> Path:
    """Where the per-volume summary of a CSV output goes: ``results.csv`` → ``results.summary.csv``."""
    p = Path(output)
    return p.with_name(p.name[: -len(".csv")] + ".summary.csv") if p.name.lower().endswith(".csv") else p


def write_results(results: List[VolumeResult], output: Union[str, Path], force: bool = False,
                  slice_columns: Sequence[str] = SLICE_COLUMNS, summary_columns: Sequence[str] = SUMMARY_COLUMNS) -> List[Path]:
    """Write results by extension: ``.json`` (one document) or ``.csv`` (slices + ``.summary.csv``), atomically."""
    from .outputs import write_text

    out = Path(output)
    done = [r for r in results if r.score is not None]
    if out.name.lower().endswith(".json"):
        doc = {"volumes": [{**r.summary(), "slice_scores": r.slice_rows()} for r in done],
               "errors": [{"file": r.file, "error": r.error.one_line()} for r in results if r.error is not None]}
        text = json.dumps(_nan_to_none(doc), indent=1, default=_json_default, allow_nan=False)
        return [write_text(out, text + "\n", force)]
    slices = [row for r in done for row in r.slice_rows()]
    a = write_text(out, rows_to_csv(slices, slice_columns), force)
    b = write_text(summary_path(out), rows_to_csv([r.summary() for r in done], summary_columns), force)
    return [a, b]


def _nan_to_none(o):
    """JSON has no NaN: unscored values become null."""
    if isinstance(o, dict):
        return {k: _nan_to_none(v) for k, v in o.items()}
    if isinstance(o, list):
        return [_nan_to_none(v) for v in o]
    if isinstance(o, (float, np.floating)) and o != o:
        return None
    return o


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.bool_):
        return bool(o)
    raise TypeError(type(o))


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


def write_table(rows: List[dict], columns: Sequence[str], path: Union[str, Path], force: bool = False) -> Path:
    """A table of ``rows``: tab-separated for ``.tsv`` (what Slicer's table storage reads), else CSV."""
    from .outputs import write_text

    delimiter = "\t" if str(path).lower().endswith(".tsv") else ","
    return write_text(path, rows_to_csv(rows, columns, delimiter), force)


def write_slice_table(result: VolumeResult, path: Union[str, Path], force: bool = False) -> Path:
    """One volume's per-slice table (no file column); tab-separated for ``.tsv``, else CSV."""
    return write_table(result.slice_rows(), [c for c in SLICE_COLUMNS if c != "file"], path, force)


class StoredResult(VolumeResult):
    """A volume's result read back from an earlier output (for ``--resume``)."""

    def __init__(self, file: str, summary: dict, rows: List[dict]):
        super().__init__(file)
        self._summary = summary
        self._rows = rows
        self.score = True  # counts as scored

    def slice_rows(self) -> List[dict]:
        return self._rows

    def summary(self) -> dict:
        return self._summary


def load_results(output: Union[str, Path]) -> List[StoredResult]:
    """Results already in an output written by :func:`write_results` (CSV + summary, or JSON)."""
    from .errors import UnreadableFileError

    out = Path(output)
    try:
        if out.name.lower().endswith(".json"):
            doc = json.loads(out.read_text(encoding="utf-8"))
            return [StoredResult(v["file"], {k: x for k, x in v.items() if k != "slice_scores"}, v["slice_scores"])
                    for v in doc["volumes"]]
        rows = list(csv.DictReader(out.open(encoding="utf-8")))
        summaries = list(csv.DictReader(summary_path(out).open(encoding="utf-8")))
    except (OSError, ValueError, KeyError) as exc:
        raise UnreadableFileError(f"cannot resume from this file ({type(exc).__name__}: {exc})", str(out),
                                  "resume only from a results file written by ssimquality score, or drop --resume") from None
    by_file: dict = {}
    for r in rows:
        by_file.setdefault(r["file"], []).append(r)
    return [StoredResult(s["file"], s, by_file.get(s["file"], [])) for s in summaries]


def shard(paths: Sequence, part: int, parts: int) -> list:
    """Part ``part`` (1-based) of ``parts`` of a list of volumes: contiguous blocks, sizes differing by at most one.

    Contiguous, so that the parts joined in order (:func:`merge_results`) list the
    volumes exactly as one process would.

    Examples
    --------
    >>> [shard(list("abcde"), k, 2) for k in (1, 2)]
    [['a', 'b', 'c'], ['d', 'e']]
    """
    if not 1 <= part <= parts:
        raise SSIMQualityError(f"shard {part}/{parts} does not exist", "--shard", "give K/N with 1 <= K <= N")
    n = len(paths)
    start, stop = -((-n * (part - 1)) // parts), -((-n * part) // parts)  # ceilings: larger blocks first
    return list(paths[start:stop])


def merge_results(parts: Sequence[Union[str, Path]], output: Union[str, Path], force: bool = False) -> List[Path]:
    """Join the outputs of several ``ssimquality score`` runs (shards), in the order given, into one output.

    All parts and the output have one format (``.csv`` with its ``.summary.csv``, or ``.json``).  A
    volume found in two parts is refused: the parts overlap.
    """
    from .errors import UnreadableFileError
    from .outputs import write_text

    out = Path(output)
    kinds = {Path(p).name.lower().endswith(".json") for p in parts} | {out.name.lower().endswith(".json")}
    if len(kinds) != 1:
        raise SSIMQualityError("parts and output must all be .csv or all be .json", str(out), "use one format")
    seen: dict = {}
    if out.name.lower().endswith(".json"):
        volumes, errors = [], []
        for p in parts:
            try:
                doc = json.loads(Path(p).read_text(encoding="utf-8"))
                volumes_p, errors_p = doc["volumes"], doc.get("errors", [])
            except (OSError, ValueError, KeyError) as exc:
                raise UnreadableFileError(f"not a results file of ssimquality score ({type(exc).__name__})", str(p),
                                          "give the files the shards wrote with -o") from None
            for v in volumes_p:
                if v["file"] in seen:
                    raise SSIMQualityError(f"{v['file']} is in two parts ({seen[v['file']]} and {p})", str(p),
                                           "merge parts of one sharded run only")
                seen[v["file"]] = p
            volumes += volumes_p
            errors += errors_p
        text = json.dumps({"volumes": volumes, "errors": errors}, indent=1, allow_nan=False)
        return [write_text(out, text + "\n", force)]
    results, columns = [], None
    for p in parts:
        for r in load_results(p):
            if r.file in seen:
                raise SSIMQualityError(f"{r.file} is in two parts ({seen[r.file]} and {p})", str(p),
                                       "merge parts of one sharded run only")
            seen[r.file] = p
            results.append(r)
        if columns is None:
            with summary_path(p).open(encoding="utf-8") as fh:
                columns = next(csv.reader(fh), SUMMARY_COLUMNS)
    return write_results(results, out, force=force, summary_columns=columns or SUMMARY_COLUMNS)
