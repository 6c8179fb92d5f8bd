"""The paper's evaluation protocol and its report.

N slices are drawn from held-out data with the same orientation rule,
augmentation and corruption as in training, but randomisation seeds never
used in training (and, with ``--data``, volumes never used in training).
Reported: residuals (predicted − true) with their normal fit, accuracy for
3 / 5 / 10 equal bins and the clinical scheme, scikit-learn classification
reports, and figures (scatter with linear fit and marginals, residual
histogram with normal fit, log-scale confusion matrices).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .labels import CLINICAL_GOOD, CLINICAL_NAMES, CLINICAL_SUFFICIENT, clinical_class, equal_bin_class
from .outputs import json_text

#: Seed of the held-out randomisation (training uses 1 and validation 999 by default).
EVAL_SEED = 20240601

#: Truth bins of the stratified residual σ (equal weight per 0.05 bin from 0.40 to 1.00, like the paper's test spread).
STRATA = np.round(np.arange(0.40, 1.0001, 0.05), 2)

SCHEMES = {"3": lambda s: equal_bin_class(s, 3), "5": lambda s: equal_bin_class(s, 5),
           "10": lambda s: equal_bin_class(s, 10), "clinical": clinical_class}


def truth_bins(true: np.ndarray, edges) -> np.ndarray:
    """Index of each truth's bin among ``edges`` (``[lo, hi)``, the last bin closed), −1 outside them: the
    one binning of the stratified σ and of the residual by truth.

    >>> truth_bins(np.array([0.35, 0.4, 0.95, 1.0, 0.2]), (0.3, 0.4, 0.5, 1.0)).tolist()
    [0, 1, 2, 2, -1]
    """
    t = np.asarray(true, float)
    edges = np.asarray(edges, float)
    idx = np.digitize(t, edges[1:-1])
    return np.where((t >= edges[0]) & (t <= edges[-1] + 1e-9), idx, -1)


def stratified_std(pred: np.ndarray, true: np.ndarray, edges: np.ndarray = STRATA) -> float:
    """Residual standard deviation with equal total weight in each truth bin of ``edges`` (empty bins skipped).

    Examples
    --------
    >>> t = np.r_[np.full(100, 0.97), 0.5]; p = np.r_[np.full(100, 0.97), 0.7]
    >>> round(stratified_std(p, t), 3)
    0.1
    """
    r = np.asarray(pred, float) - np.asarray(true, float)
    idx = truth_bins(true, edges)
    weights = np.zeros_like(r)
    for b in np.unique(idx[idx >= 0]):
        m = idx == b
        weights[m] = 1.0 / m.sum()
    if weights.sum() == 0:
        return float("nan")
    weights /= weights.sum()
    mu = float(np.sum(weights * r))
    return float(np.sqrt(np.sum(weights * (r - mu) ** 2)))


def paired(pred, true) -> Tuple[np.ndarray, np.ndarray, int]:
    """Predictions and labels as float arrays of one length, without the pairs where either is NaN (a slice
    that was not scored: no head), and how many those were.

    >>> paired([0.9, float("nan"), 0.5], [1.0, 0.8, 0.4])
    (array([0.9, 0.5]), array([1. , 0.4]), 1)
    """
    from .errors import BadParameterError

    pred = np.asarray(pred, dtype=np.float64).ravel()
    true = np.asarray(true, dtype=np.float64).ravel()
    if pred.shape != true.shape:
        raise BadParameterError(f"{pred.size} predictions against {true.size} labels: give one of each per slice")
    keep = ~(np.isnan(pred) | np.isnan(true))
    if not keep.any():
        raise BadParameterError("no slice has both a prediction and a label (unscored slices are NaN)",
                                hint="compare the slices that were scored")
    return pred[keep], true[keep], int(keep.size - keep.sum())


def metrics(pred: np.ndarray, true: np.ndarray) -> dict:
    """Residual statistics, accuracies and classification reports of predictions against labels.

    Pairs where either is NaN (slices not scored) are left out of every figure, and counted in
    ``"not_scored"`` (they used to count as misclassified while the residuals came out NaN)."""
    from sklearn.metrics import classification_report, confusion_matrix

    pred, true, left_out = paired(pred, true)
    r = pred - true
    out = {"n": int(len(r)), "not_scored": left_out, "residual_mean": float(r.mean()), "residual_std": float(r.std()),
           "mae": float(np.abs(r).mean()), "pearson_r": float(np.corrcoef(pred, true)[0, 1]) if len(r) > 1 else float("nan"),
           "residual_std_stratified": stratified_std(pred, true) if len(r) else float("nan")}
    # Most synthetic labels lie near 1, where residuals are small: the whole-set
    # sigma flatters the model, so report it per clinical class of the truth too.
    true_class = clinical_class(true)
    out["residual_by_true_class"] = {}
    for c, name in CLINICAL_NAMES.items():
        rc = r[true_class == c]
        out["residual_by_true_class"][name] = {"n": int(rc.size), "mean": float(rc.mean()) if rc.size else float("nan"),
                                               "std": float(rc.std()) if rc.size else float("nan")}
    reports, matrices = {}, {}
    for name, fn in SCHEMES.items():
        tc, pc = fn(true), fn(pred)
        labels = sorted(set(range(int(name))) if name != "clinical" else {1, 2, 3})
        out[f"accuracy_{name}"] = float(np.mean(tc == pc))
        reports[name] = classification_report(tc, pc, labels=labels, output_dict=True, zero_division=0)
        matrices[name] = confusion_matrix(tc, pc, labels=labels).tolist()
    out["classification_reports"] = reports
    out["confusion_matrices"] = matrices
    return out


def plot_report(pred: np.ndarray, true: np.ndarray, out_dir: Union[str, Path], m: Optional[dict] = None) -> list:
    """The paper's figures; returns the PNG paths."""
    from scipy import stats

    from .figures import _pyplot

    plt = _pyplot()
    out = Path(out_dir)
    m = m or metrics(pred, true)
    pred, true, _ = paired(pred, true)
    paths = []
    # Scatter with linear fit and both marginals.
    fig = plt.figure(figsize=(6.5, 6.5))
    gs = fig.add_gridspec(4, 4, hspace=0.05, wspace=0.05)
    ax = fig.add_subplot(gs[1:, :3])
    top = fig.add_subplot(gs[0, :3], sharex=ax)
    right = fig.add_subplot(gs[1:, 3], sharey=ax)
    ax.scatter(true, pred, s=3, alpha=0.3)
    slope, intercept, rv, _, _ = stats.linregress(true, pred)
    xs = np.linspace(0, 1, 50)
    ax.plot(xs, xs, "k--", lw=0.8, label="identity")
    ax.plot(xs, slope * xs + intercept, "r-", lw=1.2, label=f"fit: {slope:.3f}x + {intercept:.3f} (r={rv:.3f})")
    for t in (CLINICAL_SUFFICIENT, CLINICAL_GOOD):
        ax.axvline(t, color="gray", lw=0.5, ls=":")
        ax.axhline(t, color="gray", lw=0.5, ls=":")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("true SSIM")
    ax.set_ylabel("predicted SSIM")
    ax.legend(loc="upper left", fontsize=8)
    top.hist(true, bins=50, range=(0, 1), color="C0")
    right.hist(pred, bins=50, range=(0, 1), orientation="horizontal", color="C1")
    top.axis("off")
    right.axis("off")
    p = out / "scatter.png"
    fig.savefig(p, dpi=100, bbox_inches="tight")
    plt.close(fig)
    paths.append(p)
    # Residuals with a normal fit.
    r = np.asarray(pred) - np.asarray(true)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(r, bins=80, density=True, alpha=0.7)
    mu, sd = float(r.mean()), float(r.std())
    xs = np.linspace(r.min(), r.max(), 200)
    ax.plot(xs, stats.norm.pdf(xs, mu, sd), "r-", label=f"normal fit µ={mu:+.4f}, σ={sd:.4f}")
    ax.set_xlabel("residual (predicted − true SSIM)")
    ax.set_ylabel("density")
    ax.legend()
    p = out / "residuals.png"
    fig.tight_layout()
    fig.savefig(p, dpi=100)
    plt.close(fig)
    paths.append(p)
    # Log-scale confusion matrices.
    from matplotlib.colors import LogNorm

    fig, axes = plt.subplots(1, 4, figsize=(18, 4.6))
    for ax, name in zip(axes, SCHEMES):
        cm = np.asarray(m["confusion_matrices"][name], dtype=float)
        labels = [1, 2, 3] if name == "clinical" else list(range(int(name)))
        im = ax.imshow(cm + 0.5, norm=LogNorm(vmin=0.5, vmax=max(1.0, cm.max())), cmap="viridis")
        ax.set_xticks(range(len(labels)), labels)
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(f"{name} classes: accuracy {m['accuracy_' + name]:.3f}")
        if len(labels) <= 5:
            for i in range(len(labels)):
                for j in range(len(labels)):
                    ax.text(j, i, int(cm[i, j]), ha="center", va="center", color="w", fontsize=8)
        fig.colorbar(im, ax=ax, fraction=0.046)
    p = out / "confusion_matrices.png"
    fig.tight_layout()
    fig.savefig(p, dpi=90)
    plt.close(fig)
    paths.append(p)
    return paths


