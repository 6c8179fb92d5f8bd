"""What a shard's part says about itself, so that ``ssimquality merge`` can tell a missing or unfinished part.

A sharded ``score --shard K/N -o part.csv`` writes, beside its results, ``part.csv.shard.json``: which shard it
is (K of N), the volumes that shard was given, whether the run got through all of them, the volumes that could
not be scored (a CSV part has no other place for them), what every part of the run shares (the whole list of
volumes, the settings) and the SHA-256 of the results it speaks for.  It is written after each save of the
results (``cli._ResultsSaver``), with ``finished: false`` until the end, so a job killed by the cluster (a time
limit, pre-emption: no chance to write anything) leaves a record that says it did not finish, and one killed
between the two writes leaves a record that disagrees with its results.

``merge`` reads the records of all parts and refuses, with one line naming the part, a shard of the run that is
absent, given twice, unfinished, from another run (another split, input or settings), or whose record and
results disagree; the parts are joined in shard order whatever order the shell's glob gave them in.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

from .errors import SSIMQualityError, UnreadableFileError

PathLike = Union[str, Path]
#: Changes when the record's fields change meaning.
RECORD_VERSION = 2
_REDO = "score that shard again with --force (without --resume): its record cannot be trusted"


class ShardRecord(NamedTuple):
    """One part's account of itself, and of the run it belongs to."""

    part: int  # K, from 1
    parts: int  # N
    files: List[str]  # the volumes this shard was given, in order (as the results name them)
    finished: bool  # the run went through every one of them
    errors: Dict[str, str]  # file -> the one-line reason it could not be scored
    run: Dict[str, object]  # what every part of one run shares: the whole list (digest, length) and the settings
    results_sha256: str = ""  # the results it speaks for (:func:`results_digest`), as last saved


def run_identity(everything: Sequence[PathLike], settings: Dict[str, object]) -> Dict[str, object]:
    """What the parts of one run share: the whole list of volumes before it was split (its length and a digest
    of the resolved paths, so that ``../scans`` and ``/data/scans`` agree) and the scoring settings.

    >>> a = run_identity(["x.nii", "y.nii"], {"axis": None})
    >>> a == run_identity(["./x.nii", "y.nii"], {"axis": None}), a == run_identity(["x.nii"], {"axis": None})
    (True, False)
    """
    digest = hashlib.sha256("\n".join(os.path.realpath(str(f)) for f in everything).encode("utf-8")).hexdigest()
    return {"volumes": len(everything), "list_sha256": digest, "settings": dict(settings)}


def record_path(output: PathLike) -> Path:
    """Where the record of a part's results goes: ``part-3.csv`` → ``part-3.csv.shard.json`` (the whole name:
    ``part-3.json`` is another output and has its own).

    >>> record_path("runs/part-3.csv").as_posix(), record_path("part-3.json").name
    ('runs/part-3.csv.shard.json', 'part-3.json.shard.json')
    """
    p = Path(output)
    return p.with_name(f"{p.name}.shard.json")


def results_digest(output: PathLike) -> str:
    """SHA-256 of a results output as it is on disk (the file and, for CSV, its summary): the record names the
    results it speaks for, so that a run stopped between writing the two (a kill, a full disk) is caught."""
    from .results import summary_path

    h = hashlib.sha256()
    for f in dict.fromkeys([Path(output), summary_path(output)]):  # contents only: a renamed part still agrees
        data = f.read_bytes() if f.is_file() else b""
        h.update(f"{len(data) if f.is_file() else -1}:".encode("ascii") + data)
    return h.hexdigest()


def write_record(output: PathLike, record: ShardRecord) -> Path:
    """Write ``record`` beside ``output`` atomically (replacing the part's earlier record)."""
    from .outputs import write_text

    doc = {"ssimquality_shard_record": RECORD_VERSION, "part": record.part, "parts": record.parts,
           "finished": record.finished, "run": record.run, "results_sha256": record.results_sha256,
           "files": list(record.files),
           "errors": dict(record.errors)}
    return write_text(record_path(output), json.dumps(doc, indent=1) + "\n", force=True)


