"""Reading back an output of ``ssimquality score`` so that ``--resume`` scores only what is missing."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import List, Union

from .batch import VolumeResult
from .results import summary_path


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
    try:
        if out.name.lower().endswith(".json"):
            doc = json.loads(out.read_text(encoding="utf-8"))
            done = [StoredResult(v["file"], {k: x for k, x in v.items() if k != "slice_scores"}, v["slice_scores"])
                    for v in doc["volumes"]]
            failed = [VolumeResult(e["file"], error=SSIMQualityError(e["error"])) for e in doc.get("errors", [])]
            return done + (failed if with_errors else [])
        rows = list(csv.DictReader(out.open(encoding="utf-8")))
        summaries = list(csv.DictReader(summary_path(out).open(encoding="utf-8")))
    except (OSError, ValueError, KeyError) as exc:
        raise UnreadableFileError(f"cannot read back this results file ({type(exc).__name__}: {exc})", str(out),
                                  "give a results file written by ssimquality score (or drop --resume)") from None
    by_file: dict = {}
    for r in rows:
        by_file.setdefault(r["file"], []).append(r)
    return [StoredResult(s["file"], s, by_file.get(s["file"], [])) for s in summaries]