def evaluate(model, n: int = 10000, seed: int = EVAL_SEED, data: Optional[Sequence[str]] = None,
             device: Union[str, torch.device] = "cpu", workers: int = 2, out_dir: Union[str, Path] = "evaluation",
             progress=None, model_info: Optional[dict] = None) -> dict:
    """Run the protocol and write ``report.json`` and the PNGs to ``out_dir``; returns the report.
    ``model_info``: what the report names the model by (:func:`~SSIMQualityLib.models.model_identity`)."""
    from .data import DATA_VERSION, MotionSliceDataset, VolumeFolderSource, build_cache
    from .noise import SPLIT_VERSION

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    source = VolumeFolderSource(data) if data else None
    ds = MotionSliceDataset(n, source=source, seed=seed)
    size = int(getattr(model, "input_size", 256))
    x, y = build_cache(ds, size, workers=workers if source is None else 1, progress=progress)
    from .scoring import predict_prepared

    pred = predict_prepared(model, x, device, 128).numpy()
    true = y.numpy()
    m = metrics(pred, true)
    m["protocol"] = {"n": n, "seed": seed, "data": list(map(str, data)) if data else "synthetic MNI152 (held-out seeds)",
                     # the sample recipe (synthetic slices) or the noise-fixed split's rule (the user's volumes)
                     "recipe": None if data else DATA_VERSION, "split_version": SPLIT_VERSION if data else None}
    m["model"] = model_info
    m["figures"] = [str(p.name) for p in plot_report(pred, true, out, m)]
    (out / "report.json").write_text(json_text(m, indent=2), encoding="utf-8")
    np.savez_compressed(out / "predictions.npz", predicted=pred, true=true)
    return m


