"""Result tables of ``ssimquality score``: CSV (per slice, plus the per-volume summary) or JSON, written
atomically; and the join of sharded runs' outputs (``ssimquality merge``)."""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Dict, List, NamedTuple, Sequence, Union

from .batch import VolumeResult
from .errors import SSIMQualityError
from .vocabulary import COLUMN_TYPES, SLICE_COLUMNS, SUMMARY_COLUMNS


#: The formats of a results file, by its name's ending.
RESULTS_SUFFIXES = (".csv", ".json")


def check_results_name(output: Union[str, Path]) -> None:
    """Refuse, in one line, a results name that is a folder or has no results format (before any work)."""
    p = Path(output)
    if p.is_dir():  # "unknown results format" said nothing of the real mistake
        raise SSIMQualityError("is a folder, not a results file", str(output),
                               f"give a file in it, e.g. {p / 'results.csv'}")
    if not p.name.lower().endswith(RESULTS_SUFFIXES):
        raise SSIMQualityError("unknown results format", str(output),
                               f"end the name with {' or '.join(RESULTS_SUFFIXES)}")


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


def ensure_results_writable(output: Union[str, Path], force: bool = False) -> None:
    """Refuse, before any work, to overwrite an existing results file (and, for CSV, its summary) without
    ``force``."""
    from .outputs import ensure_writable

    ensure_writable(output, force)
    if str(output).lower().endswith(".csv"):
        ensure_writable(summary_path(output), force)


def write_results(results: List[VolumeResult], output: Union[str, Path], force: bool = False,
                  slice_columns: Sequence[str] = SLICE_COLUMNS, summary_columns: Sequence[str] = SUMMARY_COLUMNS) -> List[Path]:
    """Write results by extension: ``.json`` (one document) or ``.csv`` (slices + ``.summary.csv``), atomically."""
    from .outputs import json_text, write_text

    out = Path(output)
    done = [r for r in results if r.score is not None]
    if out.name.lower().endswith(".json"):
        doc = {"volumes": [{**r.summary(), "slice_scores": r.slice_rows()} for r in done],
               "errors": [{"file": r.file, "error": r.error.one_line()} for r in results if r.error is not None]}
        return [write_text(out, json_text(doc), force)]
    slices = [row for r in done for row in r.slice_rows()]
    a = write_text(out, rows_to_csv(slices, slice_columns), force)
    # Every file given, those that could not be scored too ("not scored" and why): a table read later must not
    # lose them (they were on the screen only).
    shown = [r for r in results if r.score is not None or r.error is not None]
    b = write_text(summary_path(out), rows_to_csv([r.summary() for r in shown], summary_columns), force)
    return [a, b]


def write_table(rows: List[dict], columns: Sequence[str], path: Union[str, Path], force: bool = False) -> Path:
    """A table of ``rows``: tab-separated for ``.tsv`` (what Slicer's table storage reads, with the column types
    in a ``.schema.tsv`` beside it, :data:`~SSIMQualityLib.vocabulary.COLUMN_TYPES`), else CSV."""
    from .outputs import write_text

    if not str(path).lower().endswith(".tsv"):
        return write_text(path, rows_to_csv(rows, columns, ","), force)
    schema = [{"columnName": c, "type": COLUMN_TYPES[c]} for c in columns if c in COLUMN_TYPES]
    write_text(str(path)[:-len(".tsv")] + ".schema.tsv", rows_to_csv(schema, ["columnName", "type"], "\t"), force)
    return write_text(path, rows_to_csv(rows, columns, "\t"), force)


def write_slice_table(result: VolumeResult, path: Union[str, Path], force: bool = False) -> Path:
    """One volume's per-slice table (no file column); tab-separated for ``.tsv``, else CSV."""
    return write_table(result.slice_rows(), [c for c in SLICE_COLUMNS if c != "file"], path, force)


class Merged(NamedTuple):
    """What :func:`merge_results` wrote and has to tell."""

    paths: List[Path]  # the files written
    volumes: int  # volumes in the merged output
    failed: Dict[str, str]  # volumes the parts could not score, file -> reason
    notes: List[str]  # lines for the user: what a --partial merge left out, or that nothing could be checked


