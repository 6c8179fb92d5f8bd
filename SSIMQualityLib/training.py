"""Training: cached on-the-fly samples, ResNet regression, checkpoints and resume.

Defaults are chosen for a 2-core CPU (see Resources/Models/MODEL_CARD.md):
the network works at 128 × 128 (area-averaged from the 256 × 256 input),
batch 64, AdamW with a one-cycle learning-rate schedule peaking at 1e-3,
bfloat16 autocast and channels-last memory.  The paper's settings (MSE,
Adam, lr 1e-3, batch 100, 256 × 256) are all options.
"""
from __future__ import annotations

import csv
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from . import progress
from .data import DATA_VERSION, SOURCE_VERSION, MotionSliceDataset, build_cache, worker_init
from .interrupts import deferred_interrupt
from .models import build_model, resolve_device, save_checkpoint


@dataclass
class TrainConfig:
    """Every setting of a training run (stored in each checkpoint)."""

    out_dir: str = "runs/train"
    arch: str = "resnet18"
    input_size: int = 128
    batch_size: int = 64
    optimizer: str = "adamw"  # or "adam" (the paper)
    lr: float = 1e-3
    weight_decay: float = 1e-4
    loss: str = "mse"  # or "l1", "huber"
    # Each sample's loss weighted by its label's density to the power -balance (label_weights): 0 = unweighted.
    # The labels crowd near 1 (mean 0.86 under recipe 18), and an unweighted regressor unsure of a slice drifts
    # towards the crowd.  Tried at 0.5 on v12 (README, "Label balance"): every real-scan reading fell 0.014 - 0.022,
    # the severe end's over-reading was not undone, so the default is off.
    balance: float = 0.0
    steps: int = 3000
    train_samples: int = 40000
    val_samples: int = 1000
    train_seed: int = 1
    val_seed: int = 999
    val_every: int = 250
    checkpoint_every: int = 250
    device: str = "auto"
    workers: int = 2
    max_minutes: float = 0.0  # stop cleanly (checkpoint) after this long; 0 = no limit
    precision: str = "auto"  # auto (bfloat16 where the device has it natively, else float32), float32, bfloat16
    init: str = ""  # start from this model file's weights (fine-tuning); "" = from scratch
    freeze_norm: bool = False  # batch-norm layers keep the statistics they start with (see freeze_batch_norm)
    source: tuple = ()  # the user's real volumes (files / folders) mixed into training, noise-fixed rule
    source_share: float = 0.5  # share of samples drawn from ``source``
    stream: bool = False  # fresh samples every step, made by ``workers`` processes, instead of a cached set
    factory: str = "batched"  # "batched": SampleFactory (every step batched); "reference": one sample at a time
    group_size: int = 0  # streamed batches: samples per acquired matrix; 0 = factory.stream_group_size's rule
    round_batches: int = 0  # streamed batches made together and dealt (factory.SampleFactory.round); 0 = by device
    schedule_minutes: float = 0.0  # > 0: the one-cycle schedule spans this much training time, and the run ends
    # then (``steps`` only caps it); 0: the schedule spans ``steps``


#: ``steps`` of a timed run (``schedule_minutes``) given no cap: the time decides.
UNCAPPED_STEPS = 10 ** 9
#: The one-cycle schedule's shape (both kinds): 5 % warm-up from lr / 10, cosine annealing to lr / 1000.
PCT_START, DIV_FACTOR, FINAL_DIV_FACTOR = 0.05, 10.0, 100.0


def one_cycle_lr(fraction: float, max_lr: float) -> float:
    """The learning rate at ``fraction`` (0 – 1) of a one-cycle schedule: a cosine rise from ``max_lr / 10`` to
    ``max_lr`` over the first :data:`PCT_START`, then a cosine fall to ``max_lr / 1000`` (torch's
    ``OneCycleLR`` with the same settings, as a function of the fraction done).

    Examples
    --------
    >>> [round(one_cycle_lr(f, 1e-3), 7) for f in (0.0, 0.05, 1.0)]
    [0.0001, 0.001, 1e-06]
    """
    f = min(max(float(fraction), 0.0), 1.0)
    low, floor = max_lr / DIV_FACTOR, max_lr / DIV_FACTOR / FINAL_DIV_FACTOR
    if f < PCT_START:
        start, end, t = low, max_lr, f / PCT_START
    else:
        start, end, t = max_lr, floor, (f - PCT_START) / (1 - PCT_START)
    return end + (start - end) * (1 + math.cos(math.pi * t)) / 2