def held_out_scans() -> list:
    """Real scans shipped inside installed packages, never used in training.

    Returns (path, frame, description) for those present: nibabel's test
    anatomical T1 (2 mm) and both frames of its example EPI series.
    """
    out = []
    try:
        import nibabel

        base = Path(nibabel.__file__).parent / "tests" / "data"
        if (base / "anatomical.nii").is_file():
            out.append((base / "anatomical.nii", None, "nibabel tests/data/anatomical.nii: T1, 2 mm, 33x41x25"))
        if (base / "example4d.nii.gz").is_file():
            for f in (0, 1):
                out.append((base / "example4d.nii.gz", f, f"nibabel tests/data/example4d.nii.gz frame {f}: EPI, 128x96x24"))
    except ImportError:
        pass
    return out


def clean_real_check(model, scans=None, device: Union[str, torch.device] = "cpu", threshold: float = CLINICAL_GOOD) -> dict:
    """Share of foreground slices of clean real scans predicted ≥ ``threshold`` (clinical "good")."""
    from .scoring import score_array
    from .volumes import read_volume

    scans = held_out_scans() if scans is None else scans
    per_scan, all_pred = [], []
    for path, frame, desc in scans:
        vol = read_volume(path, frame=frame)
        sc = score_array(model, vol.array, vol.spacing, device=device, direction=vol.direction)
        p = sc.predicted[sc.foreground]
        all_pred.append(p)
        per_scan.append({"scan": desc, "slices_scored": int(p.size), "mean_predicted_ssim": float(np.mean(p)) if p.size else None,
                         "fraction_good": float(np.mean(p >= threshold)) if p.size else None})
    allp = np.concatenate(all_pred) if all_pred else np.zeros(0)
    return {"threshold": threshold, "slices": int(allp.size),
            "fraction_good": float(np.mean(allp >= threshold)) if allp.size else None, "scans": per_scan}


#: What ``compare`` ranks against the truth: the model, MRIQC's IQMs, and QI1 by the robust detection too.
COMPARED = ("model_mean_ssim", "cnr", "cjv", "efc", "qi1", "qi1_robust")


def compared_direction(key: str) -> int:
    """+1 where a higher value of a compared quantity means a better image (the model, CNR), −1 where lower does."""
    from .iqm import DIRECTIONS

    return 1 if key == "model_mean_ssim" else DIRECTIONS[key.split("_")[0]]


