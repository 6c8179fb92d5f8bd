"""Speed figures on this machine's CPU, written as JSON (``make bench``).

Measures, in one run:
  ssim_pairs_per_s / skimage_ssim_pairs_per_s / ssim_speedup_vs_skimage
      a batch of 256 pairs of 256 × 256 slices
  clahe_slices_per_s / skimage_clahe_slices_per_s / clahe_speedup_vs_skimage
      adaptive histogram equalisation of 32 sample slices at 256², batched and by scikit-image
  kspace_slices_per_s / torchio_motion_slices_per_s / kspace_speedup_vs_torchio
      corruption of real 256 × 256 slices of the sample (severity 0.5)
  factory_samples_per_s_cpu / reference_factory_samples_per_s_cpu / factory_speedup_vs_reference
      training samples (the whole recipe, inputs at 256²) made by the batched factory (batches of 64) and by the
      reference per-sample path, in this process with torch's default threads, the mean rate over 1,024 and 256
      samples (consecutive batches: each differs in cost, so the fastest one would overstate the rate);
      factory_samples_per_s_cpu_2proc: the factory in two processes of one thread each (how a cache is filled)
  factory_samples_per_s_cuda (_group16, _group64, _round8, _8proc), factory_share_of_train_step_cuda,
  train_256_images_per_s_cuda, train_256_fed_by_factory_images_per_s_cuda (_inprocess) (with a GPU)
      the factory on the GPU (batches of 512; _round8: 8 of them made together in groups of 256 and dealt, as a
      streamed run makes them) in this process and in 8, and a 256² ResNet-18 training step fed by it
  precision_chosen
      what the defaults pick on this CPU (bfloat16 only where native: AVX-512 BF16 / AMX)
  train_step_images_per_s (_fp32), train_default_vs_fp32
      ResNet-18 training steps (channels-last) at the network's resolution, in the default precision and in float32
  score_slices_per_s (_bf16), bf16_max_abs_prediction_change
      inference of 256 × 256 slices with the bundled model (_bf16: what --fast gives here)
  bf16_gate_max_change_real, bf16_default_allowed
      the accuracy gate: largest prediction change bfloat16 vs float32 over the foreground slices of the real
      scans (realscans/, else the sample); bfloat16 may be a scoring default only if it is <= 0.005
  score_volume_256x256x150_s_cpu (_fast), score_volume_256x256x150_s_cuda (with a GPU)
      the whole `ssimquality score` command on one volume, model loaded once
  resnet18_gflop_per_slice, cpu_sgemm_gflops, score_bound_slices_per_s_cpu, score_share_of_bound_cpu
      scoring against its arithmetic bound: the network's FLOPs per slice over this CPU's float32 GEMM rate
  score_slices_per_s_cuda (with a GPU; target >= 10,000), cuda_device
      in-memory 256 x 256 x 150 volumes through the streaming scorer, every per-slice step on the GPU
  score_archive_volumes_per_s_cpu (_cuda)
      40 small .nii.gz volumes scored in one process, decoding included, batches filled across volumes
  score_512x512x300_peak_rss_mb
      peak memory of the whole command on a 512 x 512 x 300 int16 volume (target < 2 GB)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from SSIMQualityLib.motion import RandomKSpaceMotion, RandomTorchioMotion, apply_kspace_batch, apply_motion_batch  # noqa: E402
from SSIMQualityLib.resources import SAMPLE_VOLUME  # noqa: E402
from SSIMQualityLib.slices import SliceSampler, fit_to_size, normalize  # noqa: E402
from SSIMQualityLib.ssim import ssim  # noqa: E402
from SSIMQualityLib.volumes import read_volume  # noqa: E402


def _rate(fn, items: int, min_time: float = 2.0) -> float:
    fn()  # warm-up
    n, start = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return items * n / elapsed


def _slices(n: int) -> torch.Tensor:
    vol = read_volume(SAMPLE_VOLUME)
    sampler = SliceSampler(vol.array, (1, 1, 1), seed=0)
    return torch.stack([torch.as_tensor(fit_to_size(normalize(sampler.sample_slice()[0]))) for _ in range(n)])


def bench_ssim(results: dict) -> None:
    from skimage.metrics import structural_similarity

    clean = _slices(256)
    noisy = (clean + 0.05 * torch.randn_like(clean)).clamp(0, 1)
    results["ssim_pairs_per_s"] = _rate(lambda: ssim(clean, noisy), 256)
    a, b = clean.double().numpy(), noisy.double().numpy()
    results["skimage_ssim_pairs_per_s"] = _rate(
        lambda: [structural_similarity(a[i], b[i], data_range=1.0) for i in range(32)], 32)
    results["ssim_speedup_vs_skimage"] = results["ssim_pairs_per_s"] / results["skimage_ssim_pairs_per_s"]


def bench_clahe(results: dict) -> None:
    """Batched CLAHE (the factory's contrast step) against scikit-image, on 32 slices of the sample at 256²."""
    from skimage import exposure

    from SSIMQualityLib.clahe import equalize_adapthist_batch

    imgs = _slices(32).clamp(0, 1)
    limits = torch.linspace(0.005, 0.03, len(imgs), dtype=torch.float64)
    results["clahe_slices_per_s"] = _rate(lambda: equalize_adapthist_batch(imgs, limits), len(imgs))
    arrays = imgs.double().numpy()
    results["skimage_clahe_slices_per_s"] = _rate(
        lambda: [exposure.equalize_adapthist(a, kernel_size=(32, 32), clip_limit=0.01) for a in arrays[:8]], 8)
    results["clahe_speedup_vs_skimage"] = results["clahe_slices_per_s"] / results["skimage_clahe_slices_per_s"]


def bench_motion(results: dict) -> None:
    imgs = _slices(64)
    rng = np.random.default_rng(0)
    ks = RandomKSpaceMotion(severity=0.5)
    transforms = [ks.sample((256, 256), rng) for _ in range(64)]
    results["kspace_slices_per_s"] = _rate(lambda: apply_kspace_batch(imgs, transforms), 64)
    tio = RandomTorchioMotion(severity=0.5)
    ttrans = [tio.sample((256, 256), rng) for _ in range(16)]
    # TorchIO itself (per slice, SimpleITK) against the same model batched on torch (what training and corrupt run).
    results["torchio_motion_slices_per_s"] = _rate(lambda: [t(imgs[i]) for i, t in enumerate(ttrans)], 16)
    results["torchio_batched_slices_per_s"] = _rate(lambda: apply_motion_batch(imgs[:16], ttrans), 16)
    results["torchio_batched_speedup"] = results["torchio_batched_slices_per_s"] / results["torchio_motion_slices_per_s"]
    results["kspace_speedup_vs_torchio"] = results["kspace_slices_per_s"] / results["torchio_motion_slices_per_s"]


def _best_rate(fn, items: int, rounds: int = 3) -> float:
    """Items per second of the fastest of ``rounds`` calls (after one warm-up): robust to a busy machine."""
    fn()
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return items / best


def _mean_rate(fn, items: int, calls: int, finish=None) -> float:
    """Items per second over ``calls`` consecutive calls (after one warm-up).  For the factory: its batches
    differ in cost (each group draws its own matrix, 40 – 384 px), so the fastest of a few batches is the
    luckiest draw, not the rate (best-of-five overstated it by about 15 % on a 2-core CPU).  ``finish`` (e.g. a
    device synchronisation) runs before the clock stops: work still queued on a GPU counts."""
    fn()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    if finish is not None:
        finish()
    return items * calls / (time.perf_counter() - start)


def bench_factory(results: dict) -> None:
    """Training samples per second: the batched factory against the reference per-sample path, same run, same
    recipe (slice, synthesis, contrast, field of view and matrix, motion, noise, label, input at 256²)."""
    from SSIMQualityLib.data import MotionSliceDataset
    from SSIMQualityLib.factory import SampleFactory

    ds = MotionSliceDataset(10 ** 6, seed=0)
    start = [0]

    def reference():
        ds.batch(list(range(start[0], start[0] + 64)))
        start[0] += 64

    factory = SampleFactory(seed=0)
    step = [0]

    def batched():
        factory.batch(step[0], 64)
        step[0] += 1

    results["reference_factory_samples_per_s_cpu"] = _mean_rate(reference, 64, calls=4)
    results["factory_samples_per_s_cpu"] = _mean_rate(batched, 64, calls=16)
    results["factory_speedup_vs_reference"] = (results["factory_samples_per_s_cpu"]
                                               / results["reference_factory_samples_per_s_cpu"])
    # How a cache is filled on this machine: one single-threaded process per core.
    from SSIMQualityLib.data import build_cache

    cores = max(1, min(os.cpu_count() or 1, 4))
    begin = time.perf_counter()
    build_cache(SampleFactory(seed=1), 256, chunk=64, workers=cores, n=64 * 4 * cores)
    results["factory_samples_per_s_cpu_2proc" if cores == 2 else f"factory_samples_per_s_cpu_{cores}proc"] = \
        64 * 4 * cores / (time.perf_counter() - begin)
    if torch.cuda.is_available():
        bench_factory_cuda(results)


def bench_factory_cuda(results: dict, device: str = "cuda", batch: int = 512, workers: int = 8,
                       rounds: int = 3, large_group: int = 1024) -> None:
    """The factory on a GPU and a 256² ResNet-18 training step (bfloat16, channels-last) fed by it.

    factory_samples_per_s_cuda: one process, the device's default group size (``factory.GROUP_SIZE``);
    ..._group16: groups of 16 (the CPU's); ..._group{G}: one batch at a time in the groups a streamed batch
    would have alone (``factory.stream_group_size``: 8 a batch); ..._round{R}: rounds of R batches made
    together and dealt (``SampleFactory.round``), as a streamed run in the training process makes them
    (``training.stream_layout``);
    factory_samples_per_s_cuda_{N}proc: N processes each making rounds on the GPU (what ``train --stream
    --workers N`` runs, rounds as ``stream_layout`` sets them for processes), delivered to this process on the
    CPU; train_256_images_per_s_cuda: the step alone on a batch already on the GPU;
    train_256_fed_by_factory_images_per_s_cuda (_inprocess): steps fed by the N processes (by this process, as
    ``train --workers 0`` streams); factory_share_of_train_step_cuda: the share of a fed step's time that waits
    on data; ..._group{L}_round{R} (factory, in-process training and its data share): the same in groups of
    ``large_group``, rounds of R batches holding 8 groups each, made in the training process (``train --workers
    0 --group-size L --round R``).  ``device`` and sizes are parameters so that the same code runs on the CPU.
    """
    from SSIMQualityLib.factory import SampleFactory, rounds_to_hold_groups
    from SSIMQualityLib.models import build_model
    from SSIMQualityLib.training import TrainConfig, loss_reads_every, stop_stream, stream_batches

    dev = torch.device(device)
    tag = "cuda" if dev.type == "cuda" else dev.type

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    from SSIMQualityLib.factory import stream_group_size
    from SSIMQualityLib.training import stream_layout

    training_group = stream_group_size(batch, dev)
    for group, key in ((None, f"factory_samples_per_s_{tag}"), (16, f"factory_samples_per_s_{tag}_group16"),
                       (training_group, f"factory_samples_per_s_{tag}_group{training_group}")):
        factory = SampleFactory(seed=0, device=dev, group_size=group)
        step = [0]

        def batched(factory=factory, step=step):
            factory.batch(step[0], batch)
            step[0] += 1
            sync()

        results[key] = _mean_rate(batched, batch, calls=2 * rounds)
    def round_rate(group: int, per_round: int) -> float:
        """Samples a second of rounds of ``per_round`` batches in groups of ``group``, one after another."""
        factory, step = SampleFactory(seed=0, device=dev, group_size=group), [0]

        def dealt():
            factory.round(step[0], batch, per_round)
            step[0] += 1
            sync()

        return _mean_rate(dealt, batch * per_round, rounds)

    streamed = TrainConfig(stream=True, workers=0, batch_size=batch, input_size=256, steps=10 ** 6)
    per_round, round_group = stream_layout(streamed, dev)
    if per_round > 1:
        results[f"factory_samples_per_s_{tag}_round{per_round}"] = round_rate(round_group, per_round)
        results[f"factory_round_group_size_{tag}"] = round_group
    # Large groups, one process: a group's launches are shared by four times as many samples as in groups of 256
    # (counted with the GPU's branches on a CPU: 2.1 against 8.0 operations a sample at 1,024 against 256); a
    # batch then needs a round of 8 · large_group / batch batches to hold its 8 matrices,
    # made in the training process (at 256² too large to hand over from a sample process).
    large_round = rounds_to_hold_groups(batch, large_group)
    large = f"group{large_group}_round{large_round}"
    results[f"factory_samples_per_s_{tag}_{large}"] = round_rate(large_group, large_round)
    net = build_model("resnet18", 256).to(dev).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), 1e-4)
    factory = SampleFactory(seed=0, device=dev, group_size=training_group)  # as a streamed run makes them
    x0, y0 = factory.batch(0, batch)

    every, done = loss_reads_every(dev), [0]

    def train_step(x=x0, y=y0):
        x = x.to(dev, non_blocking=True).float().contiguous(memory_format=torch.channels_last)
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            loss = torch.nn.functional.mse_loss(net(x).float(), y.to(dev))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        done[0] += 1
        if done[0] % every == 0:
            loss.item()  # as the training loop reads the loss (on a GPU every few steps)

    results[f"train_256_images_per_s_{tag}"] = _best_rate(lambda: (train_step(), sync()), batch, rounds)
    inprocess = stream_batches(streamed, seed=6, device=dev)  # what train --workers 0 runs

    def fed_inprocess():
        train_step(*next(inprocess))

    results[f"train_256_fed_by_factory_images_per_s_{tag}_inprocess"] = _mean_rate(
        fed_inprocess, batch, 2 * rounds * per_round, sync)  # the warm-up makes round 0; these make what they use
    inprocess = stream_batches(TrainConfig(stream=True, workers=0, batch_size=batch, input_size=256, steps=10 ** 6,
                                           round_batches=large_round, group_size=large_group), seed=7, device=dev)
    results[f"train_256_fed_by_factory_images_per_s_{tag}_inprocess_{large}"] = fed_large = _mean_rate(
        fed_inprocess, batch, 2 * rounds * large_round, sync)
    results[f"factory_share_of_train_step_{tag}_inprocess_{large}"] = max(
        0.0, 1 - fed_large / results[f"train_256_images_per_s_{tag}"])
    inprocess = None  # its last round freed before the sample processes start
    cfg = TrainConfig(stream=True, workers=workers, batch_size=batch, input_size=256, steps=10 ** 6)
    batches = stream_batches(cfg, seed=5, device=dev)
    handed, _ = stream_layout(cfg, dev, handed_over=True)
    results[f"factory_round_batches_{tag}_{workers}proc"] = handed
    for _ in range(2 * workers * handed):  # every process started and one round ahead
        next(batches)
    n, begin = 4 * workers * handed, time.perf_counter()
    for _ in range(n):
        next(batches)
    results[f"factory_samples_per_s_{tag}_{workers}proc"] = n * batch / (time.perf_counter() - begin)
    n, begin = 6 * workers * handed, time.perf_counter()
    for _ in range(n):
        train_step(*next(batches))
    sync()
    fed = n * batch / (time.perf_counter() - begin)
    stop_stream(batches)
    del batches
    results[f"train_256_fed_by_factory_images_per_s_{tag}"] = fed
    results[f"factory_workers_{tag}"] = workers
    results[f"factory_share_of_train_step_{tag}"] = max(0.0, 1 - fed / results[f"train_256_images_per_s_{tag}"])