class TimedOneCycle:
    """The one-cycle schedule over a span of training time instead of a number of steps (``--schedule-minutes``).

    For a fixed window (a GPU lent for minutes, a cluster job's wall time): the run uses all of it and ends with
    its learning rate annealed, however fast the machine turns out to be, with no benchmark first to guess the
    number of steps.  :meth:`advance` adds the time a step took; the time spent is saved with the checkpoint,
    so a resumed run carries on along the same schedule.
    """

    def __init__(self, optimizer, max_lr: float, seconds: float):
        self.optimizer, self.max_lr, self.seconds, self.elapsed = optimizer, float(max_lr), float(seconds), 0.0
        self._apply()

    def _apply(self) -> None:
        lr = one_cycle_lr(self.elapsed / self.seconds, self.max_lr)
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def advance(self, seconds: float) -> None:
        self.elapsed += max(0.0, float(seconds))
        self._apply()

    @property
    def done(self) -> bool:
        return self.elapsed >= self.seconds

    def get_last_lr(self) -> list:
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return {"elapsed": self.elapsed, "seconds": self.seconds}

    def load_state_dict(self, state: dict) -> None:
        self.elapsed = float(state["elapsed"])
        self._apply()


def _loss_fn(name: str) -> Callable:
    """Per-sample losses (no reduction): the caller weighs and averages them."""
    if name == "mse":
        return lambda a, b: F.mse_loss(a, b, reduction="none")
    if name == "l1":
        return lambda a, b: F.l1_loss(a, b, reduction="none")
    if name == "huber":
        return lambda a, b: F.huber_loss(a, b, delta=0.05, reduction="none")
    raise ValueError(f"unknown loss {name!r}; choose mse, l1 or huber")


#: Bins of :func:`label_weights` over labels 0 - 1, the kernel's width smoothing their counts, and the largest
#: weight (a few rare labels must not steer whole batches).
BALANCE_BINS, BALANCE_BANDWIDTH, BALANCE_MAX_WEIGHT = 50, 0.05, 10.0


def label_weights(labels, *, power: float = 0.5, bins: int = BALANCE_BINS, bandwidth: float = BALANCE_BANDWIDTH,
                  max_weight: float = BALANCE_MAX_WEIGHT) -> torch.Tensor:
    """A weight per label bin that evens out the label distribution of ``labels`` (a sample of the recipe).

    The bins' counts are smoothed by a Gaussian kernel of ``bandwidth`` (labels are continuous, and a sample of
    the recipe holds few severe ones); a bin's weight is its smoothed density to the power ``-power`` (1: every
    label range counts alike; 0.5: half way, in logarithms), at most ``max_weight``, scaled so that the mean
    weight over the labels is 1: the loss keeps its size and the learning rate its meaning.

    Parameters
    ----------
    labels : array-like of float in [0, 1]
    power : float, keyword-only
        0 gives every bin weight 1.

    Returns
    -------
    Tensor (bins,) float32 : look a label up with :func:`weigh`.

    Examples
    --------
    >>> import numpy as np
    >>> y = np.r_[np.full(900, 0.95), np.full(100, 0.45)]
    >>> w = label_weights(y, power=1.0)
    >>> round(float(weigh(torch.tensor([0.45]), w) / weigh(torch.tensor([0.95]), w)), 1)  # 9 times rarer
    9.0
    >>> round(float(weigh(torch.as_tensor(y), w).mean()), 4)
    1.0
    >>> label_weights(y, power=0.0).unique().tolist()
    [1.0]
    """
    if max_weight < 1:
        raise ValueError(f"max_weight must be at least 1 (the mean weight), not {max_weight}")
    y = np.clip(np.asarray(labels, dtype=np.float64).ravel(), 0.0, 1.0)
    centres = (np.arange(bins) + 0.5) / bins
    counts = np.bincount(np.minimum((y * bins).astype(int), bins - 1), minlength=bins).astype(np.float64)
    kernel = np.exp(-0.5 * ((centres[:, None] - centres[None, :]) / bandwidth) ** 2)
    density = kernel @ counts  # unnormalised: the scale below sets the weights' size
    w = np.maximum(density, 1e-12) ** -float(power)
    share = counts / counts.sum()  # the labels' own histogram: the weights' mean over them is 1
    # The scale that gives mean 1 once capped: the capped mean grows with the scale, so bisect (in logarithms).
    lo, hi = -60.0, 60.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if share @ np.minimum(w * np.exp(mid), max_weight) < 1 else (lo, mid)
    return torch.tensor(np.minimum(w * np.exp(hi), max_weight), dtype=torch.float32)


