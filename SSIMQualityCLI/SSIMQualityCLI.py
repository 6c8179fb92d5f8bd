#!/usr/bin/env python-real
"""Slicer CLI module: score one volume, or a folder of them, and write tables (Slicer Execution Model).

Slicer runs it as ``SSIMQualityCLI.py [--model M] [--device D] [--batch-size N] [--fast] [--summaryTable S]
input output`` (booleans are passed bare; M a checkpoint file or a catalogued model's name), or with
``--inputFolder DIR [--summaryTable S] output`` for a folder, and
reads progress from ``<filter-…>`` lines on stdout.  Outside Slicer it is a plain command with the same
arguments.  All work is done by SSIMQualityLib.
"""
import argparse
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
for _candidate in (_HERE, os.path.dirname(_HERE)):
    if os.path.isdir(os.path.join(_candidate, "SSIMQualityLib")):
        sys.path.insert(0, _candidate)
        break


def _say(tag, text):
    print(f"<{tag}>{text}</{tag}>", flush=True)


def main(argv=None):
    from SSIMQualityLib.vocabulary import DEVICES  # plain names: no torch before the arguments are read

    parser = argparse.ArgumentParser(description="Score a volume, or every volume in a folder, for motion artefacts "
                                                 "(predicted SSIM per slice).")
    parser.add_argument("files", nargs="*", metavar="inputVolume outputTable",
                        help="the volume to score and its per-slice table; with --inputFolder, only the table")
    parser.add_argument("--inputFolder", default="", help="score every volume in this folder instead")
    parser.add_argument("--summaryTable", default="", help="one row per volume")
    parser.add_argument("--model", default="")
    parser.add_argument("--device", default="auto", choices=DEVICES)
    parser.add_argument("--batch-size", dest="batchSize", type=int, default=32)
    parser.add_argument("--fast", action="store_true")  # Slicer passes booleans bare
    args = parser.parse_args(argv)
    # Slicer passes the index parameters that are set, in order: the volume (unless a folder is scored) and the table.
    if args.inputFolder:
        if not 1 <= len(args.files) <= 2:
            parser.error("with --inputFolder give the output table (the input volume is ignored)")
        args.inputVolume, args.outputTable = "", args.files[-1]
    elif len(args.files) != 2:
        parser.error("give the input volume and the output table, or --inputFolder and the output table")
    else:
        args.inputVolume, args.outputTable = args.files

    from SSIMQualityLib.errors import SSIMQualityError
    from SSIMQualityLib.models import open_model, resolve_device

    print("<filter-start><filter-name>SSIMQualityCLI</filter-name>"
          "<filter-comment>Scoring slices for motion artefacts</filter-comment></filter-start>", flush=True)
    try:
        if args.batchSize < 1:
            raise SSIMQualityError(f"batch size must be at least 1, got {args.batchSize}")
        _say("filter-progress-text", "loading the model")
        device = resolve_device(args.device)
        if args.fast:  # said, as `ssimquality score --fast` says it: the option changed nothing here
            from SSIMQualityLib.precision import BFLOAT16, describe, fast_precision

            if fast_precision(device) != BFLOAT16:
                _warn(f"warning: fast mode: keeping {describe(device)}")
        model = open_model(args.model or None, device=device)
        failed = _score_folder(args, model, device) if args.inputFolder else _score_volume(args, model, device)
    except SSIMQualityError as exc:
        print(f"SSIMQualityCLI: error: {exc.one_line()}", file=sys.stderr, flush=True)
        return 1
    print("<filter-end><filter-name>SSIMQualityCLI</filter-name><filter-time>0</filter-time></filter-end>", flush=True)
    return 1 if failed else 0


def _warn(line) -> None:
    """A warning on stderr, where the Slicer module's job collects lines starting ``warning:``."""
    if line:
        print(line, file=sys.stderr, flush=True)


def _score_volume(args, model, device) -> int:
    from SSIMQualityLib.batch import VolumeResult
    from SSIMQualityLib.results import write_slice_table
    from SSIMQualityLib.scoring import score_array
    from SSIMQualityLib.slices import own_warning_lines
    from SSIMQualityLib.volumes import read_volume

    _say("filter-progress-text", "reading the volume")
    vol = read_volume(args.inputVolume)
    total = vol.shape[vol.slicing_axis()]  # as score_array slices it
    _say("filter-progress", "0.1")
    _say("filter-progress-text", f"scoring {total} slices")
    done = [0]

    def progress(n):
        done[0] += n
        _say("filter-progress", f"{0.1 + 0.85 * done[0] / max(1, total):.3f}")

    with own_warning_lines():  # said below, naming the file
        score = score_array(model, vol.array, vol.spacing, device=device, batch_size=args.batchSize,
                            bf16=args.fast, progress=progress, direction=vol.direction)
    result = VolumeResult(args.inputVolume, score=score)
    _warn(score.warning(str(args.inputVolume)))
    s = result.summary()
    _say("filter-progress-text", "writing the table")
    write_slice_table(result, args.outputTable, force=True)  # Slicer hands over a fresh temporary path
    if args.summaryTable:  # the volume's one row here too (it was written in folder mode only)
        from SSIMQualityLib.results import write_table
        from SSIMQualityLib.vocabulary import SUMMARY_COLUMNS

        write_table([result.summary()], SUMMARY_COLUMNS, args.summaryTable, force=True)
    _say("filter-comment", f"mean predicted SSIM {s['mean_predicted_ssim']:.3f}, min {s['min_predicted_ssim']:.3f}, "
                           f"verdict {s['verdict']}")
    _say("filter-progress", "1")
    return 0


def _score_folder(args, model, device) -> int:
    """Every volume of the folder: per-slice rows (with the file) and one summary row per volume (a file that
    could not be scored: its row says "not scored", and one line on stderr says why).

    Returns 1 only when no volume could be scored: Slicer reads a CLI module's outputs back only when it
    exits with 0 (any other status is "completed with errors", and the tables of every good volume were lost
    with the one bad file's)."""
    from SSIMQualityLib.batch import score_files
    from SSIMQualityLib.results import write_table
    from SSIMQualityLib.vocabulary import SLICE_COLUMNS, SUMMARY_COLUMNS
    from SSIMQualityLib.volumes import list_volume_paths

    paths = list_volume_paths([args.inputFolder])
    _say("filter-progress", "0.05")
    slices, summaries, failed = [], [], 0
    for k, res in enumerate(score_files(paths, model, device=device, batch_size=args.batchSize, bf16=args.fast), 1):
        if res.error is not None:
            print(f"SSIMQualityCLI: error: {res.error.one_line()}", file=sys.stderr, flush=True)
            failed += 1
            summaries.append(res.summary())  # "not scored", and why
        else:
            _warn(res.score.warning(res.file))
            slices += res.slice_rows()
            summaries.append(res.summary())
        _say("filter-progress-text", f"{k} of {len(paths)} volumes")
        _say("filter-progress", f"{0.05 + 0.9 * k / len(paths):.3f}")
    _say("filter-progress-text", "writing the tables")
    write_table(slices, SLICE_COLUMNS, args.outputTable, force=True)
    if args.summaryTable:
        write_table(summaries, SUMMARY_COLUMNS, args.summaryTable, force=True)
    _say("filter-comment", f"{len(paths) - failed} of {len(paths)} volumes scored"
                           + (f"; {failed} could not be (see the errors)" if failed else ""))
    _say("filter-progress", "1")
    return 1 if failed and failed == len(paths) else 0


if __name__ == "__main__":
    sys.exit(main())
