"""What a results file of ``ssimquality score`` says about itself: the run that made it, and how far it got.

Every ``score -o scores.csv`` writes, beside its results, ``scores.csv.record.json``: the settings asked for
(model SHA-256, axis, frame, series, iqm, fast), the volumes it was given and the folder it started from, the
volumes that could not be scored (a CSV has no other place for them), whether it got through all of them, the
SHA-256 of the results it speaks for, and how they were made (the model's name, ssimquality's version, the
device and precision, when it started and last saved).  It is written after each save of the results
(``cli._ResultsSaver``) with ``finished: false`` until the end, so a job killed by the cluster (a time limit,
pre-emption: no chance to write anything) leaves a record that says it did not finish, and one killed between
the two writes leaves a record that disagrees with its results.

``--resume`` reads it and refuses other settings (a results file scored by two models reads as one) and a
record that does not name the results beside it.  A sharded run (``--shard K/N``) is part K of N; a whole run
is part 1 of 1.  The parts of one sharded run also share the whole list of volumes before the split (its
length and digest), and ``merge`` reads the records of all parts and refuses, with one line naming the part, a
shard of the run that is absent, given twice, unfinished, from another run (another split, input or settings),
or whose record and results disagree; the parts are joined in shard order whatever order the shell's glob gave
them in, and the merged output gets a record of its own (part 1 of 1).
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
#: Changes when the record's fields change meaning.  3: every score output has one (a whole run is part 1 of 1),
#: with the folder its names are relative to and how the results were made.
RECORD_VERSION = 3
_REDO = "score it again with --force (without --resume): its record cannot be trusted"


class RunRecord(NamedTuple):
    """A results file's account of the run that made it (one shard's part, or a whole run: part 1 of 1)."""

    part: int  # K, from 1
    parts: int  # N; 1 for a whole run
    files: List[str]  # the volumes this part was given, in order (as the results name them)
    finished: bool  # the run went through every one of them
    errors: Dict[str, str]  # file -> the one-line reason it could not be scored
    run: Dict[str, object]  # what every part of one run shares: the whole list (digest, length) and the settings
    results_sha256: str = ""  # the results it speaks for (:func:`results_digest`), as last saved
    folder: str = ""  # the working folder the run started in: what relative names in ``files`` are relative to
    made: Dict[str, object] = {}  # how: model name, ssimquality's version, device, precision, started, saved

    def path_of(self, name: str) -> str:
        """The file a name of this record means: read from the folder the run started in (where it names one)."""
        return os.path.join(self.folder, name) if self.folder else name

    def with_results(self, output: PathLike) -> "RunRecord":
        """This record, speaking for the results now at ``output`` (their digest)."""
        return self._replace(results_sha256=results_digest(output))


def joined(*values: object) -> str:
    """Each distinct value once, in order: a run resumed on another machine names both devices.

    >>> joined("cuda:0", "cpu"), joined("cpu, cuda:0", "cpu"), joined("", "cpu")
    ('cuda:0, cpu', 'cpu, cuda:0', 'cpu')
    """
    return ", ".join(dict.fromkeys(v for value in values for v in str(value or "").split(", ") if v))


def stamped(made: Dict[str, object]) -> Dict[str, object]:
    """``made`` with this ssimquality's version and the time (UTC) as ``saved``."""
    from datetime import datetime, timezone

    from . import __version__

    return {**made, "ssimquality": __version__, "saved": datetime.now(timezone.utc).isoformat(timespec="seconds")}


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
    """Where the record of a results file goes: ``part-3.csv`` → ``part-3.csv.record.json`` (the whole name:
    ``part-3.json`` is another output and has its own).

    >>> record_path("runs/part-3.csv").as_posix(), record_path("part-3.json").name
    ('runs/part-3.csv.record.json', 'part-3.json.record.json')
    """
    p = Path(output)
    return p.with_name(f"{p.name}.record.json")


def legacy_record_path(output: PathLike) -> Path:
    """Where ssimquality before record version 3 put a shard's record (``part-3.csv.shard.json``)."""
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