def weigh(labels: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """The :func:`label_weights` ``table``'s weight of each label."""
    bins = table.numel()
    idx = (labels.detach().float().clamp(0, 1) * bins).long().clamp_(max=bins - 1)
    return table.to(labels.device)[idx]


#: Samples per factory batch in a cache: sample i is item i % 64 of factory batch i // 64 (part of the recipe).
FACTORY_CHUNK = 64


def uses_factory(factory: str, source: Sequence[str] = ()) -> bool:
    """Whether samples come from the batched factory: by default, except with ``--source`` (the user's real
    volumes need the noise-fixed split, which only the reference path makes)."""
    if factory not in ("batched", "reference"):
        raise ValueError(f"factory must be 'batched' or 'reference', got {factory!r}")
    return factory == "batched" and not source


def source_identity(source: Sequence[str]) -> str:
    """What the samples made from ``source`` depend on: each volume file's resolved path, size and modification
    time (the folder's names alone kept samples of scans replaced since, and ``site`` and ``site/`` apart)."""
    from .volumes import list_volume_paths

    try:
        files = list_volume_paths(list(source), True)
    except Exception:  # noqa: BLE001 - the sampler says what is wrong with the folder; here only the name counts
        return "\n".join(sorted(os.path.realpath(str(p)) for p in source))
    lines = []
    for f in files:
        st = os.stat(f)
        lines.append(f"{os.path.realpath(str(f))}\t{st.st_size}\t{st.st_mtime_ns}")
    return "\n".join(sorted(lines))


def _cache_stem(kind: str, seed: int, source: Sequence[str] = (), factory: str = "batched") -> str:
    tag = ""
    if source:  # another set of volumes, or the same files changed since, makes other samples
        import hashlib

        tag = f"_src{SOURCE_VERSION}_" + hashlib.sha256(source_identity(source).encode()).hexdigest()[:8]
    if uses_factory(factory, source):
        from .factory import FACTORY_VERSION

        tag += f"f{FACTORY_VERSION}"
    return f"cache_{kind}_v{DATA_VERSION}{tag}_s{seed}_n"


def cache_file(out_dir: Path, kind: str, n: int, seed: int, size: int, source: Sequence[str] = (),
               factory: str = "batched") -> Path:
    return out_dir / f"{_cache_stem(kind, seed, source, factory)}{n}_{size}.pt"


def make_dataset(n: int, seed: int, source: Sequence[str] = (), source_share: float = 0.5) -> MotionSliceDataset:
    """The reference dataset: the default mix, plus the user's real volumes when given."""
    from .data import MixedSource, VolumeFolderSource

    user = VolumeFolderSource(list(source)) if source else None
    return MotionSliceDataset(n, source=MixedSource(user=user, p_user=source_share), seed=seed)


def make_sampler(n: int, seed: int, source: Sequence[str] = (), source_share: float = 0.5,
                 factory: str = "batched", device="cpu", group_size: Optional[int] = None, size: int = 256):
    """What makes the samples: the batched :class:`~SSIMQualityLib.factory.SampleFactory` on ``device`` (groups
    of ``group_size``, by default the device's; inputs of ``size``²), or the reference dataset (with ``--source``,
    or when asked for; inputs of 256²)."""
    if uses_factory(factory, source):
        from .factory import SampleFactory

        return SampleFactory(seed=seed, device=device, group_size=group_size, size=size)
    return make_dataset(n, seed, source, source_share)


def load_or_build_cache(out_dir: Path, kind: str, n: int, seed: int, size: int, workers: int, log=print,
                        source: Sequence[str] = (), source_share: float = 0.5, show: bool = True,
                        factory: str = "batched"):
    """Samples ``0 … n − 1`` of the dataset with ``seed``, made once and kept on disk for resume."""
    path = cache_file(out_dir, kind, n, seed, size, source, factory)
    if path.is_file():
        data = torch.load(str(path), weights_only=True)
        if int(data["n"]) == n and int(data["seed"]) == seed and int(data["size"]) == size:
            log(f"using cached {kind} samples {path}")
            return data["x"], data["y"]

    # Samples depend only on (seed, index): a smaller cache of the same seed is a prefix.
    prefix_x, prefix_y, start = None, None, 0
    # The sample count is in the file name: load only the largest usable prefix, not every candidate.
    sizes = {}
    stem = _cache_stem(kind, seed, source, factory)
    for other in out_dir.glob(f"{stem}*_{size}.pt"):
        m = other.name[len(stem):-len(f"_{size}.pt")]
        if m.isdigit() and int(m) < n:
            sizes[int(m)] = other
    if sizes:
        data = torch.load(str(sizes[max(sizes)]), weights_only=True)
        if int(data["seed"]) == seed and int(data["size"]) == size:
            prefix_x, prefix_y, start = data["x"], data["y"], int(data["n"])
    if start:
        log(f"extending cached {kind} samples from {start} to {n}")
    sampler = make_sampler(n, seed, source, source_share, factory)
    chunk = FACTORY_CHUNK if uses_factory(factory, source) else 32
    bar = progress.bar(n, initial=start, desc=f"making {kind} samples", unit="sample", show=None if show else False)
    x, y = build_cache(sampler, size, chunk=chunk, workers=workers, progress=bar.update, start=start, n=n)
    bar.close()
    if start:
        x, y = torch.cat([prefix_x, x]), torch.cat([prefix_y, y])
    from .outputs import atomic_write

    with atomic_write(path, force=True) as tmp:
        torch.save({"x": x, "y": y, "n": n, "seed": seed, "size": size}, tmp)
    return x, y


def _precision(cfg: TrainConfig, device: torch.device) -> str:
    """The run's precision: ``cfg.precision``, or for "auto" what the device computes natively."""
    from .precision import BFLOAT16, FLOAT32, fast_precision

    choice = fast_precision(device) if cfg.precision == "auto" else cfg.precision
    if choice not in (BFLOAT16, FLOAT32):
        raise ValueError(f"precision must be auto, {FLOAT32} or {BFLOAT16}, got {cfg.precision!r}")
    return choice


def _autocast(device: torch.device, cfg: TrainConfig):
    """Mixed precision for the network: bfloat16 where the device computes it natively (see :mod:`.precision`)."""
    from .precision import BFLOAT16, FLOAT32

    choice = _precision(cfg, device)
    if device.type == "cuda":
        if choice == FLOAT32 and cfg.precision == FLOAT32:
            return torch.autocast("cuda", enabled=False)
        return torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=choice == BFLOAT16)


