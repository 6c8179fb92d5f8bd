"""One GPU window, start to end: measure the factory and the training step on the GPU, then train for the time left.

For whoever has a GPU for a fixed window (README, "Training on a GPU").  In one command it

1. measures the sample factory and a 256² training step on this GPU (``Testing/bench.py``'s GPU figures) and
   writes them to ``OUT/bench_gpu.json``;
2. chooses where samples are made (``--layout auto``): sample processes in train's rules, or the training
   process in groups of 1,024 (fewer launches a sample), whichever the bench feeds faster; and sets the number
   of steps from the measured rate so that the run ends, with its learning-rate schedule complete, inside the
   window (``--bench-only`` stops after the bench; ``--bench FILE`` reuses one, also for a ``--timed`` window);
3. trains with fresh samples every step, made on the GPU (``ssimquality train --stream``), checkpointing as it
   goes; if the run stops early with time left, it resumes once in this process's factory (``--workers 0``);
   (with ``--timed``: no bench; the learning-rate schedule runs over the window's training time instead of a
   number of steps, so the run uses the whole window and ends annealed at whatever rate the GPU turns out
   to have: ``train --schedule-minutes``);
4. copies the model, its log and loss plot to ``--export``, the model split into parts below ``--part-mb``
   (with ``.sha256``) where a transfer limits file sizes; rejoin with ``cat model.pt.part* > model.pt``.

Example (a 14-minute window, fine-tuning the bundled model at 256²)::

    python3 scripts/gpu_window.py --minutes 14 --out runs-gpu --export gpu-out

A run cut off by the window's end resumes with the same ``--out`` and ``--steps`` (printed at the start).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the library, for the bundled model's path and a checkpoint's weights


def _bench(out: Path, batch: int, workers: int, timeout: float, device: str, large_group: int = 1024) -> dict:
    """The GPU bench in a child process (its GPU memory is freed before training starts)."""
    code = ("import json, sys; sys.path.insert(0, 'Testing'); import bench; r = {}; "
            f"bench.bench_factory_cuda(r, device={device!r}, batch={batch}, workers={workers}, "
            f"large_group={large_group}); "
            "import torch; r['torch'] = torch.__version__; "
            "r['cuda_device'] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None; "
            f"json.dump(r, open({str(out)!r}, 'w'), indent=1)")
    try:
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=timeout)
        return json.loads(out.read_text())
    except (subprocess.SubprocessError, OSError, ValueError) as exc:
        print(f"gpu_window: bench failed ({exc}); training goes on with a guessed rate", flush=True)
        return {}


#: Sample processes hand over rounds of 8 batches at 128² but 2 at 256² (shared memory), so they make more at 128²
#: than the bench's 256² figure: the fourth window (H200) trained at 5,080 images/s at 128² against the bench's
#: 3,847 samples/s from 8 processes at 256².
PROCESSES_GAIN_BELOW_256 = 5080 / 3847


def fed_rates(bench: dict, tag: str, workers: int, input_size: int, batch: int, large_group: int) -> dict:
    """Images a second each layout would feed a training run at ``input_size``², from the bench (at 256²);
    layouts the bench did not measure are left out.

    "processes": ``workers`` sample processes (or this process, ``workers`` 0) in train's rules, the measured
    256² rate, at a smaller size at most doubled and no more than the processes make there (their 256² rate times
    :data:`PROCESSES_GAIN_BELOW_256`).  "large": this process in
    groups of ``large_group`` (rounds of :func:`~SSIMQualityLib.factory.rounds_to_hold_groups` batches); at 256² the
    measured rate, at a smaller size
    the factory's and the training step's times added (one process does both, one after the other), the step
    taken as no more than 2.5 times faster at 128² than at 256² (measured 2.6 on an H200).
    """
    rates = {}
    key = f"train_256_fed_by_factory_images_per_s_{tag}" + ("" if workers else "_inprocess")
    if bench.get(key):
        rate = float(bench[key])
        if input_size < 256:  # a smaller network is faster, the factory not
            rate *= min(2.0, (256 / input_size) ** 2)
            made = bench.get(f"factory_samples_per_s_{tag}_{workers}proc")
            if made and workers:
                rate = min(rate, float(made) * PROCESSES_GAIN_BELOW_256)
        rates["processes"] = rate
    from SSIMQualityLib.factory import rounds_to_hold_groups

    large = f"group{large_group}_round{rounds_to_hold_groups(batch, large_group)}"
    made, step = bench.get(f"factory_samples_per_s_{tag}_{large}"), bench.get(f"train_256_images_per_s_{tag}")
    if input_size >= 256 and bench.get(f"train_256_fed_by_factory_images_per_s_{tag}_inprocess_{large}"):
        rates["large"] = float(bench[f"train_256_fed_by_factory_images_per_s_{tag}_inprocess_{large}"])
    elif made and step:
        step = float(step) * min(2.5, (256 / input_size) ** 2)
        rates["large"] = 1.0 / (1.0 / float(made) + 1.0 / step)
    return rates


def _split(path: Path, dest: Path, part_mb: float) -> None:
    data = path.read_bytes()
    (dest / f"{path.name}.sha256").write_text(hashlib.sha256(data).hexdigest() + "\n")
    size = int(part_mb * 2 ** 20)
    if len(data) <= size:
        shutil.copy2(path, dest / path.name)
        return
    for k in range(0, len(data), size):
        (dest / f"{path.name}.part{k // size}").write_bytes(data[k:k + size])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, required=True, help="the whole window, this command's start to end")
    p.add_argument("--out", default="runs-gpu", help="the training run's folder (checkpoints, log)")
    p.add_argument("--export", default="", help="copy the model (in parts), log and plots here at the end")
    p.add_argument("--init", default="bundled", help="start from these weights ('bundled', a file, or '' for none)")
    p.add_argument("--input-size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--workers", type=int, default=max(1, min(8, (os.cpu_count() or 2) - 4)),
                   help="processes making samples on the GPU (0: in the training process)")
    p.add_argument("--round", type=int, default=0,
                   help="training batches made together (train --round; 0: train's rule, 8 at 128²)")
    p.add_argument("--group-size", type=int, default=0, help="samples per acquired matrix (0: train's rule)")
    p.add_argument("--layout", choices=("auto", "processes", "large"), default="auto",
                   help="where samples are made: 'processes' (--workers, --round, --group-size), 'large' (the "
                        "training process, groups of --large-group, rounds holding 8 groups a batch), 'auto' "
                        "(whichever the bench measures faster; 'processes' when there is no bench)")
    p.add_argument("--large-group", type=int, default=1024, help="samples per group in the large layout")
    p.add_argument("--bench-only", action="store_true",
                   help="run the bench, write OUT/bench_gpu.json (and to --export), print the layouts' rates, stop")
    p.add_argument("--bench", default="", help="a bench_gpu.json written before (--bench-only): no bench now, its "
                                               "rates choose the layout (also with --timed)")
    p.add_argument("--steps", type=int, default=0, help="fix the steps (a resumed window); 0: from the bench")
    p.add_argument("--timed", action="store_true",
                   help="no bench: the schedule spans the window's training time (train --schedule-minutes)")
    p.add_argument("--startup", type=float, default=30.0,
                   help="with --timed: seconds kept for starting the run (sample processes, validation set)")
    p.add_argument("--reserve", type=float, default=75.0, help="seconds kept for the final save and export")
    p.add_argument("--part-mb", type=float, default=15.0)
    p.add_argument("--device", default="cuda", help="cuda; cpu only to try this script out")
    args = p.parse_args(argv)

    begin = time.time()
    deadline = begin + 60 * args.minutes
    out, export = Path(args.out), Path(args.export) if args.export else None
    out.mkdir(parents=True, exist_ok=True)
    if export:
        export.mkdir(parents=True, exist_ok=True)
    bench = {}
    if args.bench:
        try:
            bench = json.loads(Path(args.bench).read_text())
        except (OSError, ValueError) as exc:  # the bench call failed or timed out: train anyway, as without one
            print(f"gpu_window: no bench from {args.bench} ({exc}); layout and rate as without a bench", flush=True)
    elif args.bench_only or (not args.steps and not args.timed):
        bench = _bench(out / "bench_gpu.json", args.batch_size, args.workers,
                       timeout=max(60.0, (0.9 if args.bench_only else 0.25) * (deadline - time.time())),
                       device=args.device, large_group=args.large_group)
        if export and (out / "bench_gpu.json").is_file():
            shutil.copy2(out / "bench_gpu.json", export / "bench_gpu.json")
        print("gpu_window: bench", json.dumps(bench), flush=True)
    tag = args.device.split(":")[0]
    rates = fed_rates(bench, tag, args.workers, args.input_size, args.batch_size, args.large_group)
    if args.bench_only:
        print(f"gpu_window: fed at {args.input_size}²: " + (", ".join(f"{k} {v:.0f} images/s" for k, v in rates.items())
                                                           or "no rates (the bench failed)"), flush=True)
        return 0
    layout = args.layout
    if layout == "auto":
        layout = max(rates, key=rates.get) if rates else "processes"
    rate = rates.get(layout, 1500.0)  # images per second fed; a guess when the bench failed
    workers, group, per_round = args.workers, args.group_size, args.round
    if layout == "large":
        from SSIMQualityLib.factory import rounds_to_hold_groups

        workers, group, per_round = 0, args.large_group, rounds_to_hold_groups(args.batch_size, args.large_group)
    print(f"gpu_window: layout {layout} ({workers} sample processes"
          + (f", groups of {group}" if group else "") + (f", rounds of {per_round}" if per_round else "")
          + "); fed rates from the bench: " + (", ".join(f"{k} {v:.0f}/s" for k, v in rates.items()) or "none"),
          flush=True)
    # Spawning the sample makers, the validation set and validations take time from the steps: 0.8 of the rate.
    train_s = deadline - time.time() - args.reserve
    steps = args.steps or max(50, int(0.8 * rate * (train_s - 30) / args.batch_size))
    # Timed: the training clock starts with the first batch, after the sample processes and the validation set
    # (--startup): the schedule gets the rest, the same in a retry (a resume checks it).  Should the start take
    # longer, --max-minutes ends the run a little before its schedule, with the learning rate nearly annealed.
    schedule = max(1.0, (train_s - args.startup) / 60) if args.timed else 0.0
    init = args.init
    if init == "bundled":
        from SSIMQualityLib.models import bundled_model_entry, catalog_path

        init = str(catalog_path().parent / bundled_model_entry()["file"])
    if args.timed:
        print(f"gpu_window: steps of {args.batch_size} at {args.input_size}², the schedule over {schedule:.2f} min "
              f"of training ({train_s / 60:.1f} min left for the run)", flush=True)
    else:
        print(f"gpu_window: {steps} steps of {args.batch_size} at {args.input_size}² "
              f"({steps * args.batch_size / 1e6:.2f} M samples) in about {train_s / 60:.1f} min, fed at "
              f"~{rate:.0f}/s", flush=True)

    log = (export or out) / "train.log"
    env = dict(os.environ, PYTHONUNBUFFERED="1", SSIMQUALITY_PROGRESS="0")
    for attempt, workers in enumerate((workers, 0) if workers else (0,)):
        left = (deadline - time.time() - args.reserve) / 60
        if left < 1.0:
            break
        cmd = [sys.executable, "-m", "SSIMQualityLib.cli", "train", "--stream", "--device", args.device,
               "--out", str(out), "--input-size", str(args.input_size), "--batch-size", str(args.batch_size),
               "--lr", str(args.lr), "--workers", str(workers), "--val-samples", "1024", "--max-minutes", f"{left:.2f}"]
        if args.timed:  # about 3 steps a second at 128² on an H200: a validation every minute or so
            cmd += ["--schedule-minutes", f"{schedule:.2f}", "--val-every", "200"]
            cmd += ["--steps", str(args.steps)] if args.steps else []
        else:
            cmd += ["--steps", str(steps), "--val-every", str(max(50, steps // 8))]
        if init:
            cmd += ["--init", init]
        cmd += ["--round", str(per_round)] if per_round else []
        cmd += ["--group-size", str(group)] if group else []
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(f"\n$ {' '.join(cmd)}\n")
            fh.flush()
            rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT).returncode
        print(f"gpu_window: train with {workers} sample processes ended with {rc}", flush=True)
        if rc == 0:
            break
    print(f"gpu_window: {(time.time() - begin) / 60:.1f} min used", flush=True)
    model, last = out / "model.pt", out / "last.ckpt"
    if not model.is_file() and last.is_file():  # the run failed after a checkpoint: keep what it learnt
        from SSIMQualityLib.models import load_model, save_checkpoint

        save_checkpoint(model, load_model(last))
        print(f"gpu_window: no model.pt (the run failed); wrote the weights of {last} to {model}", flush=True)
    if export:
        for name in ("log.csv", "loss.png"):
            if (out / name).is_file():
                shutil.copy2(out / name, export / name)
        if model.is_file():
            _split(model, export, args.part_mb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
