"""What a shard's part says about itself, so that ``ssimquality merge`` can tell a missing or unfinished part.

A sharded ``score --shard K/N -o part.csv`` writes, beside its results, ``part.shard.json``: which shard it is
(K of N), the volumes that shard was given, whether the run got through all of them, and the volumes that could
not be scored (a CSV part has no other place for them).  The record is written before the first volume with
``finished: false`` and again at the end with ``finished: true``, so a job killed by the cluster (time limit,
pre-emption: no chance to write anything) leaves a record that says it did not finish.

``merge`` reads the records of all parts and refuses, with one line naming what is missing, when a shard of
the run is absent, given twice, from another run (another N), or unfinished; the parts are joined in shard
order whatever order the shell's glob gave them in.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

from .errors import SSIMQualityError, UnreadableFileError

PathLike = Union[str, Path]
#: Changes when the record's fields change meaning.
RECORD_VERSION = 1


class ShardRecord(NamedTuple):
    """One part's account of itself."""

    part: int  # K, from 1
    parts: int  # N
    files: List[str]  # the volumes this shard was given, in order
    finished: bool  # the run went through every one of them
    errors: Dict[str, str]  # file -> the one-line reason it could not be scored


def record_path(output: PathLike) -> Path:
    """Where the record of a part's results goes: ``part-3.csv`` (or ``.json``) → ``part-3.shard.json``.

    >>> record_path("runs/part-3.csv").as_posix(), record_path("part-3.json").name
    ('runs/part-3.shard.json', 'part-3.shard.json')
    """
    p = Path(output)
    stem = p.name.rsplit(".", 1)[0] if "." in p.name else p.name
    return p.with_name(f"{stem}.shard.json")


def write_record(output: PathLike, record: ShardRecord) -> Path:
    """Write ``record`` beside ``output`` atomically (replacing the part's earlier record)."""
    from .outputs import write_text

    doc = {"ssimquality_shard_record": RECORD_VERSION, "part": record.part, "parts": record.parts,
           "finished": record.finished, "files": list(record.files), "errors": dict(record.errors)}
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
                             bool(doc["finished"]), {str(k): str(v) for k, v in doc["errors"].items()})
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UnreadableFileError(f"cannot read this shard record ({type(exc).__name__}: {exc})", str(path),
                                  "score that shard again with --resume, which writes it anew") from None
    if not 1 <= record.part <= record.parts:
        raise UnreadableFileError(f"shard {record.part} of {record.parts} does not exist", str(path),
                                  "score that shard again with --resume, which writes it anew")
    return record


def check_resume(output: PathLike, part: int, parts: int, files: Sequence[str]) -> None:
    """Refuse to resume a part that an earlier run started as another shard or over other volumes (its results
    would then overlap another part's, or leave volumes to no part)."""
    record = read_record(output)
    if record is None:
        return
    if (record.part, record.parts) != (part, parts):
        raise SSIMQualityError(f"holds shard {record.part}/{record.parts}, not {part}/{parts}", str(output),
                               f"resume it with --shard {record.part}/{record.parts}, or give another -o")
    if list(record.files) != [str(f) for f in files]:
        raise SSIMQualityError(f"shard {part}/{parts} was started over other volumes (the input changed since: "
                               f"{len(record.files)} volumes then, {len(files)} now)", str(output),
                               "score every shard afresh (without --resume, with --force), so that the parts "
                               "still split one list")


def order_parts(parts: Sequence[PathLike], scored: Dict[str, set], *,
                partial: bool = False) -> Tuple[List[PathLike], List[str]]:
    """Check that ``parts`` are every shard of one run, each finished, and put them in shard order.

    ``scored`` maps each part (as given) to the volumes its results hold.  Returns the parts in shard order and
    the lines to tell the user (what a ``partial`` merge leaves out, or that the parts carry no records and the
    check could not be made).

    Raises
    ------
    SSIMQualityError
        A shard is missing, given twice, from another run or unfinished (unless ``partial``, for the first and
        the last); some parts have records and others none.
    """
    records = {p: read_record(p) for p in parts}
    without = [p for p, r in records.items() if r is None]
    if len(without) == len(parts):
        return list(parts), ["note: the parts carry no shard records (.shard.json, which score --shard "
                             "writes): merge cannot check that none is missing"]
    if without:
        raise SSIMQualityError("has no shard record (.shard.json) while the other parts have one", str(without[0]),
                               "give only the parts of one `score --shard K/N` run")
    counts = {r.parts for r in records.values()}
    if len(counts) > 1:
        raise SSIMQualityError(f"the parts come from runs split {' and '.join(map(str, sorted(counts)))} ways",
                               str(parts[0]), "merge the parts of one run only")
    n = counts.pop()
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
            raise SSIMQualityError(what, str(Path(parts[0]).parent),
                                   f"score {'them' if len(missing) > 1 else 'it'} (--shard {missing[0]}/{n} ...) "
                                   "and merge again, or pass --partial to merge the parts there are")
        said.append(f"warning: {what}: the merged results leave out their volumes (--partial)")
    for k in sorted(by_part):
        p, r = by_part[k], records[by_part[k]]
        held = scored.get(str(p), set()) | set(r.errors)
        left = [f for f in r.files if f not in held]
        if not r.finished or left:
            what = f"shard {k} of {n} did not finish ({len(r.files) - len(left)} of {len(r.files)} volumes)"
            if not partial:
                raise SSIMQualityError(what, str(p), "run its score command again with --resume, then merge, "
                                                     "or pass --partial to merge what is there")
            said.append(f"warning: {p}: {what}: the merged results leave out the other {len(left)} (--partial)")
    return [by_part[k] for k in sorted(by_part)], said


def record_errors(parts: Sequence[PathLike]) -> Dict[str, str]:
    """Every volume the parts' records list as not scored, file -> reason (empty for parts without records)."""
    out: Dict[str, str] = {}
    for p in parts:
        r = read_record(p)
        if r is not None:
            out.update(r.errors)
    return out


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