def predict(model, x: torch.Tensor, device: torch.device, cfg: Optional[TrainConfig] = None, batch: int = 256) -> torch.Tensor:
    """Validation predictions on prepared samples, in the run's precision (the scoring loop's network call)."""
    from .precision import BFLOAT16
    from .scoring import predict_prepared

    return predict_prepared(model, x, device, batch, bf16=_precision(cfg or TrainConfig(), device) == BFLOAT16)


def train(cfg: TrainConfig, resume: bool = True, log: Callable[[str], None] = print) -> Path:
    """Run (or resume) a training run; returns the path of the final model checkpoint."""

    from . import distributed
    from .precision import describe

    if cfg.freeze_norm and not cfg.init:
        from .errors import SSIMQualityError

        # From scratch the statistics are zeros and ones: frozen, they would never normalise anything.
        raise SSIMQualityError("--freeze-norm keeps the batch-norm statistics of --init, and no --init was given",
                               hint="pass --init MODEL (e.g. the bundled model), or leave out --freeze-norm")
    out = Path(cfg.out_dir)
    if out.exists() and not out.is_dir():
        from .errors import SSIMQualityError

        raise SSIMQualityError("is a file, not a folder", str(out), "give --out a folder for the run")
    start_from = None
    if cfg.init:  # checked before any samples are made (they take minutes; a typo in the name took them first)
        from .errors import BadModelFileError
        from .models import open_model

        start_from = open_model(cfg.init)  # a file or a catalogued name, checked; float16 weights become float32
        if start_from.arch != cfg.arch:
            raise BadModelFileError(f"--init holds a {start_from.arch} model but this run trains {cfg.arch}",
                                    cfg.init, f"pass --arch {start_from.arch}, or another --init file")
    out.mkdir(parents=True, exist_ok=True)
    # Under torchrun: one process per GPU (NCCL) or per CPU share (gloo), gradients averaged by DDP.
    # Each rank makes its own samples (its own seed); rank 0 validates and writes logs and checkpoints.
    w = distributed.world()
    device = distributed.rank_device(resolve_device(cfg.device), w)
    if w.size > 1:
        distributed.init(device)
        if not w.main:
            log = _silent
    log(f"precision: {cfg.precision}" if cfg.precision != "auto" else f"precision: {describe(device)}")
    if w.size > 1:
        log(f"distributed: {w.size} processes ({'NCCL' if device.type == 'cuda' else 'gloo'}), "
            f"{cfg.batch_size} samples per process per step")
    src = tuple(str(p) for p in cfg.source)
    if not cfg.stream:
        x_tr, y_tr = load_or_build_cache(out, "train", cfg.train_samples, rank_seed(cfg.train_seed, w.rank),
                                         cfg.input_size, cfg.workers, log, src, cfg.source_share, show=w.main,
                                         factory=cfg.factory)
    if w.main:
        x_va, y_va = load_or_build_cache(out, "val", cfg.val_samples, cfg.val_seed, cfg.input_size, cfg.workers, log,
                                         src, cfg.source_share, factory=cfg.factory)

    torch.manual_seed(cfg.train_seed)  # here, so that making samples (or not) does not change the start
    model = build_model(cfg.arch, cfg.input_size)
    if start_from is not None:
        model.load_state_dict(start_from.state_dict())  # input size is pooling only: no weights depend on it
        log(f"starting from the weights of {cfg.init}")
    model = model.to(device).to(memory_format=torch.channels_last)
    opt_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    opt = opt_cls(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay if cfg.optimizer == "adamw" else 0.0)
    timed = cfg.schedule_minutes > 0
    sched = TimedOneCycle(opt, cfg.lr, 60 * cfg.schedule_minutes) if timed else \
        torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=PCT_START,
                                            div_factor=DIV_FACTOR, final_div_factor=FINAL_DIV_FACTOR)
    if timed:
        cap = f", or at step {cfg.steps}" if cfg.steps < UNCAPPED_STEPS else ""
        log(f"learning-rate schedule over {cfg.schedule_minutes:g} min of training time; the run ends then{cap}")
    loss_fn = _loss_fn(cfg.loss)
    balance = None
    if cfg.balance:
        # From the validation labels: a fixed sample of the recipe that every rank and every resume sees alike.
        if w.main:
            balance = label_weights(y_va.numpy(), power=cfg.balance)
            log("label balance (power {:g}): weights {:.2f} at label 0.4, {:.2f} at 0.7, {:.2f} at 0.98".format(
                cfg.balance, *weigh(torch.tensor([0.4, 0.7, 0.98]), balance).tolist()))
        balance = distributed.from_main(balance, BALANCE_BINS, device)
    step = 0
    last = out / "last.ckpt"
    log_path = out / "log.csv"
    if resume and last.is_file():
        state = torch.load(str(last), map_location="cpu", weights_only=True)
        saved = json.loads(state.get("train_config", "{}"))
        current = json.loads(json.dumps(asdict(cfg)))  # tuples as lists, as saved
        def compared(key, value):  # the source folders as places: site and site/ alike
            return sorted(os.path.realpath(str(p)) for p in value) if key == "source" else value

        changed = {k: (saved[k], v) for k, v in current.items()
                   if k in saved and compared(k, saved[k]) != compared(k, v)
                   and k not in ("max_minutes", "workers", "device", "out_dir", "precision")}
        if changed:
            from .errors import SSIMQualityError

            raise SSIMQualityError("cannot resume: settings differ from the interrupted run ("
                                   + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changed.items()) + ")",
                                   str(last), "use the same settings, or --no-resume to start afresh")
        model.load_state_dict(state["state_dict"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        step = int(state["step"])
        log(f"resumed from {last} at step {step}")
        if step >= cfg.steps and (out / "model.pt").is_file() and w.size == 1:
            # A finished run given again: its model stays as it was (it was written again, its record with it).
            log(f"this run had finished at step {step}: {out / 'model.pt'} is as it was (--no-resume starts afresh)")
            return out / "model.pt"
    elif log_path.exists() and w.main:
        log_path.unlink()
    net = model  # the module itself: what is saved, validated and returned
    if w.size > 1:
        distributed.barrier()  # every rank has read the checkpoint before rank 0 may write a new one
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    if cfg.stream:
        batches = stream_batches(cfg, rank_seed(cfg.train_seed, w.rank), first_step=step, device=device)
        if device.type == "cuda" and uses_factory(cfg.factory, src):
            where = f"{cfg.workers} processes" if cfg.workers else "this process"
            log(f"streaming fresh samples: {cfg.batch_size} a step, made on {device} by the batched factory "
                f"in {where}, {batches.per_round} batches a round in groups of {batches.group}")
        else:
            log(f"streaming fresh samples: {cfg.batch_size} a step, made by {cfg.workers} worker processes")
    else:
        n = len(y_tr)
        per_epoch = n // cfg.batch_size

    def batch_indices(s: int) -> torch.Tensor:
        epoch, k = divmod(s, per_epoch)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.train_seed * 1000 + epoch))
        return perm[k * cfg.batch_size:(k + 1) * cfg.batch_size]

    def write_log(row: dict):
        new = not log_path.exists()
        with open(log_path, "a", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=list(row))
            if new:
                w.writeheader()
            w.writerow(row)

    def checkpoint(path: Path):
        save_checkpoint(path, net, {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "step": step,
                                    "train_config": json.dumps(asdict(cfg))})

    start = time.time()
    running = None
    # Losses read back every LOSS_READS_EVERY steps on a GPU, not every step: a read waits for the step to
    # finish, and meanwhile the host could be launching the next steps (or, streaming in this process, making
    # the next round of samples).
    pending: List[torch.Tensor] = []
    read_every = loss_reads_every(device)
    bar = progress.bar(None if timed else cfg.steps, initial=step, desc="training", unit="step",
                       show=None if w.main else False)
    tick = None  # a timed schedule's clock starts with the first batch (not while sample processes start)
    # Ctrl-C or SIGTERM (a scheduler's time limit) stop at the end of a step, and the run so far is kept: up to
    # --val-every steps were lost before (the checkpoint was written only there).
    with deferred_interrupt() as stop:
        try:
            while step < cfg.steps and not (timed and sched.done):
                model.train()
                if cfg.freeze_norm:
                    freeze_batch_norm(model)
                if cfg.stream:
                    xb, yb = next(batches)
                else:
                    idx = batch_indices(step)
                    xb, yb = x_tr[idx], y_tr[idx]
                tick = tick or time.time()
                xb = xb.to(device, non_blocking=True).float().contiguous(memory_format=torch.channels_last)
                yb = yb.to(device, non_blocking=True)
                with _autocast(device, cfg):
                    pred = model(xb)
                losses = loss_fn(pred.float(), yb)
                loss = (losses * weigh(yb, balance)).mean() if balance is not None else losses.mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                pending.append(loss.detach())
                if timed:
                    now = time.time()
                    # On a GPU a step's time here is its launch, the device's work counted at the next loss read: the
                    # schedule's sum is the run's wall time, behind it by at most LOSS_READS_EVERY steps.
                    # Under DDP every rank counts the slowest rank's step, so all of them end at the same step.
                    sched.advance(distributed.max_over_ranks(now - tick, device))
                    tick = now
                else:
                    sched.step()
                step += 1
                timed_out = cfg.max_minutes > 0 and (time.time() - start) > cfg.max_minutes * 60
                if w.size > 1:
                    timed_out = distributed.any_rank(timed_out, device)  # all ranks stop at the same step
                last_step = step == cfg.steps or timed_out or (timed and sched.done)
                logs = w.main and (step % cfg.val_every == 0 or last_step)
                if len(pending) >= read_every or last_step or logs:
                    for value in torch.stack(pending).tolist():  # one read for them all
                        running = value if running is None else 0.98 * running + 0.02 * value
                    pending.clear()
                    bar.set_postfix(loss=f"{running:.5f}", lr=f"{sched.get_last_lr()[0]:.2e}")
                bar.update(1)
                if logs:
                    p = predict(net, x_va, device, cfg)
                    r = (p - y_va).numpy()
                    row = {"step": step, "lr": sched.get_last_lr()[0], "train_loss": running,
                           "val_mse": float(np.mean(r ** 2)), "val_residual_mean": float(r.mean()),
                           "val_residual_std": float(r.std()), "elapsed_s": time.time() - start}
                    write_log(row)
                    bar.write(f"step {step}: val residual mean {row['val_residual_mean']:+.4f} "
                              f"std {row['val_residual_std']:.4f}")
                    plot_log(log_path, out / "loss.png")
                if w.main and (step % cfg.checkpoint_every == 0 or last_step):
                    checkpoint(last)
                if timed_out:
                    bar.close()
                    log(f"time limit reached at step {step}; resume with the same command")
                    break
                if timed and sched.done:
                    log(f"schedule complete at step {step} ({sched.elapsed / 60:.2f} min of training)")
                stop.check()
        except KeyboardInterrupt:
            bar.close()
            if w.main and w.size == 1:
                checkpoint(last)
                log(f"stopped at step {step}: the run so far is in {last}; run the same command to resume")
            raise
    bar.close()
    final = out / "model.pt"
    if w.main:  # before the sample processes stop: one that dies on its way out must not cost the model
        save_checkpoint(final, net, {"meta": json.dumps({"steps": step, "train_config": asdict(cfg),
                                                         "processes": w.size, "wall_time_s": time.time() - start})})
    if cfg.stream:
        stop_stream(batches, log)
        del batches
    distributed.finish()
    return final