def write_record(output: PathLike, record: RunRecord) -> Path:
    """Write ``record`` beside ``output`` atomically (replacing the output's earlier record)."""
    from .outputs import write_text

    doc = {"ssimquality_run_record": RECORD_VERSION, "part": record.part, "parts": record.parts,
           "finished": record.finished, "run": record.run, "results_sha256": record.results_sha256,
           "made": dict(record.made), "folder": record.folder, "files": list(record.files),
           "errors": dict(record.errors)}
    return write_text(record_path(output), json.dumps(doc, indent=1) + "\n", force=True)


def read_record(output: PathLike) -> Optional[RunRecord]:
    """The record beside ``output``, or ``None`` when it has none (written before records, or by another tool)."""
    path = record_path(output)
    if not path.exists():
        if legacy_record_path(output).exists():  # its checks would be skipped if it were taken for no record
            raise UnreadableFileError("has the record of an earlier ssimquality (.shard.json), which this one does "
                                      "not read", str(output), _REDO)
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        version = doc.get("ssimquality_run_record")
        if version != RECORD_VERSION:
            raise UnreadableFileError(f"was written by another version of ssimquality (record version {version!r}; "
                                      f"this one reads {RECORD_VERSION})", str(path), _REDO)
        record = RunRecord(int(doc["part"]), int(doc["parts"]), [str(f) for f in doc["files"]],
                           bool(doc["finished"]), {str(k): str(v) for k, v in doc["errors"].items()},
                           dict(doc["run"]), str(doc["results_sha256"]), str(doc["folder"]), dict(doc["made"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UnreadableFileError(f"cannot read this run record ({type(exc).__name__}: {exc})", str(path),
                                  _REDO) from None
    if not 1 <= record.part <= record.parts:
        raise UnreadableFileError(f"shard {record.part} of {record.parts} does not exist", str(path), _REDO)
    return record


def check_resume(output: PathLike, part: int, parts: int, run: Dict[str, object]) -> Optional[RunRecord]:
    """The record of the results to resume (``None`` when they have none), refused when an earlier run started
    them as another shard (or as a whole run), with other settings (the results would mix models or options) or,
    for a shard, over another list of volumes (its results would overlap another part's, or leave volumes to no
    part).  A whole run may resume over a list that has grown: only the new volumes are scored."""
    record = read_record(output)
    if record is None:
        return None
    if (record.part, record.parts) != (part, parts):
        if parts == 1:
            raise SSIMQualityError(f"holds shard {record.part}/{record.parts} of a sharded run", str(output),
                                   f"resume it with --shard {record.part}/{record.parts}")
        held = "the results of a whole run" if record.parts == 1 else f"shard {record.part}/{record.parts}"
        raise SSIMQualityError(f"holds {held}, not shard {part}/{parts}", str(output),
                               (f"resume it with --shard {record.part}/{record.parts}" if record.parts > 1 else
                                "resume it without --shard") + ", or give another -o")
    _check_agrees(output, record)
    if not record.folder:
        raise SSIMQualityError("these results join runs started from different folders, so the names they hold "
                               "cannot be told from the volumes given now", str(output),
                               "resume the runs it was merged from, then merge them again")
    if parts > 1 and record.run.get("list_sha256") != run["list_sha256"]:
        since = (f"the volumes' paths changed ({run['volumes']} volumes then and now: a moved or copied folder?)"
                 if record.run.get("volumes") == run["volumes"] else
                 f"the input changed since: {record.run.get('volumes')} volumes then, {run['volumes']} now")
        raise SSIMQualityError(f"shard {part}/{parts} was started over another list of volumes ({since})", str(output),
                               "score every shard afresh (--force, without --resume), so that the parts still "
                               "split one list")
    changed = _differences(record.run.get("settings", {}), run["settings"])
    if changed:
        what = f"shard {part}/{parts} was" if parts > 1 else "these results were"
        raise SSIMQualityError(f"{what} started with other settings ({changed})", str(output),
                               "resume with the options of that run, or start again with --force (without --resume)")
    return record


def earlier_names(record: RunRecord, paths: Sequence[PathLike], output: PathLike = "") -> Dict[str, str]:
    """``{path as given now: the name the record gave it}`` for the volumes of ``paths`` the earlier run was
    given, however they are spelt now (``../scans/a.nii`` from another working folder, ``/data/scans/a.nii``):
    the resumed results keep the names they started with, and those already scored are recognised.

    A name is read from the folder the run started in; where that file is gone (the project moved) and the name
    finds one here, from here.

    Raises
    ------
    SSIMQualityError
        A volume given now has a name the results hold for another file (``sub-01/t1.nii`` of another site,
        or of a copy of the project): it would be taken as scored, with the other file's score.

    Examples
    --------
    >>> import tempfile
    >>> here = tempfile.mkdtemp()
    >>> rec = RunRecord(1, 1, ["scans/a.nii", "scans/b.nii"], False, {}, {}, folder=here)
    >>> earlier_names(rec, [os.path.join(here, "scans", "b.nii"), "elsewhere.nii"])  # doctest: +ELLIPSIS
    {'.../scans/b.nii': 'scans/b.nii'}
    """
    there = record.path_of

    def where(f: str) -> str:  # from here only where the file is gone from there and is here
        return f if not os.path.exists(there(f)) and os.path.exists(f) else there(f)

    resolved = {os.path.realpath(where(f)): f for f in record.files}
    named_here = {os.path.realpath(f): f for f in record.files if os.path.exists(there(f))}
    out = {}
    for p in paths:
        real = os.path.realpath(str(p))
        if real in resolved:
            out[str(p)] = resolved[real]
        elif real in named_here and os.path.realpath(there(named_here[real])) != real:
            f = named_here[real]
            raise SSIMQualityError(f"holds {f} from {record.folder} (where its run started), and {f} here is "
                                   "another file", str(output) or None,
                                   "resume from that folder, give the volumes as absolute paths, or score them "
                                   "into a new -o (then merge)")
    return out


def _check_agrees(output: PathLike, record: RunRecord) -> None:
    if record.results_sha256 != results_digest(output):
        raise SSIMQualityError("the results and their record disagree (a run was stopped while saving, or the "
                               "files were changed since)", str(output), _REDO)


def drop_companions(parts: Sequence[PathLike]) -> List[PathLike]:
    """``parts`` without the summaries and records of results files also given: what ``part-*.csv`` (which also
    matches ``part-1.summary.csv``) or ``part-*`` (``part-1.csv.record.json``) expands to in a shell.

    >>> drop_companions(["p-1.csv", "p-1.summary.csv", "p-1.csv.record.json", "p-2.summary.csv"])
    ['p-1.csv', 'p-2.summary.csv']
    """
    from .results import summary_path

    def companion(path: PathLike) -> bool:
        return Path(path).name.lower().endswith((".summary.csv", ".record.json", ".shard.json"))

    beside = {os.path.realpath(str(c)) for p in parts if not companion(p)
              for c in (summary_path(p), record_path(p), legacy_record_path(p)) if str(c) != str(p)}
    return [p for p in parts if not (companion(p) and os.path.realpath(str(p)) in beside)]


def order_parts(parts: Sequence[PathLike], records: Dict[str, Optional[RunRecord]], scored: Dict[str, set], *,
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
        return list(parts), ["note: the parts carry no run records (.record.json, which score -o writes): "
                             "merge cannot check that none is missing"]
    if without:
        raise SSIMQualityError("has no run record (.record.json) while the other parts have one", str(without[0]),
                               f"if it was renamed after scoring, rename its record too (to {record_path(without[0]).name}); "
                               "otherwise give only results that `score -o` wrote with this version")
    whole = all(r.parts == 1 for r in records.values())  # separate whole runs (one a site, say): kept in order
    if not whole and any(r.parts == 1 for r in records.values()):
        p = next(p for p, r in records.items() if r.parts == 1)
        raise SSIMQualityError("holds a whole run's results (or merged shards) while other parts are shards of a run",
                               str(p), "merge the shards of that run first, then merge the result with the whole runs")
    odd = None if whole else _odd_one_out(records, lambda r: (r.parts, r.run.get("volumes"), r.run.get("list_sha256")))
    if odd is not None:
        p, r, usual = odd
        raise SSIMQualityError(f"belongs to another run (shard {r.part} of {r.parts}, over {r.run.get('volumes')} "
                               f"volumes) than the other parts ({usual.parts} shards over {usual.run.get('volumes')} "
                               "volumes): the input or the split changed between tasks", str(p),
                               "score every shard of one run over one input (--force, without --resume), then merge")
    odd = _odd_one_out(records, lambda r: json.dumps(r.run.get("settings"), sort_keys=True))
    if odd is not None:  # one table, one model and one set of options, whether shards or whole runs
        p, r, usual = odd
        changed = _differences(usual.run.get("settings", {}), r.run.get("settings", {}), ("in the others", "here"))
        raise SSIMQualityError(f"was scored with other settings than the other parts ({changed})", str(p),
                               "score it again with the options of the others (--force), then merge")
    for p, r in records.items():
        _check_agrees(p, r)
    said: List[str] = []
    if whole:
        ordered = list(parts)
    else:
        n = next(iter(records.values())).parts
        by_part: Dict[int, PathLike] = {}
        for p, r in records.items():
            if r.part in by_part:
                raise SSIMQualityError(f"{by_part[r.part]} and {p} are both shard {r.part} of {n}", str(p),
                                       "give each shard's part once")
            by_part[r.part] = p
        missing = [k for k in range(1, n + 1) if k not in by_part]
        if missing:
            what = (f"shard{'s' if len(missing) > 1 else ''} {_ranges(missing)} of {n} "
                    f"{'are' if len(missing) > 1 else 'is'} missing")
            if not partial:
                raise SSIMQualityError(what, None,
                                       f"score {'them' if len(missing) > 1 else 'it'} (--shard {missing[0]}/{n} ...) "
                                       "and merge again, or pass --partial to merge the parts there are")
            said.append(f"warning: {what}: the merged results leave out their volumes (--partial)")
        ordered = [by_part[k] for k in sorted(by_part)]
    for p in ordered:
        r = records[p]
        held = {os.path.realpath(f) for f in scored.get(str(p), set()) | set(r.errors)}
        left = [f for f in r.files if os.path.realpath(f) not in held]
        if not r.finished or left:
            if left or not (r.made or {}).get("merged_from"):
                count = f"{len(r.files) - len(left)} of {len(r.files)} volumes"
            else:  # every volume it lists is there: it is a --partial merge ("8 of 8 volumes" read as a riddle)
                count = "a --partial merge: it leaves out volumes"
            what = f"{'the run' if whole else f'shard {r.part} of {r.parts}'} did not finish ({count})"
            if not partial:
                raise SSIMQualityError(what, str(p), "run its score command again with --resume, then merge, "
                                                     "or pass --partial to merge what is there")
            said.append(f"warning: {p}: {what}: the merged results leave out the other {len(left)} (--partial)")
    return ordered, said


def merged_record(ordered: Sequence[PathLike], records: Dict[str, Optional[RunRecord]],
                  made: Dict[str, object]) -> Optional[RunRecord]:
    """The record of a merged output (part 1 of 1, so that a later ``--resume`` on it checks its settings), from
    its parts' records in the order merged; ``None`` when the parts carry none.  It is finished when every part
    is and no shard was left out (``--partial``).  The parts' names stay as they were, relative to the folder the
    parts were scored from where they share one (a cluster's tasks run in one folder); where they do not, the
    record names no folder and a resume reads them from its own."""
    recs = [records[str(p)] for p in ordered]
    if not recs or any(r is None for r in recs):
        return None
    folders = {r.folder for r in recs}
    folder = folders.pop() if len(folders) == 1 else ""
    first = recs[0]
    # merged shards: their run's whole list; separate whole runs: no one list to name
    run = dict(first.run) if first.parts > 1 else {**first.run, "volumes": sum(len(r.files) for r in recs),
                                                   "list_sha256": None}
    made = {**made, **{k: joined(*(r.made.get(k) for r in recs)) for k in ("model", "device", "precision")},
            "started": min((str(r.made.get("started", "")) for r in recs), default="")}
    complete = first.parts == 1 or len(recs) == first.parts  # order_parts refused a shard given twice
    return RunRecord(1, 1, [f for r in recs for f in r.files], complete and all(r.finished for r in recs),
                     {f: why for r in recs for f, why in r.errors.items()}, run, folder=folder, made=made)


def _odd_one_out(records: Dict[PathLike, RunRecord], key):
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
