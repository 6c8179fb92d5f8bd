"""Reading back an output of ``ssimquality score`` so that ``--resume`` scores only what is missing."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import List, Union

from .batch import VolumeResult
from .results import RESULTS_SUFFIXES, summary_path
from .vocabulary import COLUMN_TYPES, SLICE_COLUMNS, SUMMARY_COLUMNS, VERDICT_NOT_SCORED

#: The columns of the slice rows and of the summary that make a CSV a results file (the vocabulary's names; an
#: earlier version's output with fewer columns still reads back).
_IDENTIFYING = ([c for c in SLICE_COLUMNS if c in ("file", "predicted_ssim")],
                [c for c in SUMMARY_COLUMNS if c in ("file", "mean_predicted_ssim")])
assert all(len(c) == 2 for c in _IDENTIFYING), "a results column was renamed: update _IDENTIFYING"


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


def load_results(output: Union[str, Path], *, with_errors: bool = False) -> List[VolumeResult]:
    """Results already in an output written by :func:`~SSIMQualityLib.results.write_results` (CSV + summary,
    or JSON): one :class:`StoredResult` per scored volume and, with ``with_errors``, one result per file a
    JSON output lists as failed (``--resume`` leaves them out: it tries them again)."""
    from .errors import SSIMQualityError, UnreadableFileError

    out = Path(output)
    hint = "give a results file that ssimquality score wrote (a .json, or a .csv with its .summary.csv beside it)"
    name = out.name.lower()
    if name.endswith(".summary.csv"):
        raise UnreadableFileError("is the summary half of a CSV output", str(out),
                                  f"give its results file, {out.name[:-len('.summary.csv')]}.csv (the summary is read "
                                  "from beside it)")
    if not name.endswith(RESULTS_SUFFIXES):
        raise UnreadableFileError("is not a results file (.csv or .json)", str(out), hint)
    try:
        if name.endswith(".json"):
            doc = json.loads(out.read_text(encoding="utf-8"))
            done = [StoredResult(v["file"], {k: x for k, x in v.items() if k != "slice_scores"}, v["slice_scores"])
                    for v in doc["volumes"]]
            failed = [VolumeResult(e["file"], error=SSIMQualityError(e["error"])) for e in doc.get("errors", [])]
            return done + (failed if with_errors else [])
        rows = _read_table(out, _IDENTIFYING[0], hint)
        summaries = _read_table(summary_path(out), _IDENTIFYING[1], hint)
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise UnreadableFileError(f"cannot read back this results file ({type(exc).__name__}: {exc})", str(out),
                                  hint) from None
    by_file: dict = {}
    for r in rows:
        by_file.setdefault(r["file"], []).append(r)
    # A "not scored" row is a failure (a --resume tries it again), as a JSON output's errors are.
    failed = [VolumeResult(s["file"], error=SSIMQualityError(s.get("note") or "not scored"))
              for s in summaries if s.get("verdict") == VERDICT_NOT_SCORED]
    done = [StoredResult(s["file"], _typed(s), by_file.get(s["file"], []))
            for s in summaries if s.get("verdict") != VERDICT_NOT_SCORED]
    return done + (failed if with_errors else [])


def _typed(row: dict) -> dict:
    """A CSV summary row with its numbers as numbers (:data:`~SSIMQualityLib.vocabulary.COLUMN_TYPES`; an
    empty field: NaN), as a JSON output and a new result hold them: a resumed report's index.json mixed "0.94"
    with 0.94."""
    out = dict(row)
    for k, v in row.items():
        kind = COLUMN_TYPES.get(k)
        if kind is None or not isinstance(v, str):
            continue
        try:
            out[k] = int(v) if kind == "int" else float(v)
        except ValueError:
            out[k] = float("nan") if v == "" else v
    return out


def _read_table(path: Path, required: List[str], hint: str) -> List[dict]:
    """The rows of one CSV half of a results output, refused without the ``required`` columns (another CSV would
    read as rows with no volume's file and score)."""
    from .errors import UnreadableFileError

    with path.open(encoding="utf-8") as fh:
        table = csv.DictReader(fh)
        rows = list(table)
        missing = [c for c in required if c not in (table.fieldnames or [])]
    if missing:
        raise UnreadableFileError(f"is not a results file of ssimquality score (no column {', '.join(missing)})",
                                  str(path), hint)
    return rows