def freeze_batch_norm(model: torch.nn.Module) -> int:
    """Put every batch-norm layer of ``model`` in evaluation mode; returns how many there are.

    A frozen layer normalises by the running statistics it holds and leaves them as they are; its scale and
    shift still learn. Why: a model trained on large batches (512 on a GPU, 16 acquired matrices each) that is
    fine-tuned on small ones (64 on a CPU, 8 matrices) would otherwise normalise every step by a few matrices'
    statistics and drift its running ones towards them. Call it after each ``model.train()``.

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2)).train()
    >>> freeze_batch_norm(net), net[1].training, net[0].training
    (1, False, True)
    >>> _ = net(torch.randn(4, 1, 8, 8))
    >>> net[1].running_mean.tolist()  # untouched by the forward pass
    [0.0, 0.0]
    """
    kinds = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d, torch.nn.SyncBatchNorm)
    layers = [m for m in model.modules() if isinstance(m, kinds)]
    for layer in layers:
        layer.eval()
    return len(layers)


#: Training steps between reads of the loss on a GPU (see :func:`train`).
LOSS_READS_EVERY = 16


def loss_reads_every(device: torch.device) -> int:
    """Steps between reads of the training loss on ``device``: :data:`LOSS_READS_EVERY` on a GPU, which runs
    behind the host; every step on a CPU, where a step has finished when it returns."""
    return LOSS_READS_EVERY if torch.device(device).type == "cuda" else 1


