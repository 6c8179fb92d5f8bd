"""The ``ssimquality`` command.

Sub-commands parse arguments and print; the work is done by the library.
Every problem a user can cause ends as one line on stderr
(``ssimquality: error: FILE: problem. what to do``) and a non-zero exit code,
never a traceback (``--debug`` shows it).
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import io
import os
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from . import progress
from .errors import OutputExistsError, SSIMQualityError
from .interrupts import Terminated, deferred_interrupt, terminate_as_interrupt
from .vocabulary import CLINICAL_GOOD, CLINICAL_NAMES, CORRUPTION_COLUMNS, CORRUPTION_METHODS

EXIT_USAGE = 2
EXIT_ERROR = 1
#: The axis options' help: the numbers count in the array order of SimpleITK and Slicer, the reverse of a
#: NIfTI header's (a 33 x 41 x 25 NIfTI file is an array of 25 x 41 x 33).
AXIS_HELP = ("auto (the acquisition axis, from the voxel spacing; default) or 0, 1, 2 in (k, j, i) order, the "
             "reverse of the file's dimensions: 0 gives one slice per index of the file's third dimension, 2 of "
             "its first")
#: How often (seconds) `score` saves the results so far while it runs (env SSIMQUALITY_SAVE_EVERY_S).
SAVE_EVERY_S = 5.0
MODEL_HELP = ("a checkpoint file or a catalogued model's name (`ssimquality models` lists them; default: the "
              "bundled model)")


def _save_every() -> float:
    """``$SSIMQUALITY_SAVE_EVERY_S`` (default :data:`SAVE_EVERY_S`); one line for a value that is not a number of
    seconds of 0 or more (it was an "unexpected ValueError" after the model had loaded)."""
    from .settings import SAVE_EVERY_ENV, env_number

    seconds = env_number(SAVE_EVERY_ENV, unit="seconds", example="30", unset=f"(every {SAVE_EVERY_S:g} s)",
                         zero_ok=True)
    return SAVE_EVERY_S if seconds is None else seconds


def _check_environment() -> None:
    """The settings read from the environment, checked before any work (each has its own home)."""
    from .volumes import memory_limit_setting

    memory_limit_setting()
    _save_every()


def _stdout_gone() -> bool:
    """Whether standard output is a pipe whose reader has closed it (``| head`` after its lines)."""
    try:
        import select

        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poll.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows), or stdout is no file
        return False


def _what_was_kept(args) -> str:
    """The end of the line a stopped command prints: where its finished work is, if anywhere ("finished results
    were kept ... --resume" was printed also when a run stopped before its first save had written nothing)."""
    if args.command == "train":
        ckpt = Path(args.out) / "last.ckpt"
        return (f"the run so far is in {ckpt}: run the same command to resume" if ckpt.is_file() else
                "stopped before the first step: nothing to resume from (samples already cached are kept)")
    out = getattr(args, "output", None) if args.command == "score" else None
    if out and Path(out).exists():
        return (f"the finished volumes are in {out}, nothing half-written remains (run the same command with --resume "
                "to continue)")
    if out:
        return f"stopped before the first save: {out} was not written"
    if args.command == "corrupt":  # its outputs are written whole, at the end ("results were kept": there were none)
        started = getattr(args, "started", None)
        made = [str(f) for f in (args.output, args.report) if f and started is not None and os.path.exists(f)
                and os.path.getmtime(f) >= started]
        if made:
            return f"{' and '.join(made)} {'was' if len(made) == 1 else 'were'} written, whole, before the stop"
        return "nothing of this run was written (its outputs are written whole, at the end)"
    return "finished results were kept, nothing half-written remains"


def _counted(n: int, noun: str) -> str:
    """'1 slice', '3 slices' (the tool's lines said '1 slices')."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _first_few(items: Sequence, shown: int = 3, sep: str = ", ", before_more: str = " ") -> str:
    """The first ``shown`` of ``items`` and how many more, for a line.

    >>> _first_few(["a", "b", "c", "d", "e"]), _first_few(["a"]), _first_few(["x: 1", "y: 2"], 1, "; ", "; ")
    ('a, b, c and 2 more', 'a', 'x: 1; and 1 more')
    """
    more = len(items) - shown
    return sep.join(map(str, items[:shown])) + (f"{before_more}and {more} more" if more > 0 else "")


def _severity(text: str):
    """'0.5' → 0.5; '0.2,0.8' → (0.2, 0.8)."""
    try:
        parts = [float(p) for p in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"severity must be a number in [0, 1] or a range LO,HI, got {text!r}")
    if len(parts) == 1:
        value = parts[0]
    elif len(parts) == 2 and parts[0] <= parts[1]:
        value = (parts[0], parts[1])
    else:
        raise argparse.ArgumentTypeError(f"severity range must be LO,HI with LO <= HI, got {text!r}")
    if not all(0.0 <= p <= 1.0 for p in parts):
        raise argparse.ArgumentTypeError(f"severity must lie in [0, 1], got {text!r}")
    return value


def _seed(text: str) -> int:
    """'3' → 3; refused: negatives and anything not a whole number (the rule of :func:`~SSIMQualityLib.seeds.check_seed`)."""
    from .seeds import check_seed

    try:
        return check_seed(int(text))
    except (ValueError, SSIMQualityError):
        raise argparse.ArgumentTypeError(f"seed must be a whole number of 0 or more (leave --seed out for a fresh "
                                         f"draw), got {text!r}") from None


def _count(text: str) -> int:
    """A whole number of 0 or more."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number of 0 or more, got {text!r}")
    return value