def _bench_model():
    """The bundled model if present (what users run), else an untrained ResNet-18 of the same shape."""
    from SSIMQualityLib.errors import SSIMQualityError
    from SSIMQualityLib.models import build_model, load_bundled_model

    try:
        return load_bundled_model(), "bundled"
    except SSIMQualityError:
        return build_model("resnet18", 128).eval(), "untrained resnet18 (no bundled model)"


def bench_model(results: dict) -> None:
    from SSIMQualityLib.models import build_model
    from SSIMQualityLib.scoring import predict_slices

    model, which = _bench_model()
    results["model"] = which
    size = model.input_size
    # Training step, ResNet-18 at 256 x 256 input (the network works at its own input_size), bf16 + channels_last.
    net = build_model("resnet18", size).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), 1e-3)
    x = torch.rand(32, 1, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.rand(32)

    from SSIMQualityLib.precision import BFLOAT16, describe, fast_precision

    chosen = fast_precision("cpu")
    results["precision_chosen"] = describe("cpu")

    def step(bf16: bool):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            p = net(x)
        loss = torch.nn.functional.mse_loss(p.float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    # The training default (precision auto) against plain float32 on the same machine.
    results["train_step_images_per_s"] = _rate(lambda: step(chosen == BFLOAT16), 32, min_time=6.0)
    results["train_step_images_per_s_fp32"] = (results["train_step_images_per_s"] if chosen != BFLOAT16
                                               else _rate(lambda: step(False), 32, min_time=6.0))
    results["train_default_vs_fp32"] = results["train_step_images_per_s"] / results["train_step_images_per_s_fp32"]
    results["train_step_resolution"] = size
    slices = torch.rand(64, 256, 256) * 1000
    results["score_slices_per_s"] = _rate(lambda: predict_slices(model, slices, batch_size=32), 64, min_time=4.0)
    results["score_slices_per_s_bf16"] = _rate(lambda: predict_slices(model, slices, batch_size=32, bf16=True), 64,
                                               min_time=4.0)
    real = _slices(64) * 1000
    a = predict_slices(model, real, batch_size=32)
    b = predict_slices(model, real, batch_size=32, bf16=True)
    results["bf16_max_abs_prediction_change"] = float(np.max(np.abs(a - b)))
    bench_bf16_gate(results, model)


def bench_bf16_gate(results: dict, model) -> None:
    """Largest bfloat16-vs-float32 prediction change on real scans' foreground slices (the default's gate)."""
    from SSIMQualityLib.precision import cpu_has_native_bf16
    from SSIMQualityLib.scoring import foreground_slices, predict_slices
    from SSIMQualityLib.slices import acquisition_axis
    from SSIMQualityLib.volumes import list_volume_paths

    if not cpu_has_native_bf16():
        results["bf16_gate_max_change_real"] = None  # --fast keeps float32 here: nothing to gate
        results["bf16_default_allowed"] = False
        return
    real = ROOT / "realscans"
    paths = list_volume_paths([real]) if real.is_dir() else [SAMPLE_VOLUME]
    worst = 0.0
    for path in paths:
        vol = read_volume(path)
        moved = torch.as_tensor(np.moveaxis(vol.array.astype(np.float32), acquisition_axis(vol.spacing), 0).copy())
        fg = foreground_slices(moved.numpy())
        if not fg.any():
            continue
        a = predict_slices(model, moved[fg], batch_size=32)
        b = predict_slices(model, moved[fg], batch_size=32, bf16=True)
        worst = max(worst, float(np.max(np.abs(a - b))))
    results["bf16_gate_max_change_real"] = worst
    results["bf16_gate_scans"] = "realscans/" if real.is_dir() else "bundled sample"
    results["bf16_default_allowed"] = worst <= 0.005


def bench_score_volume(results: dict, tmp: Path) -> None:
    """Whole `ssimquality score` command on a 256 x 256 x 150 volume, model loaded once, CPU."""
    import subprocess

    import SimpleITK as sitk

    vol = read_volume(SAMPLE_VOLUME)
    arr = np.zeros((150, 256, 256), np.int16)
    src = vol.array[np.linspace(0, vol.shape[0] - 1, 150).astype(int)]
    arr[:, 30:30 + src.shape[1], 50:50 + src.shape[2]] = src
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((1.0, 1.0, 1.2))
    path = tmp / "vol256x256x150.nii.gz"
    sitk.WriteImage(img, str(path))
    exe = Path(sys.executable).parent / "ssimquality"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "SSIMQualityLib.cli"]
    for label, extra in (("score_volume_256x256x150_s_cpu", []), ("score_volume_256x256x150_s_cpu_fast", ["--fast"])):
        start = time.perf_counter()
        subprocess.run(cmd + ["score", str(path), "--device", "cpu", "--quiet", "-o", str(tmp / f"{label}.csv")] + extra,
                       check=True, capture_output=True)
        results[label] = time.perf_counter() - start
    if torch.cuda.is_available():
        start = time.perf_counter()
        subprocess.run(cmd + ["score", str(path), "--device", "cuda", "--quiet", "-o", str(tmp / "gpu.csv")],
                       check=True, capture_output=True)
        results["score_volume_256x256x150_s_cuda"] = time.perf_counter() - start


def bench_archive(results: dict, tmp: Path) -> None:
    """Archive scoring in one process: 40 small EPI-like volumes (64 x 64 x 24, .nii.gz), decoding included."""
    import SimpleITK as sitk

    from SSIMQualityLib.batch import score_files

    model, _ = _bench_model()
    vol = read_volume(SAMPLE_VOLUME)
    folder = tmp / "archive"
    folder.mkdir()
    rng = np.random.default_rng(0)
    src = torch.as_tensor(vol.array[np.linspace(10, vol.shape[0] - 10, 24).astype(int)].astype(np.float32))
    small = torch.nn.functional.interpolate(src[None], size=(64, 64), mode="area")[0].numpy()
    for k in range(40):
        img = sitk.GetImageFromArray((small * rng.uniform(0.5, 2.0) + rng.normal(0, 5, small.shape)).astype(np.int16))
        img.SetSpacing((3.5, 3.5, 4.0))
        sitk.WriteImage(img, str(folder / f"epi{k:02d}.nii.gz"))
    paths = sorted(folder.iterdir())
    list(score_files(paths[:2], model))  # warm-up
    start = time.perf_counter()
    done = sum(r.score is not None for r in score_files(paths, model))
    results["score_archive_volumes_per_s_cpu"] = done / (time.perf_counter() - start)
    results["score_archive_volume"] = "64x64x24 int16 .nii.gz, 40 volumes, batches across volumes"
    if torch.cuda.is_available():
        list(score_files(paths[:2], model.cuda(), device="cuda"))
        start = time.perf_counter()
        done = sum(r.score is not None for r in score_files(paths, model, device="cuda"))
        results["score_archive_volumes_per_s_cuda"] = done / (time.perf_counter() - start)
        model.cpu()


def bench_cuda_scoring(results: dict) -> None:
    """In-memory volumes through the streaming scorer on the GPU: slices per second, all steps included."""
    if not torch.cuda.is_available():
        return
    from SSIMQualityLib.scoring import score_volumes

    model, _ = _bench_model()
    model = model.cuda()
    vol = read_volume(SAMPLE_VOLUME)
    arr = np.zeros((150, 256, 256), np.int16)
    src = vol.array[np.linspace(0, vol.shape[0] - 1, 150).astype(int)]
    arr[:, 30:30 + src.shape[1], 50:50 + src.shape[2]] = src
    items = [(k, arr, (1.2, 1.0, 1.0), None) for k in range(20)]
    list(score_volumes(items[:2], model, device="cuda"))
    torch.cuda.synchronize()
    start = time.perf_counter()
    n = sum(int(r.foreground.size) for _, r in score_volumes(items, model, device="cuda"))
    torch.cuda.synchronize()
    results["score_slices_per_s_cuda"] = n / (time.perf_counter() - start)
    results["cuda_device"] = torch.cuda.get_device_name(0)


def bench_flop_bound(results: dict) -> None:
    """Scoring against the arithmetic bound: ResNet-18's FLOPs per slice over this CPU's float32 GEMM rate."""
    from torch.utils.flop_counter import FlopCounterMode

    model, _ = _bench_model()
    x = torch.rand(1, 1, 256, 256)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    flops = counter.get_total_flops()
    a, b = torch.rand(2048, 2048), torch.rand(2048, 2048)
    gemm = _rate(lambda: a @ b, 1, min_time=2.0) * 2 * 2048 ** 3
    results["resnet18_gflop_per_slice"] = flops / 1e9
    results["cpu_sgemm_gflops"] = gemm / 1e9
    results["score_bound_slices_per_s_cpu"] = gemm / flops
    if "score_slices_per_s" in results:
        results["score_share_of_bound_cpu"] = results["score_slices_per_s"] / results["score_bound_slices_per_s_cpu"]


def bench_memory(results: dict, tmp: Path) -> None:
    """Peak RSS of `ssimquality score` on a 512 x 512 x 300 int16 volume (a child process, measured by the OS)."""
    import subprocess

    import SimpleITK as sitk

    arr = np.zeros((300, 512, 512), np.int16)
    zz, yy, xx = np.ogrid[:300, :512, :512]
    arr[((zz - 150) / 130.0) ** 2 + ((yy - 256) / 220.0) ** 2 + ((xx - 256) / 200.0) ** 2 < 1] = 800
    arr += np.random.default_rng(0).integers(0, 40, arr.shape, dtype=np.int16)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.5, 0.5, 0.6))
    path = tmp / "vol512x512x300.nrrd"
    sitk.WriteImage(img, str(path))
    del arr, img
    exe = Path(sys.executable).parent / "ssimquality"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "SSIMQualityLib.cli"]
    code = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", code] + cmd + ["score", str(path), "--device", "cpu", "--quiet", "-o",
                                                                str(tmp / "mem.csv"), "--axis", "0"],
                         check=True, capture_output=True, text=True)
    results["score_512x512x300_peak_rss_mb"] = int(out.stdout.strip().splitlines()[-1]) / 1024.0
    results["score_512x512x300_voxels_mb"] = 512 * 512 * 300 * 2 / 2 ** 20


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench.json")
    args = parser.parse_args(argv)
    results = {"machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                           "torch": torch.__version__, "python": platform.python_version(),
                           "platform": platform.platform()}}
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for step in (bench_ssim, bench_clahe, bench_motion, bench_factory, bench_model, bench_flop_bound,
                     bench_cuda_scoring,
                     lambda r: bench_score_volume(r, Path(tmp)), lambda r: bench_archive(r, Path(tmp)),
                     lambda r: bench_memory(r, Path(tmp))):
            step(results)
            print(json.dumps({k: round(v, 3) for k, v in results.items() if isinstance(v, float)}), flush=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