def stop_stream(batches, log: Callable[[str], None] = print) -> None:
    """Stop the sample processes behind :func:`stream_batches`'s iterator now, not at interpreter exit (where a
    worker still prefetching is killed and the loader prints a worker-killed traceback after a good run).

    A sample process that fails on its way out is reported in one line, not raised: the run's work is saved by
    then.  Seen on an H200 (torch 2.11): GPU sample processes stopped while prefetching, at a ``--max-minutes``
    limit, aborted (``terminate called without an active exception``), and the loader's signal handler raised
    ``RuntimeError`` inside the shutdown; the run then ended with an error and no ``model.pt``.
    """
    shutdown = getattr(getattr(batches, "rounds", batches), "_shutdown_workers", None)
    if shutdown is None:  # in-process generators: nothing to stop
        return
    try:
        shutdown()
    except RuntimeError as exc:
        log(f"note: a sample process ended abnormally while stopping ({exc}); nothing is lost, the model and the "
            "checkpoint were saved before")


class StepBatches(torch.utils.data.Dataset):
    """The batches of a streamed run, ``per_round`` training steps an item, at the network's resolution
    (area-averaged, as the cache stores them).  Item ``i`` holds steps ``i·R … i·R + R − 1`` (R = ``per_round``)
    as inputs (R, B, 1, size, size) and labels (R, B): the factory's round ``i``
    (:meth:`~SSIMQualityLib.factory.SampleFactory.round`; with R = 1, its batch ``i``), or samples
    ``i·R·B …`` of the reference dataset in order.  Fixed by ``(seed, i)`` and R, so a resumed run makes the same
    samples an uninterrupted one would.

    ``to_host``: return the inputs on the CPU as float16 (a worker process making batches on a GPU hands them to
    the trainer through shared memory; float16 keeps [0, 1] inputs within 2.5e-4 and halves the copy).
    """

    def __init__(self, sampler, batch_size: int, size: int, steps: int, to_host: bool = False, per_round: int = 1):
        self.sampler, self.batch_size, self.size, self.steps = sampler, int(batch_size), int(size), int(steps)
        self.to_host, self.per_round = bool(to_host), max(1, int(per_round))

    def __len__(self) -> int:
        return -(-self.steps // self.per_round)

    def __getitem__(self, item: int):
        r, b = self.per_round, self.batch_size
        if isinstance(self.sampler, MotionSliceDataset):
            first = int(item) * r * b
            x, y = self.sampler.batch(range(first, first + r * b))
            x, y = x.view(r, b, *x.shape[1:]), y.view(r, b)
        else:
            x, y = self.sampler.round(int(item), b, r)
        if x.shape[-1] != self.size:
            x = F.interpolate(x.flatten(0, 1), size=(self.size, self.size), mode="area").view(r, b, 1, self.size,
                                                                                               self.size)
        if self.to_host:
            x, y = x.to("cpu", torch.float16), y.to("cpu", torch.float32)
        return x, y


def stream_batches(cfg: TrainConfig, seed: int, first_step: int = 0, device=None):
    """An iterator over the batches of steps ``first_step … cfg.steps − 1``.

    With the batched factory on a GPU, every step of making a batch runs on the GPU: in this process when
    ``cfg.workers`` is 0, else in ``cfg.workers`` processes that each hold the sources on the GPU and make whole
    rounds of batches ahead of the trainer (the factory's Python, not the GPU, limits one process).  Elsewhere
    ``cfg.workers`` processes make them on their CPU cores (in this process when 0).  Batches are made
    ``cfg.round_batches`` at a time (0: :func:`~SSIMQualityLib.factory.stream_round`'s rule); batch ``s`` is the
    same in every mode with the same round (up to float round-off between devices).
    """
    src = tuple(str(p) for p in cfg.source)
    device = torch.device(device or "cpu")
    on_gpu = device.type == "cuda" and uses_factory(cfg.factory, src)
    where = device if on_gpu else torch.device("cpu")
    per_round, group = stream_layout(cfg, where, handed_over=bool(cfg.workers))
    samples = -(-cfg.steps // per_round) * per_round * cfg.batch_size  # whole rounds (the reference's length)
    steps = StepBatches(make_sampler(samples, seed, src, cfg.source_share, cfg.factory, where, group, cfg.input_size),
                        cfg.batch_size, cfg.input_size, cfg.steps, to_host=on_gpu and bool(cfg.workers),
                        per_round=per_round)
    first_round = int(first_step) // per_round
    if on_gpu and cfg.workers == 0:
        rounds = (steps[i] for i in range(first_round, len(steps)))
    else:
        # Shared memory holds workers × prefetch items: fewer ahead on a GPU when each item is several batches.
        prefetch = None if not cfg.workers else (4 if per_round == 1 else ROUND_PREFETCH) if on_gpu else 2
        rounds = iter(torch.utils.data.DataLoader(
            steps, batch_size=None, sampler=range(first_round, len(steps)), num_workers=cfg.workers,
            worker_init_fn=worker_init if cfg.workers else None,
            # CUDA cannot be used in a forked child of a process that has started it: GPU workers are spawned.
            multiprocessing_context="spawn" if on_gpu else None, pin_memory=on_gpu,
            prefetch_factor=prefetch, persistent_workers=False))
    return _Steps(rounds, first_round * per_round, first_step, cfg.steps, layout=(per_round, group))


class _Steps:
    """The rounds' batches one step at a time, from ``first_step`` (``step``: the first round's first step) to
    ``steps − 1``; keeps the loader behind ``rounds`` for :func:`stop_stream`, and the layout it was made in
    (``per_round``, ``group``) for the log."""

    def __init__(self, rounds, step: int, first_step: int, steps: int, layout: Tuple[int, int]):
        self.rounds, self.step, self.first_step, self.steps = rounds, int(step), int(first_step), int(steps)
        self.per_round, self.group = layout
        self._round, self._k = None, 0

    def __iter__(self):
        return self

    def __next__(self):
        while True:
            if self.step >= self.steps:
                raise StopIteration
            if self._round is None or self._k == self._round[0].shape[0]:
                self._round, self._k = next(self.rounds), 0
            x, y = self._round[0][self._k], self._round[1][self._k]
            self._k, self.step = self._k + 1, self.step + 1
            if self.step > self.first_step:
                return x, y


def stream_layout(cfg: TrainConfig, device, *, handed_over: bool = False) -> Tuple[int, int]:
    """Batches a round and samples a group for a streamed run on ``device`` (the factory's device): the
    config's ``round_batches`` and ``group_size`` where given, else :func:`~SSIMQualityLib.factory.stream_round`'s
    and :func:`~SSIMQualityLib.factory.stream_group_size`'s rules for a round's samples.  ``handed_over``: made by
    ``cfg.workers`` sample processes, so that rounds pass through shared memory (:func:`handoff_bytes`).

    >>> stream_layout(TrainConfig(batch_size=512, input_size=128), "cuda"), stream_layout(TrainConfig(batch_size=64), "cpu")
    ((8, 256), (1, 8))
    """
    from .factory import stream_group_size, stream_round

    limit = handoff_bytes(cfg.workers) if handed_over else None
    per_round = cfg.round_batches or stream_round(cfg.batch_size, cfg.input_size, device, handoff_bytes=limit)
    return per_round, cfg.group_size or stream_group_size(per_round * cfg.batch_size, device)


#: Rounds a sample process may have made ahead of the trainer, where rounds hold several batches.
ROUND_PREFETCH = 2


def handoff_bytes(workers: int, shm: str = "/dev/shm") -> int:
    """The largest round (bytes) that ``workers`` sample processes may hand over: the factory's
    :data:`~SSIMQualityLib.factory.ROUND_HANDOFF_BYTES`, less where the free shared memory is not twice what the
    processes keep in flight (each: :data:`ROUND_PREFETCH` rounds made ahead and one being made).  A
    container's /dev/shm can be small, and a loader that runs out of it dies with a bus error."""
    from .factory import ROUND_HANDOFF_BYTES

    try:
        free = shutil.disk_usage(shm).free
    except OSError:  # no such mount (not Linux): the loader uses files or the system's own shared memory
        return ROUND_HANDOFF_BYTES
    in_flight = max(1, int(workers)) * (ROUND_PREFETCH + 1)
    return min(ROUND_HANDOFF_BYTES, int(free // (2 * in_flight)))


def rank_seed(seed: int, rank: int) -> int:
    """Rank ``rank``'s sample seed: rank 0 keeps ``seed`` (a one-process run's samples), the others differ.

    Examples
    --------
    >>> [rank_seed(1, r) for r in range(3)]
    [1, 100001, 200001]
    """
    return seed + 100_000 * rank


def _silent(*_args, **_kwargs) -> None:
    """The log of ranks other than 0."""


def plot_log(log_path: Path, png: Path) -> None:
    """Loss curve: running training loss and validation MSE / residual std per step."""
    from .figures import _pyplot

    rows = list(csv.DictReader(open(log_path, encoding="utf-8")))
    if not rows:
        return
    plt = _pyplot()
    steps = [int(r["step"]) for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.semilogy(steps, [float(r["train_loss"]) for r in rows], label="train loss (running)")
    ax.semilogy(steps, [float(r["val_mse"]) for r in rows], label="validation MSE")
    ax.semilogy(steps, [float(r["val_residual_std"]) for r in rows], label="validation residual σ")
    ax.set_xlabel("step")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)
