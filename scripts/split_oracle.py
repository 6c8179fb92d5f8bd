"""How faithful the noise-fixed split is: real-scan corruption against an oracle that knows the noise.

A real scan's corruption (``noise.move_anatomy_batch``) can only estimate the noise-free head and its noise.
Here both are known: Colin27 (Debian's ``mricron-data``, a training source, never an evaluation scan) averaged
to 2 mm is the noise-free head, complex Gaussian noise is added (white, or smoothed by a reconstruction filter
with ``--filter``; ``--filter-signal`` smooths the head too, as k-space apodisation does), and the oracle moves
the head *before* the noise, as a scanner records it.  For each slice, algorithm and severity it compares,
against the oracle: the label (truth gap) and a model's prediction of the corrupted slice (prediction gap), for
the project's split and for the earlier one (a real residual added to the moved magnitude, kept here only as
the baseline); and the model's residual on the oracle's own slices.

Example::

    python3 scripts/split_oracle.py --noise 0.02 0.04
    python3 scripts/split_oracle.py --noise 0.02 --filter 0.8 --out oracle.json
    python3 scripts/split_oracle.py --noise 0.03 --filter 0.8 --model runs/model.pt
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from SSIMQualityLib.corruption import make_corruptor, slice_labels  # noqa: E402
from SSIMQualityLib.data import colin27_files  # noqa: E402
from SSIMQualityLib.models import open_model  # noqa: E402
from SSIMQualityLib.motion import apply_motion_batch  # noqa: E402
from SSIMQualityLib.noise import move_anatomy, noise_sigma  # noqa: E402
from SSIMQualityLib.scoring import predict_slices  # noqa: E402
from SSIMQualityLib.volumes import read_nifti_voxels  # noqa: E402

METHODS = ("kspace", "torchio")
SEVERITIES = (0.2, 0.5, 0.8)


def head_slices(n: int = 12) -> list:
    """``n`` axial slices of Colin27 averaged to 2 mm, through the middle of the head."""
    files = [p for p in colin27_files() if p.name.startswith("ch2better")] or colin27_files()
    if not files:
        raise SystemExit("Colin27 not found: apt-get install mricron-data")
    a, _ = read_nifti_voxels(files[0])
    a = np.asarray(a, dtype=np.float32)
    a = a[: a.shape[0] // 2 * 2, : a.shape[1] // 2 * 2, : a.shape[2] // 2 * 2]
    a = a.reshape(a.shape[0] // 2, 2, a.shape[1] // 2, 2, a.shape[2] // 2, 2).mean(axis=(1, 3, 5))
    axis = int(np.argmin(a.shape))  # any axis will do; the shortest keeps the slices large
    idx = np.linspace(0.3 * a.shape[axis], 0.75 * a.shape[axis], n).astype(int)
    return [np.ascontiguousarray(np.take(a, i, axis=axis)) for i in idx]


def magnitude_residual_split(acquired: np.ndarray, transform) -> np.ndarray:
    """The earlier split, as a baseline: non-local means, the moved denoised magnitude plus the real residual."""
    from skimage.restoration import denoise_nl_means

    scale = float(np.percentile(acquired, 99.5))
    x = acquired.astype(np.float64) / scale
    sigma = noise_sigma(x)
    den = (denoise_nl_means(x, patch_size=5, patch_distance=6, h=0.8 * sigma, sigma=sigma, fast_mode=True)
           * scale).astype(np.float32)
    moved = apply_motion_batch(torch.as_tensor(den[None]), [transform])[0].numpy()
    return np.maximum(moved + (acquired - den), 0.0)


def run(level: float, smooth: float, model, seed: int = 1, with_signal: bool = False) -> dict:
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    acquired, corrupted, keys = [], {"oracle": [], "split": [], "earlier": []}, []
    for z, head in enumerate(head_slices()):
        noise = rng.normal(size=head.shape) + 1j * rng.normal(size=head.shape)
        if smooth:
            noise = ndimage.gaussian_filter(noise.real, smooth) + 1j * ndimage.gaussian_filter(noise.imag, smooth)
            if with_signal:  # a k-space filter smooths the head too (the moved head is smoothed alike)
                head = ndimage.gaussian_filter(head, smooth)
        noise *= level * float(head.max()) / noise.real.std()
        acq = np.abs(head + noise).astype(np.float32)
        for mi, method in enumerate(METHODS):
            for sev in SEVERITIES:
                t = make_corruptor(method, sev).sample(head.shape, np.random.default_rng([seed, z, mi, int(sev * 10)]))
                moved = apply_motion_batch(torch.as_tensor(head[None]), [t]).clamp_min(0)[0].numpy()
                acquired.append(acq)
                corrupted["oracle"].append(np.abs(moved + noise).astype(np.float32))
                corrupted["split"].append(move_anatomy(acq, t, seed=[seed, z]))
                corrupted["earlier"].append(magnitude_residual_split(acq, t))
                keys.append(method)
    clean = torch.as_tensor(np.stack(acquired))
    truth, pred = {}, {}
    for name, images in corrupted.items():
        stack = torch.as_tensor(np.stack(images))
        truth[name] = slice_labels(clean, stack).numpy()
        pred[name] = predict_slices(model, stack)
    keys = np.asarray(keys)
    out = {"noise": level, "filter_sigma_px": smooth, "filter_on_signal": with_signal, "samples": len(keys)}
    for name in ("split", "earlier"):
        for method in (*METHODS, "all"):
            k = np.ones(len(keys), bool) if method == "all" else keys == method
            out[f"{name}_{method}"] = {
                "truth_gap": round(float(np.mean(truth[name][k] - truth["oracle"][k])), 4),
                "prediction_gap": round(float(np.mean(pred[name][k] - pred["oracle"][k])), 4)}
    out["oracle_residual_mean"] = round(float(np.mean(pred["oracle"] - truth["oracle"])), 4)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--noise", type=float, nargs="+", default=[0.02, 0.04], help="noise sigma, share of the maximum")
    p.add_argument("--filter", type=float, default=0.0, help="Gaussian reconstruction filter on the noise, px")
    p.add_argument("--filter-signal", action="store_true", help="the filter smooths the head too (apodisation)")
    p.add_argument("--model", type=Path, help="a checkpoint to judge instead of the bundled model")
    p.add_argument("--out", type=Path, help="write the results as JSON")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    model = open_model(args.model)
    results = []
    for level in args.noise:
        r = run(level, args.filter, model, with_signal=args.filter_signal)
        results.append(r)
        for name in ("split", "earlier"):
            cells = "  ".join(f"{m}: truth {r[f'{name}_{m}']['truth_gap']:+.4f} pred {r[f'{name}_{m}']['prediction_gap']:+.4f}"
                              for m in (*METHODS, "all"))
            print(f"noise {level:.3f} filter {args.filter:.1f} {name:8s} {cells}", flush=True)
        print(f"noise {level:.3f} filter {args.filter:.1f} the model's residual on the oracle's slices "
              f"{r['oracle_residual_mean']:+.4f}", flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