def merge_results(parts: Sequence[Union[str, Path]], output: Union[str, Path], force: bool = False, *,
                  partial: bool = False) -> Merged:
    """Join the outputs of several ``ssimquality score`` runs (shards) into one output.

    All parts and the output have one format (``.csv`` with its ``.summary.csv``, or ``.json``).  A
    volume found in two parts is refused: the parts overlap.  Parts written by ``score -o`` carry a record
    (:mod:`~SSIMQualityLib.records`): the shards of one run are then joined in shard order, and a missing,
    doubled or unfinished shard is refused unless ``partial``; whole runs (one a site, say) are joined in the
    order given, if scored with the same settings; the output gets a record of its own.  Parts without records
    are joined in the order given.
    """
    from .records import (drop_companions, merged_record, order_parts, read_record, record_path, stamped,
                          write_record)
    from .resume import load_results

    out = Path(output)
    parts = drop_companions(parts)
    as_json = out.name.lower().endswith(".json")
    for p in parts:
        if Path(p).name.lower().endswith(".json") != as_json:
            raise SSIMQualityError(f"is {'CSV' if as_json else 'JSON'} while the output is "
                                   f"{'JSON' if as_json else 'CSV'}", str(p), "give parts and output of one format")
    records = {str(p): read_record(p) for p in parts}
    # A part with a record and no results (lost, or removed): read as empty, so that the check below names it.
    loaded = {str(p): (load_results(p, with_errors=True) if Path(p).exists() or records[str(p)] is None else [])
              for p in parts}
    ordered, notes = order_parts(parts, records, {p: {r.file for r in rs if r.error is None}
                                                  for p, rs in loaded.items()}, partial=partial)
    results, seen, columns = [], {}, list(SUMMARY_COLUMNS) if not as_json else None
    # A volume one part could not score and another scored (a site's run tried again) is the scored one: a
    # failure claims no name.  Those no part scored are listed after the scored volumes.
    scored_names = {r.file for rs in loaded.values() for r in rs if r.error is None}
    unscored = {}
    for p in ordered:
        rec = records[str(p)]
        for r in loaded[str(p)]:
            if r.error is not None:
                if r.file not in scored_names:
                    unscored.setdefault(r.file, r)
                continue
            # one volume under two names (a resumed run names new volumes in full), or two under one name
            real = os.path.realpath(rec.path_of(r.file) if rec is not None else r.file)
            if r.file in seen or real in seen:
                q = seen.get(r.file, seen.get(real))
                folders = {records[str(x)].folder or "an earlier merge" for x in (q, p) if records[str(x)] is not None}
                if r.file in seen and len(folders) > 1:  # two sites' runs, each naming its volumes from its folder
                    raise SSIMQualityError(f"{r.file} is in two parts ({q} and {p}), each named from the folder "
                                           f"its run started in ({', '.join(sorted(folders))})", str(p),
                                           "score them with absolute paths (or from one folder), then merge")
                raise SSIMQualityError(f"{r.file} is in two parts ({q} and {p})", str(p),
                                       "give each volume's results once (the shards of one run, or separate runs)")
            seen[r.file] = seen[real] = p
            results.append(r)
        if columns is not None and summary_path(p).exists():  # every part's columns (--iqm in some parts)
            with summary_path(p).open(encoding="utf-8") as fh:
                columns += [c for c in next(csv.reader(fh), []) if c not in columns]
    results += list(unscored.values())
    failed = {f: why for p in ordered if records[str(p)] is not None for f, why in records[str(p)].errors.items()
              if f not in scored_names}
    failed.update({r.file: r.error.one_line() for r in results if r.error is not None})
    paths = write_results(results, out, force=force, summary_columns=columns or SUMMARY_COLUMNS)
    record = merged_record(ordered, records, stamped({"merged_from": len(ordered)}))
    if record is not None:
        write_record(out, record.with_results(out))
    elif record_path(out).is_file():  # --force over an earlier merge: its record would speak for other results
        record_path(out).unlink()
    return Merged(paths, sum(r.error is None for r in results), failed, notes)