def _at_least(low: int):
    """An argparse type: a whole number of ``low`` or more."""
    def parse(text: str) -> int:
        value = _count(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {text!r}")
        return value
    return parse


#: A whole number of 1 or more.
_positive = _at_least(1)


def _number(low: float, high: float = float("inf"), *, low_open: bool = False):
    """An argparse type: a number in [low, high] (or (low, high] with ``low_open``)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not ((value > low if low_open else value >= low) and value <= high):
            where = (f"above {low:g}" if low_open else f"at least {low:g}") + (
                f" and at most {high:g}" if high != float("inf") else "")
            raise argparse.ArgumentTypeError(f"must be a number {where}, got {text!r}")
        return value
    return parse


def _axis(text: str):
    if text == "auto":
        return None
    if text in ("0", "1", "2"):
        return int(text)
    raise argparse.ArgumentTypeError(f"axis must be auto, 0, 1 or 2, got {text!r}")


def _add_progress_flags(p) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--progress", action="store_true",
                   help="draw progress bars even when stderr is not a terminal (default: only in a terminal)")
    g.add_argument("--quiet", action="store_true", help="no progress bars")


def _show(args) -> Optional[bool]:
    """Progress bars: forced on, forced off, or None (only when stderr is a terminal)."""
    return True if getattr(args, "progress", False) else (False if getattr(args, "quiet", False) else None)


# ----------------------------------------------------------------------------
# corrupt
# ----------------------------------------------------------------------------

def _add_series(p) -> None:
    p.add_argument("--series", default=None, metavar="UID",
                   help="SeriesInstanceUID to read from DICOM folders holding several series (they are refused, "
                        "with the list of UIDs, without it)")


def _add_corrupt(sub) -> None:
    p = sub.add_parser("corrupt", help="corrupt every slice of a volume with simulated motion",
                       description="Corrupt every slice along the acquisition axis with simulated head motion "
                                   "(2-D, as in training), write the result with the input's geometry, and "
                                   "optionally a CSV of the true SSIM of each slice.")
    p.add_argument("input", help="input volume (NIfTI, NRRD, MetaImage, or a DICOM series folder)")
    p.add_argument("output", help="output volume (.nii, .nii.gz, .nrrd, .mha)")
    p.add_argument("--method", choices=list(CORRUPTION_METHODS), default="kspace",
                   help="kspace: our line-replacement algorithm; paper: the paper's k-space variant; "
                        "torchio: TorchIO's motion model; random: kspace or torchio per slice (default kspace)")
    p.add_argument("--severity", type=_severity, default=0.5,
                   help="0 (none) to 1 (severe), or a range LO,HI drawn per slice (default 0.5)")
    p.add_argument("--seed", type=_seed, default=None,
                   help="random seed; the same seed gives the same output (default: a new one each run, printed so "
                        "that the run can be repeated)")
    p.add_argument("--axis", type=_axis, default=None, help=AXIS_HELP)
    p.add_argument("--frame", type=int, default=None,
                   help="frame to use from a 4-D file (0 first; a 3-D file is read as it is)")
    _add_series(p)
    p.add_argument("--report", default=None, help=f"CSV with columns {','.join(CORRUPTION_COLUMNS)} (the true label "
                                                  "per slice, whether it holds enough head to score, its algorithm)")
    p.add_argument("--whole-slice", action="store_true",
                   help="move the whole slice, its noise included (the paper's definition); by default only the "
                        "denoised anatomy moves and the scan's own noise stays (the project's label, see README)")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    _add_progress_flags(p)
    p.set_defaults(func=_run_corrupt)


def _same_file(a: Optional[str], b: Optional[str]) -> bool:
    """Whether two paths name one file (the same path, or links to one file)."""
    if not a or not b:
        return False
    pa, pb = Path(a), Path(b)
    return pa.resolve() == pb.resolve() or (pa.exists() and pb.exists() and os.path.samefile(pa, pb))


def _run_corrupt(args) -> int:
    from .corruption import corrupt_volume, signed_warning
    from .seeds import fresh_seed
    from .outputs import ensure_writable, write_text
    from .volumes import check_output_path, read_volume, write_volume

    # Refuse before any work is done; the input itself is never overwritten, --force or not.
    for name, path, other_name, other in (("output", args.output, "input", args.input),
                                          ("report", args.report, "input", args.input),
                                          ("report", args.report, "output", args.output)):
        if _same_file(path, other):
            raise OutputExistsError(f"the {name} is the {other_name}", path, f"give the {name} another name" + (
                ": an input is never overwritten, --force or not" if other_name == "input" else ""))
    check_output_path(args.output, args.force)  # and a detached header's data file
    if args.report:
        ensure_writable(args.report, args.force, (".csv",))
    vol = read_volume(args.input, frame=args.frame, series_uid=args.series)
    axis = vol.slicing_axis(args.axis)
    warning = signed_warning(vol.array, str(args.input))  # the motion models take magnitudes (slices.magnitude)
    if warning:
        print(warning, file=sys.stderr)
    bar = progress.bar(vol.shape[axis], desc=f"corrupting {Path(args.input).name}", unit="slice", show=_show(args),
                       leave=False)
    # Without --seed a new seed each run, said, so that a corruption one liked can be made again.
    seed = args.seed if args.seed is not None else fresh_seed()
    res = corrupt_volume(vol.array, axis, method=args.method, severity=args.severity, seed=seed,
                         out_dtype=vol.array.dtype, progress=lambda done, total: bar.update(done - bar.n),
                         noise_fixed=not args.whole_slice)
    bar.close()
    write_volume(res.array, vol, args.output, force=args.force)
    if args.report:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(CORRUPTION_COLUMNS)
        for i, (s, fg, m) in enumerate(zip(res.ssim, res.foreground, res.methods)):
            w.writerow([i, f"{s:.6f}", bool(fg), m])
        write_text(args.report, buf.getvalue(), force=args.force)
    s = res.summary()
    print(f"{args.output}: {_counted(s['slices'], 'slice')} along axis {axis}, method {args.method}, seed {seed}; "
          f"true SSIM over {s['over']}: mean {s['mean']:.3f}, min {s['min']:.3f}, max {s['max']:.3f}"
          + ("" if args.seed is not None else f" (--seed {seed} repeats this run)"))
    return 0


# ----------------------------------------------------------------------------
# score
# ----------------------------------------------------------------------------

def _add_score(sub) -> None:
    p = sub.add_parser("score", help="score volumes (files or folders) for motion artefacts",
                       description="Predict the SSIM of every slice of every volume (along the acquisition axis), "
                                   "with a per-volume summary and verdict. Bad files are reported and skipped.")
    p.add_argument("paths", nargs="+", help="volumes (NIfTI, NRRD, MetaImage) or folders (also DICOM series folders)")
    p.add_argument("-o", "--output", default=None, help="results.csv (plus results.summary.csv) or results.json")
    p.add_argument("--recursive", action="store_true", help="look into sub-folders")
    p.add_argument("--model", default=None, help=MODEL_HELP)
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--batch-size", type=_positive, default=None,
                   help="slices per network call, filled across volumes (default: 256 on a GPU, 32 on a CPU)")
    p.add_argument("--axis", type=_axis, default=None, help=AXIS_HELP)
    p.add_argument("--workers", type=_count, default=2,
                   help="volumes read ahead (default 2): worker processes when scoring on a GPU, threads on a CPU")
    p.add_argument("--frame", type=int, default=None,
                   help="frame to score in 4-D files (0 first; 3-D files are read as they are)")
    _add_series(p)
    p.add_argument("--fast", action="store_true",
                   help="bfloat16 where this machine computes it natively (AVX-512 BF16 / AMX CPUs): faster, but "
                        "predictions move by up to ~0.01 (bench), so it is off by default; elsewhere float32 is kept")
    p.add_argument("--report-dir", default=None, help="folder for one PNG per volume and index.html")
    p.add_argument("--iqm", action="store_true", help="add MRIQC-style CNR, CJV, EFC, QI1 to each volume's summary")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    p.add_argument("--resume", action="store_true",
                   help="keep the volumes already in the output (-o) and score only the others")
    p.add_argument("--shard", type=_shard_arg, default=None, metavar="K/N",
                   help="score only part K of N of the volumes (e.g. one SLURM array task each); join the parts' "
                        "outputs with `ssimquality merge`. Under torchrun the ranks share the volumes by themselves")
    _add_progress_flags(p)
    p.set_defaults(func=_run_score)


def _tell_folders_left_out(args) -> None:
    """One line on stderr when sub-folders with image files were not looked into (no --recursive)."""
    from .volumes import folders_left_out

    if not args.recursive:
        left = folders_left_out(args.paths)
        if left:
            print(f"note: {_counted(len(left), 'sub-folder')} with image files not searched "
                  f"({_first_few(left)}); add --recursive to include them", file=sys.stderr)


def _shard_arg(text: str):
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected K/N such as 2/8, got {text!r}") from None
    if not 1 <= k <= n:
        raise argparse.ArgumentTypeError(f"shard {text}: K must be between 1 and N")
    return k, n


def part_output(output: str, rank: int, world: int) -> str:
    """Where rank ``rank`` of a torchrun run writes its part of ``output`` (removed once merged)."""
    p = Path(output)
    suffix = ".json" if p.name.lower().endswith(".json") else ".csv"
    return str(p.with_name(f"{p.name[:-len(suffix)]}.part{rank + 1:03d}of{world:03d}{suffix}"))


def _run_score(args) -> int:
    """``score``, holding the locks of its results file and report folder (:mod:`~SSIMQualityLib.locks`): a second
    run given the same ones is refused instead of saving over this one's."""
    from . import distributed
    from .locks import writer_lock

    rank, world, _ = distributed.world()
    if world > 1:  # each rank its own part (rank 0's merge into -o at the end is not guarded; no report there)
        with writer_lock(part_output(args.output, rank, world) if args.output else None):
            return _score(args)
    with writer_lock(args.output), writer_lock(args.report_dir, "this report"):
        return _score(args)


def _score(args) -> int:
    from . import distributed
    from .batch import shard
    from .iqm import IQM_COLUMNS
    from .models import model_identity, open_model, resolve_device
    from .outputs import ensure_folder, ensure_writable
    from .report import ReportFolder
    from .results import check_results_name, ensure_results_writable
    from .resume import load_results
    from .records import record_path
    from .vocabulary import SUMMARY_COLUMNS
    from .volumes import list_volume_paths

    if args.resume and args.force:  # --force was ignored: the earlier results were kept, not replaced
        raise SSIMQualityError("--resume keeps the volumes already in -o and --force replaces them: give one of the "
                               "two")
    rank, world, _ = distributed.world()
    if world > 1:
        if not args.output:
            raise SSIMQualityError("under torchrun the ranks' results are merged into one file: give -o results.csv")
        if args.report_dir or args.shard:
            raise SSIMQualityError("under torchrun, --report-dir and --shard are not available",
                                   hint="run one process per shard with --shard K/N instead")
        part = part_output(args.output, rank, world)
        if not (args.resume and Path(part).exists()):  # an interrupted run resumes from its parts
            # Every rank refuses the same way before any work; rank 0 writes the merged output at the end.
            ensure_results_writable(args.output, args.force)
        args.final_output, args.output = args.output, part
        args.shard = (rank + 1, world)
        if rank != 0:  # one set of bars, rank 0's
            args.quiet, args.progress = True, False
    # Refuse before any work is done.
    previous = []
    if args.resume and not args.output:
        raise SSIMQualityError("--resume needs the results file to continue (-o)")
    if args.output:
        check_results_name(args.output)
        # The results' record (records.py) beside the output: replaced only as the results are; --resume continues
        # the same run only (check_resume, below, reads the record and refuses one that does not name the results).
        # Checked first: its line says --resume continues that run (the results' own said only --force, which
        # throws an interrupted run's volumes away).
        if not args.resume:
            _refuse_old_record(record_path(args.output), args.force)
        if args.resume and Path(args.output).exists():
            previous = load_results(args.output)
        else:
            ensure_results_writable(args.output, args.force)
    report = None
    if args.report_dir:
        # A resumed run continues its report: index.html lists every volume of the results, new figures are
        # numbered after those already there.  Otherwise an existing report is replaced only with --force.
        if (Path(args.report_dir) / "index.html").exists() and not (args.force or previous):
            ensure_writable(Path(args.report_dir) / "index.html", False)
        report = ReportFolder(ensure_folder(args.report_dir), carried=[r.summary() for r in previous])
    repeats: list = []
    paths = list_volume_paths(args.paths, args.recursive, repeats=repeats)
    if repeats:
        print(f"note: {_counted(len(repeats), 'repeated path')} to volumes already listed left "
              f"out, each volume is scored once ({_first_few(repeats)})", file=sys.stderr)
    _tell_folders_left_out(args)
    everything = list(paths)
    if args.shard:
        paths = shard(paths, *args.shard)
    device = distributed.rank_device(resolve_device(args.device), distributed.world())  # torchrun: one GPU a rank
    asked_fast = bool(args.fast)
    if args.fast:
        from .precision import BFLOAT16, describe, fast_precision

        if fast_precision(device) != BFLOAT16:
            print(f"--fast: keeping {describe(device)}", file=sys.stderr)
            args.fast = False
    model = open_model(args.model, device=device)
    record, earlier, spelling = None, None, {}
    if args.output:
        record, earlier, spelling = _results_record(args, everything, paths, model_identity(args.model), device,
                                                    asked_fast, {r.file for r in previous})
        if previous and earlier is None:
            print(f"note: {args.output} has no record ({record_path(args.output).name}): the settings its results "
                  "were scored with cannot be checked against this run's", file=sys.stderr)
    if previous:
        # One name for a volume given now and for a result: the name the results hold, whatever folder this run
        # started from; without a record (an earlier version's results), the real path from here (./a.nii and
        # a.nii are one volume).
        if earlier is not None:
            name_of, named = (lambda p: spelling.get(str(p), str(p))), (lambda r: r.file)
        else:
            name_of, named = (lambda p: os.path.realpath(str(p))), (lambda r: os.path.realpath(r.file))
        # After the checks above (a refused resume must not first print notes): a volume of this run whose file
        # changed since the results were written is scored again.
        previous, changed = _still_current(previous, args.output, {name_of(p): str(p) for p in paths}, named,
                                           earlier.path_of if earlier is not None else None)
        if report is not None and changed:
            report.entries = [e for e in report.entries if e["file"] not in changed]
        if previous:
            done = {named(r) for r in previous}
            paths = [p for p in paths if name_of(p) not in done]
            print(f"resuming: {_counted(len(previous), 'volume')} already in {args.output}, "
                  f"{len(paths)} to score")
    columns = SUMMARY_COLUMNS + (list(IQM_COLUMNS) if args.iqm else [])
    saver = _ResultsSaver(args.output, columns, record) if args.output else None
    vol_bar = progress.bar(len(paths), desc="volumes", unit="vol", show=_show(args), position=0)
    slice_bar = progress.bar(desc="slices", unit="slice", show=_show(args), position=1, leave=False)
    results = list(previous)
    save_every = _save_every()
    # Ctrl-C (or a scheduler's SIGTERM) stops between batches and volumes, not wherever it lands (a reader pool's
    # lock taken and never released hung the process on its way out); during the final save it waits for it.
    with deferred_interrupt() as stop:
        try:
            _score_loop(args, paths, model, device, results, report, slice_bar, vol_bar, saver, save_every,
                        spelling, stop.check)
        except KeyboardInterrupt:
            if saver is not None and any(r.error is None for r in results):  # keep every finished volume, then stop
                saver.save(results)
                if report is not None:
                    report.write()
            raise
        vol_bar.close()
        slice_bar.close()
        scored = any(r.error is None for r in results)
        if saver is not None and (scored or args.shard):  # a shard (or torchrun rank) always leaves its part
            for p in saver.save(results):
                print(f"wrote {p}")
            saver.finish(results)
        elif args.output:
            print(f"nothing was scored: {args.output} was not written")
    if report is not None and any(r.error is None for r in results):  # an empty report blocked the rerun
        print(f"wrote {report.write()}")
    bad = [r for r in results if r.error is not None]
    good = len(results) - len(bad)
    part = f" (part {args.shard[0]} of {args.shard[1]})" if args.shard else ""
    print(f"{good} of {_counted(len(results), 'volume')} scored{part}"
          + (f"; {len(bad)} could not be scored (see above)" if bad else ""))
    if args.output and good:  # the per-volume lines went to the file: the tally, and which volumes to look at first
        print(verdict_tally([r.summary() for r in results if r.error is None]))
    if world > 1:
        _merge_ranks(args, rank, world)
    return EXIT_ERROR if bad else 0


def _merge_ranks(args, rank: int, world: int) -> None:
    """torchrun: wait for every rank's part, then rank 0 joins them into the output and removes the parts."""
    import torch

    from . import distributed
    from .results import merge_results, summary_path
    from .records import record_path

    distributed.init(torch.device("cpu"))  # gloo: a rendezvous only, no tensors travel
    distributed.barrier()
    if rank == 0:
        parts = [part_output(args.final_output, r, world) for r in range(world)]
        for p in merge_results(parts, args.final_output, force=True).paths:
            print(f"wrote {p} (merged from {world} ranks)")
        for p in parts:
            for f in {Path(p), summary_path(p), record_path(p)}:
                if f.exists():
                    f.unlink()
    distributed.finish()


def verdict_tally(summaries: Sequence[dict], *, shown: int = 3) -> str:
    """One line: how many volumes got each verdict, naming the first few to rescan.

    Volumes are named by their file names, or in full where two of those named share one (a BIDS archive's
    ``sub-01_T1w.nii.gz`` of two sites).

    >>> verdict_tally([{"file": "a/b.nii", "verdict": "good"}, {"file": "c/d.nii", "verdict": "rescan"}])
    'verdicts: 1 good, 1 rescan (d.nii)'
    >>> verdict_tally([{"file": "s1/t1.nii", "verdict": "rescan"}, {"file": "s2/t1.nii", "verdict": "rescan"}])
    'verdicts: 2 rescan (s1/t1.nii, s2/t1.nii)'
    """
    counts: dict = {}
    for s in summaries:
        counts[s["verdict"]] = counts.get(s["verdict"], 0) + 1
    order = [CLINICAL_NAMES[k] for k in sorted(CLINICAL_NAMES)]
    rescan = [s["file"] for s in summaries if s["verdict"] == CLINICAL_NAMES[3]]
    first = [Path(f).name for f in rescan[:shown]]
    first = rescan[:shown] if len(set(first)) < len(first) else first
    named = {CLINICAL_NAMES[3]: f" ({', '.join(first)}" + (f", and {len(rescan) - shown} more"
                                                           if len(rescan) > shown else "") + ")"}
    words = [f"{counts[v]} {v}{named.get(v, '')}" for v in order + sorted(set(counts) - set(order)) if v in counts]
    return "verdicts: " + ", ".join(words)


class _ResultsSaver:
    """Writes ``score``'s results as volumes finish, and their record (:mod:`~SSIMQualityLib.records`).

    Nothing of an earlier run at ``output`` is touched before this run's first save (a run that then scores
    nothing, or is stopped first, leaves the earlier results as they were).  Each save writes the results, then
    this run's record, unfinished, with the results' digest (a run stopped after a save says so; one stopped
    between the two writes has a record that disagrees with its results, which resume and merge refuse).
    :meth:`finish` marks the record finished.
    """

    def __init__(self, output: str, columns, record):
        self.output, self.columns, self.record = output, columns, record
        self.last = time.monotonic()

    def save(self, results) -> list:
        from .records import legacy_record_path
        from .results import write_results

        if legacy_record_path(self.output).is_file():  # an earlier version's record of results replaced now
            legacy_record_path(self.output).unlink()
        self.last = time.monotonic()
        written = write_results(results, self.output, force=True, summary_columns=self.columns)
        self._write_record()  # after the results, naming them: a stop in between leaves the two disagreeing
        return written

    def finish(self, results) -> None:
        self._write_record(finished=True,
                           errors={r.file: r.error.one_line() for r in results if r.error is not None})

    def _write_record(self, **changes) -> None:
        from .records import stamped, write_record

        self.record = self.record._replace(made=stamped(self.record.made), **changes)
        write_record(self.output, self.record.with_results(self.output))


def _results_record(args, everything, paths, model: dict, device, asked_fast: bool, held: set):
    """The record this run's results will carry, the earlier run's record where ``--resume`` continues one (its
    settings checked), and the names the earlier run gave the volumes of ``paths`` (``{path: name}``).
    ``held``: the names of the volumes the earlier results hold.

    What every part of one run shares: the whole list before a split and the settings asked for (nodes that
    differ in bfloat16 support still make one run).  Made after the model loaded: a bad ``--model`` is its own
    one line."""
    from datetime import datetime, timezone

    from .records import RunRecord, check_resume, earlier_names, joined, run_identity

    part, parts = args.shard or (1, 1)  # a whole run is part 1 of 1
    run = run_identity(everything, {"model_sha256": model["sha256"], "axis": args.axis, "frame": args.frame,
                                    "series": args.series, "iqm": bool(args.iqm), "fast": asked_fast})
    earlier = check_resume(args.output, part, parts, run) if args.resume else None
    here = os.getcwd()
    made = {"model": model["name"] or model["file"], "device": str(device),
            "precision": "bfloat16" if args.fast else "float32",
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if earlier is None:
        return RunRecord(part, parts, [str(p) for p in paths], False, {}, run, folder=here, made=made), None, {}
    # The volumes the earlier run was given keep its names (from another working folder too), so that what the
    # results hold and what the run was given stay comparable; a whole run's new volumes (the list may grow)
    # are named in full where this run started elsewhere, since the record's names are read from its folder.
    spelling = earlier_names(earlier, paths, args.output)  # check_resume refused a record without a folder
    moved = os.path.realpath(earlier.folder) != os.path.realpath(here)
    new = [str(p) for p in paths if str(p) not in spelling]
    spelling.update({p: os.path.abspath(p) for p in new if moved})
    given = set(spelling.values())
    # A volume neither held nor given now stays on the list while it exists (the run has not finished it); one
    # since removed (a bad file deleted) is dropped, so that the record can say finished.
    files = [f for f in earlier.files if f in held or f in given or os.path.exists(earlier.path_of(f))]
    files += [spelling.get(p, p) for p in new]
    made.update({k: joined(earlier.made.get(k), made[k]) for k in ("device", "precision")},
                started=earlier.made.get("started", made["started"]))
    return earlier._replace(files=files, finished=False, errors={}, run=run, made=made), earlier, spelling


def _modified(path: str) -> Optional[float]:
    """When a volume last changed: a file's modification time; a DICOM folder's latest slice file's (not the
    folder's own, which changes when a NIfTI is written beside the slices); None when it is gone."""
    from .outputs import matching_suffix
    from .volumes import WRITABLE_SUFFIXES

    try:
        if not os.path.isdir(path):
            return os.path.getmtime(path)
        stamps = [e.stat().st_mtime for e in os.scandir(path)
                  if e.is_file() and not matching_suffix(Path(e.path), WRITABLE_SUFFIXES)]
        return max(stamps, default=os.path.getmtime(path))
    except OSError:
        return None


def _still_current(previous: list, output: str, given: dict, named, path_of) -> tuple:
    """The results of ``output`` that a --resume keeps, and the files of those it drops.  ``given``: this run's
    volumes, {name: path as given now}, ``named(result)`` a result's name in the same terms; ``path_of`` the
    record's reading of a result's file (None: no record).

    A volume of this run whose file changed after the results were last written is scored again (a replaced
    scan kept its old verdict, and the run said it was scored); one not given now is kept as it is, and one
    whose file is gone is kept with a note (nothing is lost)."""
    written = os.path.getmtime(output)
    keep, changed, gone = [], [], []
    where = path_of or (lambda f: f)
    for r in previous:
        name = named(r)
        if name in given:
            stamp = _modified(given[name])
            if stamp is not None and stamp > written:
                changed.append(r.file)
                continue
        elif not os.path.exists(where(r.file)) and not os.path.exists(r.file):
            gone.append(r.file)
        keep.append(r)
    if changed:
        print(f"note: {_counted(len(changed), 'volume')} changed since {output} was written: scored again "
              f"({_first_few(changed)})", file=sys.stderr)
    if gone:
        print(f"note: {_counted(len(gone), 'volume')} in {output} no longer found: "
              f"{'its' if len(gone) == 1 else 'their'} results are kept ({_first_few(gone)})", file=sys.stderr)
    return keep, set(changed)


def _refuse_old_record(record: Path, force: bool,
                       hint: str = "pass --resume (with its --shard, if it was a shard) to continue that run, or "
                                   "--force to start afresh") -> None:
    """Refuse, without ``force``, a record left beside the output by an earlier run (with or without its results:
    they may have been removed since)."""
    from .outputs import ensure_writable

    if record.exists() and not force:
        raise OutputExistsError("an earlier run left its record here", str(record), hint)
    ensure_writable(record, force)


def _score_loop(args, paths, model, device, results, report, slice_bar, vol_bar, saver, save_every,
                spelling, check_interrupt) -> None:
    from tqdm import tqdm

    from .batch import score_files

    for res in score_files(paths, model, device=device, batch_size=args.batch_size, axis=args.axis,
                           workers=args.workers, frame=args.frame, bf16=args.fast, iqm=args.iqm, series_uid=args.series,
                           progress=lambda n: (slice_bar.update(n), check_interrupt()),
                           # Feeding a GPU, decoding is the bottleneck: worker processes. On a CPU the network
                           # is, and processes measured slower than threads (4.1 vs 5.1 volumes/s, 2 cores).
                           processes=device.type == "cuda" and len(paths) > 2):
        vol_bar.update(1)
        res.file = spelling.get(res.file, res.file)  # a resumed part keeps the names it started with
        if res.error is not None:
            progress.say(f"ssimquality: error: {res.error.one_line()}")
        else:
            warning = res.score.warning(res.file)
            if warning:
                progress.say(warning)
            s = res.summary()
            if report is not None:
                report.add(res.file, res.array, res.score, s, direction=res.direction)
            if not args.output:
                n = s["slices_scored"]
                tqdm.write(f"{res.file}: {_counted(n, 'slice')} scored, mean {s['mean_predicted_ssim']:.3f}, "
                           f"min {s['min_predicted_ssim']:.3f} -> {s['verdict']}" if n else
                           f"{res.file}: no slice holds enough head to be scored -> {s['verdict']}")
        res.array = None  # drawn; free the voxels
        results.append(res)
        if saver is not None and res.error is None and time.monotonic() - saver.last >= save_every:
            saver.save(results)  # rewritten atomically as volumes finish: an interrupted run keeps what was done
            if report is not None:  # and its index lists them, figures included, for a --resume to carry
                report.write()
        check_interrupt()


# ----------------------------------------------------------------------------
# iqm
# ----------------------------------------------------------------------------

def _add_iqm(sub) -> None:
    p = sub.add_parser("iqm", help="MRIQC-style no-reference metrics (CNR, CJV, EFC, QI1) on any contrast",
                       description="Compute CNR, CJV, EFC and QI1 as MRIQC defines them, with our own light, "
                                   "contrast-agnostic segmentation. A metric that cannot be computed is empty, "
                                   "with the reason.")
    p.add_argument("paths", nargs="+", help="volumes or folders")
    p.add_argument("-o", "--output", default=None, help="iqm.csv (columns file,cnr,cjv,efc,qi1,qi1_air,reason) or .json")
    p.add_argument("--recursive", action="store_true", help="look into sub-folders")
    p.add_argument("--frame", type=int, default=None,
                   help="frame to use from 4-D files (0 first; 3-D files are read as they are)")
    _add_series(p)
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    _add_progress_flags(p)
    p.set_defaults(func=_run_iqm)


def _run_iqm(args) -> int:
    from .batch import read_or_error
    from .results import check_results_name, rows_to_csv
    from .iqm import IQM_COLUMNS, compute_iqms
    from .outputs import ensure_writable, write_text
    from .volumes import list_volume_paths

    if args.output:
        check_results_name(args.output)
        ensure_writable(args.output, args.force)
    paths = list_volume_paths(args.paths, args.recursive)
    _tell_folders_left_out(args)
    rows, bad = [], 0
    for path in progress.bar(desc="volumes", unit="vol", show=_show(args), total=len(paths), iterable=paths):
        vol, error = read_or_error(path, frame=args.frame, series_uid=args.series)
        if error is not None:  # one file's problem: said, and the others are still measured
            progress.say(f"ssimquality: error: {error.one_line()}")
            bad += 1
            continue
        row = {"file": str(path), **compute_iqms(vol.array, direction=vol.direction).as_dict()}
        rows.append(row)
        if not args.output:
            print(f"{path}: CNR {row['cnr']:.3f}  CJV {row['cjv']:.3f}  EFC {row['efc']:.3f}  QI1 {row['qi1']:.4f}"
                  + (f"  ({row['reason']})" if row["reason"] else ""))
    if args.output and not rows:
        print(f"nothing was measured: {args.output} was not written")
    elif args.output:
        if args.output.lower().endswith(".json"):
            from .outputs import json_text

            write_text(args.output, json_text(rows), args.force)
        else:
            write_text(args.output, rows_to_csv(rows, ["file", *IQM_COLUMNS]), args.force)
        print(f"wrote {args.output}")
    return EXIT_ERROR if bad else 0


# ----------------------------------------------------------------------------
# demo
# ----------------------------------------------------------------------------

def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="corrupt the bundled sample (or a volume of yours) and draw what motion does",
                       description="Corrupt the bundled sample (or --input) with both algorithms, print the SSIM "
                                   "spread, write figures to the output folder (a slice, its k-space, its "
                                   "difference from the clean slice, the true SSIM and the model's prediction) and "
                                   "score the volume with the bundled model.")
    p.add_argument("--out", default="demo-output", help="folder for the figures (default demo-output)")
    p.add_argument("--input", default=None, metavar="VOLUME",
                   help="a volume of yours instead of the bundled sample (its middle slice with head is drawn)")
    p.add_argument("--frame", type=int, default=None, help="frame to use from a 4-D --input (0 first)")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the motion drawn (default 0; the same seed, the same "
                                                       "figures)")
    p.add_argument("--force", action="store_true", help="replace the figures of an earlier demo in the folder")
    p.set_defaults(func=_run_demo)


def _run_demo(args) -> int:
    from .demo import METHODS, figure_path, run_demo
    from .outputs import ensure_writable, output_folder

    if Path(args.out).is_dir():  # refuse before any work
        for method in METHODS:
            ensure_writable(figure_path(args.out, method), args.force)
    with output_folder(args.out):
        run_demo(args.out, seed=args.seed, volume=args.input, frame=args.frame)
    return 0


# ----------------------------------------------------------------------------
# train
# ----------------------------------------------------------------------------

def _add_train(sub) -> None:
    from .training import TrainConfig

    d = TrainConfig()
    p = sub.add_parser("train", help="train a model on synthetic motion (checkpoints, resume)",
                       description="Train the SSIM regressor on on-the-fly samples made from nilearn's MNI152 maps "
                                   "(domain-randomised), with validation, checkpoints and resume.")
    p.add_argument("--out", default=d.out_dir, help=f"run folder: caches, checkpoints, log.csv, loss.png (default {d.out_dir})")
    p.add_argument("--arch", choices=["resnet18", "resnet101"], default=d.arch)
    p.add_argument("--input-size", type=_at_least(32), default=d.input_size,
                   help=f"network resolution (default {d.input_size}; the paper: 256; at least 32)")
    p.add_argument("--batch-size", type=_positive, default=d.batch_size, help=f"default {d.batch_size} (the paper: 100)")
    p.add_argument("--optimizer", choices=["adamw", "adam"], default=d.optimizer, help="default adamw (the paper: adam)")
    p.add_argument("--lr", type=_number(0.0, low_open=True), default=d.lr,
                   help=f"peak learning rate (default {d.lr}; fine-tuning from --init: 1e-4 or less, README)")
    p.add_argument("--loss", choices=["mse", "l1", "huber"], default=d.loss)
    p.add_argument("--balance", type=float, default=d.balance, metavar="POWER",
                   help="weigh each sample's loss by its label's density to the power -POWER (0.5: half way to "
                        "every label range counting alike; default 0, unweighted; the labels crowd near 1). Tried at "
                        "0.5 on v12: it lowered every reading and did not help (README, 'Label balance')")
    p.add_argument("--steps", type=_positive, default=None,
                   help=f"training steps (default {d.steps}; with --schedule-minutes only a cap, none by default)")
    p.add_argument("--schedule-minutes", type=_number(0.0), default=0.0, metavar="M",
                   help="train for M minutes of training time, with the learning-rate schedule spread over them "
                        "instead of over --steps: a fixed window (a lent GPU, a job's wall time) is used whole and "
                        "ends annealed, whatever the machine's speed. The clock starts with the first batch")
    p.add_argument("--train-samples", type=_positive, default=d.train_samples,
                   help=f"samples made once and cached (default {d.train_samples}; at least --batch-size)")
    p.add_argument("--val-samples", type=_positive, default=d.val_samples,
                   help=f"held-out samples for validation (default {d.val_samples})")
    p.add_argument("--val-every", type=_positive, default=d.val_every,
                   help=f"steps between validations and checkpoints (default {d.val_every}; a stop keeps every step)")
    p.add_argument("--seed", type=_seed, default=d.train_seed)
    p.add_argument("--device", default=d.device, help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--workers", type=_count, default=d.workers,
                   help="processes making samples (with --stream on a GPU: processes that each make whole batches "
                        "on the GPU; 0 = in the training process)")
    p.add_argument("--max-minutes", type=_number(0.0), default=0.0,
                   help="stop cleanly after this long of training steps (resume later; 0, the default: no limit)")
    p.add_argument("--no-resume", action="store_true", help="start afresh even if a checkpoint exists")
    p.add_argument("--source", nargs="+", default=(), metavar="PATH",
                   help="your own real volumes (files or folders: IXI, clinical) mixed into training; they are "
                        "corrupted by the noise-fixed rule (README). Never pass the scans you evaluate on")
    p.add_argument("--source-share", type=_number(0.0, 1.0), default=d.source_share,
                   help=f"share of samples drawn from --source (default {d.source_share})")
    p.add_argument("--init", default="", metavar="MODEL",
                   help="start from this model's weights (fine-tune) instead of from scratch: a checkpoint file or a "
                        "catalogued name (`ssimquality models`; e.g. the bundled model's)")
    p.add_argument("--freeze-norm", action="store_true",
                   help="keep the batch-norm statistics that --init brings (fine-tuning on small batches, e.g. 64 on "
                        "a CPU, a model trained on large ones); their scale and shift still learn")
    p.add_argument("--stream", action="store_true",
                   help="fresh samples every step, made ahead by --workers processes, instead of a cached set of "
                        "--train-samples (worth it where there are cores to spare: the sample maker must keep up "
                        "with the network)")
    p.add_argument("--precision", choices=["auto", "float32", "bfloat16"], default=d.precision,
                   help="network arithmetic (default auto: bfloat16 where the GPU or CPU has it natively, "
                        "float32 elsewhere, where emulated bfloat16 is 40-50x slower)")
    p.add_argument("--factory", choices=["batched", "reference"], default=d.factory,
                   help="how samples are made: batched (default; every step batched, on the GPU with --stream; "
                        "README, 'Sample factory') or reference (one sample at a time; always used with --source)")
    p.add_argument("--group-size", type=_count, default=0, metavar="N",
                   help="with --stream: samples that share one acquired matrix (default: the device's group size, "
                        "smaller where a batch would hold fewer than 8 matrices)")
    p.add_argument("--round", type=_count, default=0, metavar="N", dest="round_batches",
                   help="with --stream: training batches made together and dealt, so that each holds a share of "
                        "every group (default: 8 on a GPU, fewer where sample processes hand over rounds of more "
                        "than 128 MiB; 1 on a CPU)")
    _add_progress_flags(p)
    p.set_defaults(func=_run_train)


def _run_train(args) -> int:
    from .training import UNCAPPED_STEPS, TrainConfig, train

    show = _show(args)
    if show is not None:  # also reaches the processes that make samples
        os.environ[progress.PROGRESS_ENV] = "1" if show else "0"

    cfg = TrainConfig(out_dir=args.out, arch=args.arch, input_size=args.input_size, batch_size=args.batch_size,
                      optimizer=args.optimizer, lr=args.lr, loss=args.loss, balance=args.balance,
                      steps=args.steps or (UNCAPPED_STEPS if args.schedule_minutes > 0 else TrainConfig.steps),
                      schedule_minutes=args.schedule_minutes,
                      train_samples=args.train_samples, val_samples=args.val_samples, val_every=args.val_every,
                      checkpoint_every=args.val_every, train_seed=args.seed, device=args.device,
                      workers=args.workers, max_minutes=args.max_minutes, init=args.init,
                      freeze_norm=args.freeze_norm,
                      source=tuple(str(p) for p in args.source), source_share=args.source_share,
                      precision=args.precision, stream=args.stream, factory=args.factory,
                      group_size=args.group_size, round_batches=args.round_batches)
    if not args.stream and args.train_samples < args.batch_size:  # two options together: before any work
        raise SSIMQualityError(f"--train-samples {args.train_samples} is fewer than one batch (--batch-size "
                               f"{args.batch_size})", hint="give at least as many samples as a batch holds")
    from .distributed import world
    from .locks import writer_lock
    from .outputs import output_folder

    # One run in a folder at a time (two interleaved their log rows); a folder made for a run that fails before
    # writing anything is removed again, as every command does.
    with writer_lock(args.out if world().main else None, "this training run"), output_folder(args.out):
        final = train(cfg, resume=not args.no_resume)  # under torchrun rank 0 holds the lock for all

    if world().main:
        print(f"model written to {final}")
    return 0


# ----------------------------------------------------------------------------
# evaluate
# ----------------------------------------------------------------------------

def _add_evaluate(sub) -> None:
    from .evaluation import EVAL_SEED

    p = sub.add_parser("evaluate", help="the paper's evaluation protocol on held-out data",
                       description="Draw N held-out slices (randomisation seeds never used in training; real volumes "
                                   "with --data), corrupt them as in training, compare predicted with true SSIM and "
                                   "write report.json and figures. Also scores clean real scans shipped in packages.")
    p.add_argument("--model", default=None, help=MODEL_HELP)
    p.add_argument("-n", "--samples", type=int, default=10000, help="number of slices (default 10000)")
    p.add_argument("--seed", type=_seed, default=EVAL_SEED, help=f"held-out randomisation seed (default {EVAL_SEED})")
    p.add_argument("--data", nargs="+", default=None, help="held-out volumes or folders (default: synthetic MNI152)")
    p.add_argument("--real", nargs="+", default=None, metavar="PATH",
                   help="real-scan evaluation instead: corrupt every foreground slice of these real scans (files or "
                        "folders) by both algorithms over a severity grid and report how the score follows it")
    p.add_argument("--max-slices", type=_count, default=24,
                   help="with --real: foreground slices per volume, evenly spaced (default 24; 0 = all)")
    p.add_argument("--out", default="evaluation", help="output folder (default evaluation)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--workers", type=int, default=2,
                   help="processes making the held-out synthetic slices (default 2; real volumes: one)")
    p.add_argument("--force", action="store_true", help="overwrite an existing report")
    _add_progress_flags(p)
    p.set_defaults(func=_run_evaluate)


def _run_evaluate(args) -> int:
    from .models import open_model, resolve_device
    from .outputs import ensure_writable, output_folder

    out = Path(args.out)
    if out.exists():
        ensure_writable(out / "report.json", args.force)  # refuse before any work
    if args.samples < 1:
        raise SSIMQualityError(f"-n/--samples must be at least 1, got {args.samples}")
    device = resolve_device(args.device)
    model = open_model(args.model, device=device)
    with output_folder(out):
        if args.real:
            return _run_evaluate_real(args, model, device, out)
        return _run_evaluate_synthetic(args, model, device, out)


def _run_evaluate_synthetic(args, model, device, out: Path) -> int:
    from .evaluation import clean_real_check, evaluate
    from .outputs import json_text
    from .models import model_identity

    bar = progress.bar(args.samples, desc="held-out slices", unit="slice", show=_show(args))
    report = evaluate(model, n=args.samples, seed=args.seed, data=args.data, device=device, workers=args.workers,
                      out_dir=out, progress=bar.update, model_info=model_identity(args.model))
    bar.close()
    report["clean_real"] = clean_real_check(model, device=device)
    (out / "report.json").write_text(json_text(report, indent=2), encoding="utf-8")
    print(f"residual mean {report['residual_mean']:+.4f}  std {report['residual_std']:.4f}  "
          f"(stratified by truth, 0.40-1.00: {report['residual_std_stratified']:.4f})  "
          f"accuracy 3/5/10/clinical {report['accuracy_3']:.3f} / {report['accuracy_5']:.3f} / "
          f"{report['accuracy_10']:.3f} / {report['accuracy_clinical']:.3f}")
    print("residual by true class: " + "  ".join(
        f"{name} (n={v['n']}) mean {v['mean']:+.4f} std {v['std']:.4f}" for name, v in report["residual_by_true_class"].items()))
    cr = report["clean_real"]
    if cr["slices"]:
        print(f"clean real scans: {cr['fraction_good']:.1%} of {cr['slices']} foreground slices predicted >= {CLINICAL_GOOD}")
    print(f"report: {out / 'report.json'}")
    return 0


def _run_evaluate_real(args, model, device, out: Path) -> int:
    from .models import model_identity
    from .realeval import evaluate_real, headline

    bar = progress.bar(0, desc="real slices", unit="slice", show=_show(args), leave=False)
    report = evaluate_real(model, args.real, seed=args.seed, max_slices=args.max_slices or None, device=device,
                           out_dir=out, progress=bar.update, total=lambda n: setattr(bar, "total", n),
                           model_info=model_identity(args.model))
    bar.close()
    for skipped in report["skipped"]:  # left out; the others were evaluated (it used to stop at the first)
        print(f"ssimquality: error: {skipped['error']}", file=sys.stderr)
    for line in headline(report):
        print(line)
    print(f"report: {out / 'report.json'} (per-slice samples: {out / 'samples.csv'})")
    if report["skipped"]:
        n = len(report["skipped"])
        print(f"{_counted(n, 'volume')} could not be read and {'was' if n == 1 else 'were'} left out (see above)")
    return EXIT_ERROR if report["skipped"] else 0  # as score's: a pipeline reading only the status sees them


# ----------------------------------------------------------------------------
# compare
# ----------------------------------------------------------------------------

def _add_compare(sub) -> None:
    p = sub.add_parser("compare", help="the model against MRIQC-style IQMs on corrupted held-out scans",
                       description="Corrupt held-out real scans (shipped in packages, never used in training) at a "
                                   "range of severities; report Spearman's rho of the model's mean predicted SSIM "
                                   "and of CNR, CJV, EFC, QI1 with the true mean SSIM, and each one's agreement "
                                   "(rho with lower-is-better metrics negated, so higher always agrees with the "
                                   "truth); write JSON and a PNG. `make compare` runs it on the real-scan set.")
    p.add_argument("--model", default=None, help=MODEL_HELP)
    p.add_argument("--data", nargs="+", default=None,
                   help="held-out volumes or folders (default: the real scans nibabel ships; `make realscans` "
                        "collects more)")
    p.add_argument("--out", default="comparison", help="output folder (default comparison)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--force", action="store_true", help="overwrite an existing comparison.json")
    _add_progress_flags(p)
    p.set_defaults(func=_run_compare)


def _run_compare(args) -> int:
    from .evaluation import compare_with_iqms
    from .models import open_model, resolve_device
    from .outputs import ensure_writable, output_folder
    from .volumes import list_volume_paths

    out = Path(args.out)
    if out.exists():
        ensure_writable(out / "comparison.json", args.force)
    device = resolve_device(args.device)
    model = open_model(args.model, device=device)
    scans = [(p, None, str(p)) for p in list_volume_paths(args.data)] if args.data else None
    with output_folder(out):
        bar = progress.bar(desc="corrupted volumes", unit="vol", show=_show(args))
        rep = compare_with_iqms(model, scans=scans, device=device, out_dir=out, progress=bar.update)
        bar.close()
    print(f"{'':18s}{'direction':>18s}{'rho':>9s}{'agreement':>11s}   (agreement: higher = follows the true SSIM)")
    for key, info in rep["metrics"].items():
        print(f"{key:18s}{info['direction']:>18s}{info['spearman_rho']:>+9.3f}{info['agreement_rho']:>+11.3f}")
    print("clinical agreement: " + ", ".join(f"{k} {v:.1%}" for k, v in rep["clinical_agreement"].items()))
    print(f"wrote {out / 'comparison.json'} and {out / 'comparison.png'}")
    return 0


# ----------------------------------------------------------------------------
# merge
# ----------------------------------------------------------------------------

def _add_merge(sub) -> None:
    p = sub.add_parser("merge", help="join the outputs of sharded `score --shard K/N` runs into one",
                       description="Join the result files that `ssimquality score --shard K/N -o part-K.csv` wrote "
                                   "(CSV with their .summary.csv, or JSON) into one output, in shard order; or "
                                   "separate whole runs (one a site) whose settings agree, in the order given. Each "
                                   "part's record (part-K.csv.record.json) tells which shard it is: a missing, doubled "
                                   "or unfinished shard is refused, naming it. Exit status 1 when volumes in the parts "
                                   "could not be scored, as score's.")
    p.add_argument("parts", nargs="+", help="the parts' result files, in any order (parts without a record: "
                                            "in the order given)")
    p.add_argument("-o", "--output", required=True, help="merged results (.csv or .json, as the parts)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.add_argument("--partial", action="store_true",
                   help="merge even when shards of the run are missing or unfinished (said on stderr); by default "
                        "merge refuses, naming them")
    p.set_defaults(func=_run_merge)


def _run_merge(args) -> int:
    from .errors import UnreadableFileError
    from .results import ensure_results_writable, merge_results, summary_path
    from .records import record_path

    written = (args.output, summary_path(args.output))  # what the merge writes
    for part in args.parts:
        if any(_same_file(a, b) for a in written for b in (part, summary_path(part), record_path(part))):
            raise SSIMQualityError("the output would write over this part or its summary or record", part,
                                   "give -o a new file (--force or not)")
        if not Path(part).is_file() and not record_path(part).is_file():  # a record alone: merge names it
            raise UnreadableFileError("no such results file", part, "give the files the shards wrote with -o")
    ensure_results_writable(args.output, args.force)
    _refuse_old_record(record_path(args.output), args.force, "pass --force to replace it, or give -o a new file")
    merged = merge_results(args.parts, args.output, force=args.force, partial=args.partial)
    for line in merged.notes:
        print(line, file=sys.stderr)
    for p in merged.paths:
        print(f"wrote {p}")
    failed = [line for _, line in sorted(merged.failed.items())]
    shown = _first_few(failed, 3, "; ", "; ")
    print(f"{_counted(merged.volumes, 'volume')} merged"
          + (f"; {len(failed)} could not be scored in the parts: {shown}" if failed else ""))
    return EXIT_ERROR if failed else 0  # as score's: a pipeline that reads only the status must not miss them


def _add_models(sub) -> None:
    p = sub.add_parser("models", help="list the catalogued models, or add a trained one to your catalogue",
                       description="Models are catalogued with their SHA-256 (checked on every load): the bundled "
                                   "ones and your own (SSIMQUALITY_USER_DIR or ~/.ssimquality, models/). A "
                                   "catalogued model's name works wherever a model is asked for (--model, --init, "
                                   "the Slicer panel's list).")
    actions = p.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    p.set_defaults(func=_run_models_list, json=False)
    listing = actions.add_parser("list", help="every catalogued model (the default)")
    listing.add_argument("--json", action="store_true", help="the entries as JSON, with their files and SHA-256")
    listing.set_defaults(func=_run_models_list)
    add = actions.add_parser("add", help="copy a trained checkpoint into your catalogue under a name",
                             description="Copies CHECKPOINT (e.g. a run's model.pt) into your catalogue as a "
                                         "float16 release copy with its SHA-256, under NAME; the Slicer panel "
                                         "and --model NAME then find it.")
    add.add_argument("checkpoint", help="a checkpoint written by ssimquality train")
    add.add_argument("name", help="the name to find it by (not a bundled model's)")
    add.add_argument("--description", default="", help="a line saying what it is (data, recipe)")
    add.add_argument("--force", action="store_true", help="replace a model of yours with the same name")
    add.set_defaults(func=_run_models_add)


def _run_models_list(args) -> int:
    import json

    from .models import model_entries, user_models_dir

    entries = model_entries()
    if args.json:
        print(json.dumps(entries, indent=2))
        return 0
    width = max(len(e["name"]) for e in entries) if entries else 4
    for e in entries:
        print(f"{e['name']:<{width}}  {e['where']:<7}  {e.get('input_size', '?')}²  "
              f"sha256 {e['sha256'][:12]}  {e['path']}")
        if e.get("description"):
            print(f"{'':<{width}}  {e['description']}")
    if not any(e["where"] == "user" for e in entries):
        print(f"(none of your own yet: `ssimquality models add CHECKPOINT NAME` catalogues one in {user_models_dir()})")
    return 0


def _run_models_add(args) -> int:
    import shlex

    from .models import register_user_model, user_models_dir

    entry = register_user_model(args.checkpoint, args.name, args.description, replace=args.force)
    print(f"catalogued {entry['name']!r} as {user_models_dir() / entry['file']} (sha256 {entry['sha256'][:12]}); "
          f"use it with --model {shlex.quote(entry['name'])}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with its errors in one line, like every other refusal of the tool (argparse's own print the
    whole usage block first); the exit code stays argparse's 2, a wrong command line."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message.rstrip('.')}. See {self.prog} --help.\n")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(
        prog="ssimquality",
        description="Reference-free motion-artefact quality of MR brain images (predicted SSIM).")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _add_score(sub)
    _add_merge(sub)
    _add_corrupt(sub)
    _add_iqm(sub)
    _add_demo(sub)
    _add_train(sub)
    _add_evaluate(sub)
    _add_compare(sub)
    _add_models(sub)
    for command in sub.choices.values():  # also after the command (`ssimquality iqm x.nii --debug`)
        nested = [a for a in command._actions if isinstance(a, argparse._SubParsersAction)]
        for each in [command, *(p for a in nested for p in a.choices.values())]:  # `models add ... --debug`
            each.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                              help="show full tracebacks on errors")
    parser.commands = sub.choices
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        parser = build_parser()  # imports torch (for the training defaults): seconds
    except KeyboardInterrupt:  # a Ctrl-C here was a page of traceback from inside torch's import
        print("ssimquality: interrupted while starting; nothing was done", file=sys.stderr)
        return 130
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # refused by the command's own parser, so that the line names that command's --help
        parser.commands.get(getattr(args, "command", None), parser).error(
            f"unrecognized arguments: {' '.join(unknown)}")
    args.started = time.time()  # what a stopped command made is what is newer than this
    try:
        _check_environment()
        # Imported here, inside the try: torch loads with it (seconds), and a Ctrl-C then was a traceback.
        from .slices import own_warning_lines

        with own_warning_lines(), terminate_as_interrupt():  # each command says it in a line naming the file
            code = int(args.func(args) or 0)
        sys.stdout.flush()  # here, where a reader that has gone away is caught, not at the interpreter's exit
        return code
    except BrokenPipeError as exc:
        if not _stdout_gone():  # a pipe of the command's own: a real error
            if args.debug:
                raise
            return _unexpected(exc)
        # `ssimquality score ... | head`: the reader has all it wanted.
        with contextlib.suppress(OSError):  # no second error when Python flushes stdout at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # as a shell reports a program ended by SIGPIPE
    except SSIMQualityError as exc:
        if args.debug:
            raise
        print(f"ssimquality: error: {exc.one_line()}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt as exc:
        how = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        print(f"ssimquality: {how}; {_what_was_kept(args)}", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    except Exception as exc:  # a bug, not a user error: still one line unless --debug
        if args.debug:
            raise
        return _unexpected(exc)


def _unexpected(exc: BaseException) -> int:
    """The one line for an error that is a bug, not the user's; the exit code."""
    print(f"ssimquality: error: unexpected {type(exc).__name__}: {' '.join(str(exc).split())[:300]} "
          f"(run again with --debug for the traceback and report it)", file=sys.stderr)
    return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
