"""Where a model's error on the training recipe comes from: residuals split by each factor of a sample.

Draws samples from the reference path (:class:`~SSIMQualityLib.data.MotionSliceDataset`, a seed never used in
training), records for each what it was made of (motion algorithm, background, source, acquired matrix, whether
the field of view was kept native, how many sides of the view cut into the head, noise), scores the corrupted
slices with the model and prints, per factor level: count, mean residual (predicted − true), its standard
deviation and the level's share of the total squared error.  The recipe's fields can be overridden to isolate
one factor (``--config '{"p_native": 0, "matrix": [250, 256]}'``).  Writes the per-sample table with ``--csv``.

Example::

    python3 scripts/error_factors.py --model Resources/Models/ssimquality_resnet18.pt -n 1536
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from SSIMQualityLib.data import MotionSliceDataset, SampleConfig  # noqa: E402
from SSIMQualityLib.models import load_model  # noqa: E402
from SSIMQualityLib.scoring import predict_prepared  # noqa: E402
from SSIMQualityLib.slices import head_boxes, prepare_input  # noqa: E402

MATRIX_BINS = [(0, 64), (65, 128), (129, 255), (256, 256), (257, 10 ** 6)]


class _Recorder:
    """Stands in for the dataset's random motion or its source: the same draws, and what each one picked."""

    def __init__(self, inner, note):
        self.inner, self.note = inner, note

    def sample(self, shape, rng):  # the motion
        t = self.inner.sample(shape, rng)
        self.note("motion", "kspace" if "kspace" in type(t).__name__.lower() else "torchio")
        return t

    def pick(self, rng):  # the source
        s = self.inner.pick(rng)
        self.note("source", "synthetic" if s.synthetic else ("anatomy" if s.adds_noise else "user"))
        return s


class RecordingDataset(MotionSliceDataset):
    """The reference path, unchanged in every draw, noting each sample's factors in ``self.factors``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.factors, self._index = {}, None
        self.motion = _Recorder(self.motion, self.note)
        self.source = _Recorder(self.source, self.note)

    def note(self, key: str, value) -> None:
        self.factors[self._index][key] = value

    def clean_slice(self, index, rng):
        self._index = index
        self.factors[index] = {"motion": "none"}  # still samples never ask the random motion
        out = super().clean_slice(index, rng)
        self.note("noise", out[1])
        return out

    def acquire(self, canvas, rng):
        out = super().acquire(canvas, rng)
        self.note("native", out is canvas)
        return out

    def background(self, rng):
        kind = super().background(rng)
        self.note("background", kind)
        return kind


def _sides_cut(clean: torch.Tensor) -> int:
    """How many sides of the acquired view the head touches (0: a view with air all round; 4: inside the head)."""
    rows, cols = head_boxes(clean[None])
    h, w = clean.shape
    return int(rows[0, 0] == 0) + int(rows[0, 1] == h) + int(cols[0, 0] == 0) + int(cols[0, 1] == w)


def _matrix_bin(longest: int) -> str:
    for lo, hi in MATRIX_BINS:
        if lo <= longest <= hi:
            return f"{lo}-{hi}" if hi < 10 ** 6 else f">{lo - 1}"
    return "?"


def _noise_bin(sigma: float) -> str:
    """The noise level in whole percent of the slice's maximum, 4 % and above in one bin."""
    if sigma <= 0:
        return "none"
    lo = min(4, int(sigma / 0.01))
    return f"{lo}-{lo + 1} %"


def collect(model, n: int, seed: int, config: SampleConfig, batch: int = 64) -> list:
    """One row per sample: its factors, true and predicted SSIM."""
    ds = RecordingDataset(10 ** 7, seed=seed, config=config)
    rows = []
    for first in range(0, n, batch):
        idx = list(range(first, min(n, first + batch)))
        clean, corrupted, labels = ds.pairs(idx)
        x = torch.stack([prepare_input(c) for c in corrupted])[:, None]
        pred = predict_prepared(model, x).numpy()
        for k, i in enumerate(idx):
            f = ds.factors[i]
            longest = max(clean[k].shape)
            rows.append({"index": i, "true": float(labels[k]), "predicted": float(pred[k]),
                         "motion": f["motion"], "background": f["background"],
                         "source": f["source"],
                         "view": "native 256" if f["native"] else f"{_sides_cut(clean[k])} sides cut",
                         "matrix": _matrix_bin(longest),
                         "noise": _noise_bin(f["noise"])})
        print(f"{len(rows)}/{n}", file=sys.stderr, flush=True)
    return rows


def _order(level: str):
    """Levels in reading order: matrix bins by size, the rest alphabetically."""
    head = level.lstrip(">").split("-")[0].split(" ")[0]
    return (0, int(head), level) if head.isdigit() else (1, 0, level)


def table(rows: list, factors=("motion", "source", "background", "view", "matrix", "noise")) -> dict:
    """Per factor and level: n, mean and std of the residual, share of the total squared error."""
    r = np.array([row["predicted"] - row["true"] for row in rows])
    total = float((r ** 2).sum()) or 1.0
    out = {"all": {"n": len(r), "mu": float(r.mean()), "sigma": float(r.std())}}
    for name in factors:
        levels = sorted({row[name] for row in rows}, key=_order)
        out[name] = {}
        for level in levels:
            m = np.array([row[name] == level for row in rows])
            out[name][level] = {"n": int(m.sum()), "mu": float(r[m].mean()), "sigma": float(r[m].std()),
                                "share_sq_error": float((r[m] ** 2).sum() / total)}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="Resources/Models/ssimquality_resnet18.pt")
    p.add_argument("-n", type=int, default=1536)
    p.add_argument("--seed", type=int, default=777, help="sample seed (default 777: not a training seed)")
    p.add_argument("--config", default="{}", help="SampleConfig fields to override, as JSON")
    p.add_argument("--csv", default="", help="write the per-sample table here")
    p.add_argument("--out", default="", help="write the summary as JSON here")
    args = p.parse_args(argv)
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(args.config).items()}
    rows = collect(load_model(args.model), args.n, args.seed, SampleConfig(**fields))
    summary = table(rows)
    a = summary.pop("all")
    print(f"all {a['n']}: mu {a['mu']:+.3f} sigma {a['sigma']:.3f}")
    for name, levels in summary.items():
        print(name)
        for level, s in levels.items():
            print(f"  {level:<14} n {s['n']:5d}  mu {s['mu']:+.3f}  sigma {s['sigma']:.3f}  "
                  f"share of squared error {100 * s['share_sq_error']:5.1f} %")
    summary["all"] = a
    if args.csv:
        with open(args.csv, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