def compare_with_iqms(model, scans=None, severities=(0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
                      methods=("kspace", "torchio"), seed: int = EVAL_SEED, device: Union[str, torch.device] = "cpu",
                      out_dir: Union[str, Path] = "comparison", progress=None) -> dict:
    """The paper's baseline comparison on held-out scans corrupted at a range of severities.

    For every (scan, method, severity): the true mean SSIM over slices, the
    model's mean predicted SSIM (foreground slices), CNR, CJV, EFC and QI1
    (MRIQC's detection, and the robust one as ``qi1_robust``).  For each it
    reports its direction, Spearman's ρ with the true mean SSIM, and the
    *agreement* ρ: ρ times the direction, so that for every row "higher
    agrees with the truth" (a lower-is-better metric that rises as the image
    worsens has a positive agreement).  It also reports how often each flags
    the volume's clinical class correctly: the model by its predicted class,
    QI1 the paper's way (QI1 > 0 means "artefact", i.e. not good).
    Writes ``comparison.json`` and ``comparison.png`` to ``out_dir``.
    """
    from scipy.stats import spearmanr

    from .corruption import corrupt_volume
    from .iqm import IQM_NAMES, compute_iqms, segment
    from .scoring import score_array
    from .volumes import read_volume

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scans = held_out_scans() if scans is None else scans
    rows = []
    for path, frame, desc in scans:
        vol = read_volume(path, frame=frame)
        axis = vol.slicing_axis()  # as score slices it
        for method in methods:
            for sev in severities:
                res = corrupt_volume(vol.array, axis, method=method, severity=float(sev), seed=seed,
                                     out_dtype=vol.array.dtype)
                sc = score_array(model, res.array, vol.spacing, axis=axis, device=device, direction=vol.direction)
                fg = sc.foreground
                masks = segment(res.array)
                iq = compute_iqms(res.array, direction=vol.direction, masks=masks).as_dict()
                robust = compute_iqms(res.array, direction=vol.direction, qi1_detection="robust", masks=masks)
                rows.append({"scan": desc, "method": method, "severity": float(sev),
                             "true_mean_ssim": float(res.ssim[fg].mean() if fg.any() else res.ssim.mean()),
                             "model_mean_ssim": float(np.nanmean(sc.predicted[fg])) if fg.any() else float("nan"),
                             **{k: iq[k] for k in IQM_NAMES}, "qi1_robust": robust.qi1, "qi1_air": iq["qi1_air"],
                             "iqm_reason": iq["reason"]})
                if progress:
                    progress(1)
    true = np.array([r["true_mean_ssim"] for r in rows])
    report = {"n_volumes": len(rows), "scans": [d for _, _, d in scans], "methods": list(methods),
              "severities": [float(s) for s in severities], "metrics": {}, "clinical_agreement": {}}
    for key in COMPARED:
        vals = np.array([r[key] for r in rows], dtype=float)
        ok = np.isfinite(vals)
        constant = ok.sum() > 0 and float(np.ptp(vals[ok])) == 0.0
        rho = float(spearmanr(vals[ok], true[ok]).statistic) if ok.sum() > 2 and not constant else float("nan")
        sign = compared_direction(key)
        report["metrics"][key] = {"direction": "higher is better" if sign > 0 else "lower is better",
                                  "spearman_rho": rho, "agreement_rho": sign * rho, "volumes": int(ok.sum())}
        if constant:
            report["metrics"][key]["note"] = f"the same value ({vals[ok][0]:g}) on every volume: no ranking"
    true_cls = clinical_class(true)
    pred_cls = clinical_class(np.array([r["model_mean_ssim"] for r in rows]))
    report["clinical_agreement"]["model_3class"] = float(np.mean(true_cls == pred_cls))
    report["clinical_agreement"]["model_good_vs_not"] = float(np.mean((true_cls == 1) == (pred_cls == 1)))
    for key in ("qi1", "qi1_robust"):
        qi = np.array([r[key] for r in rows], dtype=float)
        okq = np.isfinite(qi)
        report["clinical_agreement"][f"{key}_good_vs_not"] = (
            float(np.mean((true_cls[okq] == 1) == (qi[okq] <= 0))) if okq.any() else float("nan"))
    report["rows"] = rows
    (out / "comparison.json").write_text(json_text(report, indent=2), encoding="utf-8")
    _plot_comparison(rows, out / "comparison.png", report)
    return report


def _plot_comparison(rows, png: Path, report: dict) -> None:
    from .figures import _pyplot

    plt = _pyplot()
    names = {"model_mean_ssim": "model: mean predicted SSIM", "cnr": "CNR", "cjv": "CJV", "efc": "EFC",
             "qi1": "QI1 (MRIQC detection)", "qi1_robust": "QI1 (robust detection)"}
    fig, axes = plt.subplots(1, len(COMPARED), figsize=(4 * len(COMPARED), 4))
    methods = sorted({r["method"] for r in rows})
    for ax, k in zip(axes, COMPARED):
        info = report["metrics"][k]
        for m in methods:
            xs = [r["true_mean_ssim"] for r in rows if r["method"] == m]
            ys = [r[k] for r in rows if r["method"] == m]
            ax.scatter(xs, ys, s=12, label=m, alpha=0.7)
        ax.set_xlabel("true mean SSIM")
        ax.set_title(f"{names[k]}\n{info['direction']}; agreement ρ = {info['agreement_rho']:+.2f}", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].plot([0, 1], [0, 1], "k--", lw=0.8)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=80)
    plt.close(fig)
