"""How models read the standing ghost band: held-out synthetic slices made with the band never and always.

Since recipe 17 a standing ghost band (``SampleConfig.p_band``, ``synthesis.ghost_band``; recipe 18 caps its
noise at 8 % of the slice's maximum, was 20 %) is in 40 % of the acquisitions. To tell what it taught a model, this
draws the same held-out slices of the current recipe twice, with ``p_band`` 0 and 1
(same seed; the band's noise is one draw in both images, so it also raises the labels), scores it with each model
given, and prints per model the residual's mean and σ and the mean residual per 0.1 bin of the true SSIM
(``realeval.residual_by_truth``, the bins of ``evaluate --real``'s calibration line): where a model over- or
under-reads motion with and without the band.

Example::

    python3 scripts/probe_band.py runs-v10/ssimquality_resnet18_v10.pt Resources/Models/ssimquality_resnet18.pt -n 1500
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from SSIMQualityLib.data import MotionSliceDataset, SampleConfig, build_cache  # noqa: E402
from SSIMQualityLib.evaluation import EVAL_SEED  # noqa: E402
from SSIMQualityLib.models import load_model  # noqa: E402
from SSIMQualityLib.realeval import residual_by_truth  # noqa: E402
from SSIMQualityLib.scoring import predict_prepared  # noqa: E402


def band_residuals(models: Dict[str, object], *, n: int = 1500, seed: int = EVAL_SEED, workers: int = 2,
                   size: int = 128) -> Dict[float, dict]:
    """Per band share (0 and 1): the labels, and per model the residual's mean, σ and mean per truth bin
    (:func:`~SSIMQualityLib.realeval.residual_by_truth`: keyed ``"lo-hi"``, empty bins left out)."""
    out = {}
    for p_band in (0.0, 1.0):
        ds = MotionSliceDataset(n, seed=seed, config=SampleConfig(p_band=p_band))
        x, y = build_cache(ds, size, workers=workers)
        true = y.numpy()
        row = {"labels": true, "by_model": {}}
        for name, model in models.items():
            pred = predict_prepared(model, x, "cpu", 128).numpy()
            res = pred - true
            row["by_model"][name] = {"mean": float(res.mean()), "std": float(res.std()),
                                     "by_truth": residual_by_truth(pred, true)}
        out[p_band] = row
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", help="model files to compare")
    ap.add_argument("-n", type=int, default=1500, help="slices per setting (default 1500)")
    ap.add_argument("--seed", type=int, default=EVAL_SEED, help="held-out seed (default the evaluation's)")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    models = {name: load_model(name) for name in args.models}
    sizes = {int(getattr(m, "input_size", 128)) for m in models.values()}
    if len(sizes) != 1:
        ap.error("the models take different input sizes; compare models of one size")
    result = band_residuals(models, n=args.n, seed=args.seed, workers=args.workers, size=sizes.pop())
    for p_band, row in result.items():
        labels = row["labels"]
        print(f"band in {p_band:.0%} of the slices: n {len(labels)}, mean label {labels.mean():.3f}, "
              f"below 0.6 {np.mean(labels < 0.6):.1%}")
        for name, r in row["by_model"].items():
            cells = ", ".join(f"{k} {v:+.3f}" for k, v in r["by_truth"].items())
            print(f"  {Path(name).name}: µ {r['mean']:+.4f} σ {r['std']:.4f} | by truth {cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