def read_record(output: PathLike) -> Optional[ShardRecord]:
    """The record beside ``output``, or ``None`` when it has none (not a shard, or written before records)."""
    path = record_path(output)
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("ssimquality_shard_record") != RECORD_VERSION:
            raise ValueError(f"unknown record version {doc.get('ssimquality_shard_record')!r}")
        record = ShardRecord(int(doc["part"]), int(doc["parts"]), [str(f) for f in doc["files"]],
                             bool(doc["finished"]), {str(k): str(v) for k, v in doc["errors"].items()},
                             dict(doc["run"]), str(doc["results_sha256"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UnreadableFileError(f"cannot read this shard record ({type(exc).__name__}: {exc})", str(path),
                                  _REDO) from None
    if not 1 <= record.part <= record.parts:
        raise UnreadableFileError(f"shard {record.part} of {record.parts} does not exist", str(path), _REDO)
    return record


def check_resume(output: PathLike, part: int, parts: int, run: Dict[str, object]) -> Optional[ShardRecord]:
    """The record of the part to resume (``None`` when it has none), refused when an earlier run started it as
    another shard, over another list of volumes or with other settings (its results would overlap another
    part's, leave volumes to no part, or mix settings)."""
    record = read_record(output)
    if record is None:
        return None
    if (record.part, record.parts) != (part, parts):
        raise SSIMQualityError(f"holds shard {record.part}/{record.parts}, not {part}/{parts}", str(output),
                               f"resume it with --shard {record.part}/{record.parts}, or give another -o")
    _check_agrees(output, record)
    if record.run.get("list_sha256") != run["list_sha256"]:
        raise SSIMQualityError(f"shard {part}/{parts} was started over another list of volumes (the input changed "
                               f"since: {record.run.get('volumes')} volumes then, {run['volumes']} now)", str(output),
                               "score every shard afresh (--force, without --resume), so that the parts still "
                               "split one list")
    changed = _differences(record.run.get("settings", {}), run["settings"])
    if changed:
        raise SSIMQualityError(f"shard {part}/{parts} was started with other settings ({changed})", str(output),
                               "resume it with the options it started with, or start it again with --force")
    return record


def _check_agrees(output: PathLike, record: ShardRecord) -> None:
    if record.results_sha256 != results_digest(output):
        raise SSIMQualityError("the part's results and its record disagree (a run was stopped while saving, or the "
                               "files were changed since)", str(output),
                               "score that shard again with --force (without --resume)")


def drop_companions(parts: Sequence[PathLike]) -> List[PathLike]:
    """``parts`` without the summaries and records of results files also given: what ``part-*.csv`` (which also
    matches ``part-1.summary.csv``) or ``part-*`` (``part-1.csv.shard.json``) expands to in a shell.

    >>> drop_companions(["p-1.csv", "p-1.summary.csv", "p-1.csv.shard.json", "p-2.summary.csv"])
    ['p-1.csv', 'p-2.summary.csv']
    """
    from .results import summary_path

    def companion(path: PathLike) -> bool:
        return Path(path).name.lower().endswith((".summary.csv", ".shard.json"))

    beside = {os.path.realpath(str(c)) for p in parts if not companion(p)
              for c in (summary_path(p), record_path(p)) if str(c) != str(p)}
    return [p for p in parts if not (companion(p) and os.path.realpath(str(p)) in beside)]


def order_parts(parts: Sequence[PathLike], records: Dict[str, Optional[ShardRecord]], scored: Dict[str, set], *,
                partial: bool = False) -> Tuple[List[PathLike], List[str]]:
    """Check that ``parts`` are every shard of one run, each finished, and put them in shard order.

    ``records`` maps each part (as given, ``str``) to its record (:func:`read_record`, read once by the caller),
    ``scored`` to the volumes its results hold.  Returns the parts in shard order and
    the lines to tell the user (what a ``partial`` merge leaves out, or that the parts carry no records and the
    check could not be made).

    Raises
    ------
    SSIMQualityError
        A part is given twice; a shard is missing, given twice, from another run or unfinished (unless
        ``partial``, for the first and the last); some parts have records and others none.
    """
    seen: Dict[str, PathLike] = {}
    for p in parts:
        real = os.path.realpath(str(p))
        if real in seen:
            raise SSIMQualityError(f"is given twice (also as {seen[real]})", str(p), "give each part once")
        seen[real] = p
    records = {p: records[str(p)] for p in parts}  # keyed as given, for the messages
    without = [p for p, r in records.items() if r is None]
    if len(without) == len(parts):
        return list(parts), ["note: the parts carry no shard records (.shard.json, which score --shard writes): "
                             "merge cannot check that none is missing"]
    if without:
        raise SSIMQualityError("has no shard record (.shard.json) while the other parts have one", str(without[0]),
                               f"if it was renamed after scoring, rename its record too (to {record_path(without[0]).name}); "
                               "otherwise give only the parts of one `score --shard K/N` run")
    odd = _odd_one_out(records, lambda r: (r.parts, r.run.get("volumes"), r.run.get("list_sha256")))
    if odd is not None:
        p, r, usual = odd
        raise SSIMQualityError(f"belongs to another run (shard {r.part} of {r.parts}, over {r.run.get('volumes')} "
                               f"volumes) than the other parts ({usual.parts} shards over {usual.run.get('volumes')} "
                               "volumes): the input or the split changed between tasks", str(p),
                               "score every shard of one run over one input (--force, without --resume), then merge")
    odd = _odd_one_out(records, lambda r: json.dumps(r.run.get("settings"), sort_keys=True))
    if odd is not None:
        p, r, usual = odd
        changed = _differences(usual.run.get("settings", {}), r.run.get("settings", {}), ("in the others", "here"))
        raise SSIMQualityError(f"was scored with other settings than the other parts ({changed})", str(p),
                               "score it again with the options of the others (--force), then merge")
    for p, r in records.items():
        _check_agrees(p, r)
    n = next(iter(records.values())).parts
    by_part: Dict[int, PathLike] = {}
    for p, r in records.items():
        if r.part in by_part:
            raise SSIMQualityError(f"{by_part[r.part]} and {p} are both shard {r.part} of {n}", str(p),
                                   "give each shard's part once")
        by_part[r.part] = p
    said: List[str] = []
    missing = [k for k in range(1, n + 1) if k not in by_part]
    if missing:
        what = f"shard{'s' if len(missing) > 1 else ''} {_ranges(missing)} of {n} {'are' if len(missing) > 1 else 'is'} missing"
        if not partial:
            raise SSIMQualityError(what, None,
                                   f"score {'them' if len(missing) > 1 else 'it'} (--shard {missing[0]}/{n} ...) "
                                   "and merge again, or pass --partial to merge the parts there are")
        said.append(f"warning: {what}: the merged results leave out their volumes (--partial)")
    for k in sorted(by_part):
        p, r = by_part[k], records[by_part[k]]
        held = {os.path.realpath(f) for f in scored.get(str(p), set()) | set(r.errors)}
        left = [f for f in r.files if os.path.realpath(f) not in held]
        if not r.finished or left:
            what = f"shard {k} of {n} did not finish ({len(r.files) - len(left)} of {len(r.files)} volumes)"
            if not partial:
                raise SSIMQualityError(what, str(p), "run its score command again with --resume, then merge, "
                                                     "or pass --partial to merge what is there")
            said.append(f"warning: {p}: {what}: the merged results leave out the other {len(left)} (--partial)")
    return [by_part[k] for k in sorted(by_part)], said


def _odd_one_out(records: Dict[PathLike, ShardRecord], key):
    """A part whose ``key`` differs from most parts' (the first such, with its record and a usual record), or None."""
    keys = {p: key(r) for p, r in records.items()}
    counts = Counter(keys.values())
    if len(counts) == 1:
        return None
    usual = counts.most_common(1)[0][0]
    p = next(p for p, k in keys.items() if k != usual)
    return p, records[p], next(r for q, r in records.items() if keys[q] == usual)


def _differences(before: Dict[str, object], now: Dict[str, object], words=("then", "now")) -> str:
    """``'axis: 0 then, 2 now'``: the settings that differ, each as it was and as it is.

    >>> _differences({"axis": 0, "iqm": False}, {"axis": 2, "iqm": False})
    'axis: 0 then, 2 now'
    """
    def shown(v):
        return "default" if v is None else v  # an option not given

    keys = sorted(set(before) | set(now))
    return "; ".join(f"{k}: {shown(before.get(k))} {words[0]}, {shown(now.get(k))} {words[1]}" for k in keys
                     if before.get(k) != now.get(k))


def _ranges(ks: Sequence[int]) -> str:
    """``[2, 3, 4, 7]`` → ``'2-4, 7'``.

    >>> _ranges([2, 3, 4, 7]), _ranges([5])
    ('2-4, 7', '5')
    """
    out, start = [], ks[0]
    for a, b in zip(ks, list(ks[1:]) + [None]):
        if b != a + 1:
            out.append(str(start) if start == a else f"{start}-{a}")
            start = b
    return ", ".join(out)
