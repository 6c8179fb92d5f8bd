"""Speed figures on this machine's CPU, written as JSON (``make bench``).

Measures, in one run:
  ssim_pairs_per_s / skimage_ssim_pairs_per_s / ssim_speedup_vs_skimage
      a batch of 256 pairs of 256 × 256 slices
  kspace_slices_per_s / torchio_motion_slices_per_s / kspace_speedup_vs_torchio
      corruption of real 256 × 256 slices of the sample (severity 0.5)
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

from SSIMQualityLib.motion import RandomKSpaceMotion, RandomTorchioMotion, apply_kspace_batch  # noqa: E402
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


def bench_motion(results: dict) -> None:
    imgs = _slices(64)
    rng = np.random.default_rng(0)
    ks = RandomKSpaceMotion(severity=0.5)
    transforms = [ks.sample((256, 256), rng) for _ in range(64)]
    results["kspace_slices_per_s"] = _rate(lambda: apply_kspace_batch(imgs, transforms), 64)
    tio = RandomTorchioMotion(severity=0.5)
    ttrans = [tio.sample((256, 256), rng) for _ in range(16)]
    results["torchio_motion_slices_per_s"] = _rate(lambda: [t(imgs[i]) for i, t in enumerate(ttrans)], 16)
    results["kspace_speedup_vs_torchio"] = results["kspace_slices_per_s"] / results["torchio_motion_slices_per_s"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench.json")
    args = parser.parse_args(argv)
    results = {"machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                           "torch": torch.__version__, "python": platform.python_version(),
                           "platform": platform.platform()}}
    for step in (bench_ssim, bench_motion):
        step(results)
        print(json.dumps({k: round(v, 2) for k, v in results.items() if isinstance(v, float)}), flush=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
