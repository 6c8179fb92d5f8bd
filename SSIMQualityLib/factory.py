"""The batched sample factory: every step of making training samples on the training device, a batch at a time.

:class:`~SSIMQualityLib.data.MotionSliceDataset` makes one sample at a time
in numpy, scikit-image and small torch calls: its steps are the reference.
:class:`SampleFactory` makes the same kind of sample with each step batched:

1. slice picking: index arithmetic on the source volumes held on the device;
2. synthesis (:func:`~SSIMQualityLib.synthesis.synthesize_mixed`), contrast
   (:func:`~SSIMQualityLib.contrast.apply_contrast_batch`, CLAHE included);
3. the acquisition: field of view and matrix (crop and resample, as the reference: in image space
   or, for half of them, in k-space with Gibbs ringing; per slice on a CPU, the whole group as batched
   products on a GPU: :func:`~SSIMQualityLib.resizing.crop_resize_batch`), EPI's N/2 ghost, the scanner's
   blur, both motion models (:func:`~SSIMQualityLib.motion.apply_motion_draws`), Rician noise with one of
   the four backgrounds;
4. the label (batched SSIM) and the input, fitted to the network's size.

The parameters are drawn by the same random twins as the reference
(``RandomSynthesis``, ``RandomContrast``, ``RandomMotion``): only the
arithmetic is batched.

What differs from the reference, on purpose (the label distributions agree:
a two-sample KS test, ``Testing/test_factory.py`` and the README):

* **Reproducibility per (seed, batch).**  One generator per batch index;
  the same ``(seed, batch index, batch size, group size)`` gives the same
  samples on any device (up to float round-off between devices).
* **One acquired matrix per group** of ``group_size`` samples (:data:`GROUP_SIZE`: 16 on a CPU, where a
  group's images stay in the cache between steps; 256 on a GPU, where a group's cost is mostly kernel launches
  and host round trips, not arithmetic: measured on an H200, 158 samples/s in groups of 16, 1,976 in groups
  of 256):
  motion, noise and label run at the acquired matrix, and a batched FFT needs
  one shape.  Each group draws "keep the 256² canvas" (25 %) or a matrix whose
  longest side is log-uniform in 40 – 384, with the aspect of its first
  sample's field of view; the other samples' fields of view are widened on
  their short side to that aspect.  Each sample's matrix is still drawn from
  the same distribution as in the reference.
* **The head mask** of a zero or partly suppressed background is the pixels
  with head on all four sides along their row and column (a cumulative max
  each way), not scipy's hole filling: the same on head slices except in
  narrow channels open to the air, and it runs batched on any device.
* Samples from a user's real volumes (``train --source``: the noise-fixed
  split needs non-local means per slice) are not made here; training with
  ``--source`` uses the reference path.
"""
from __future__ import annotations

from typing import List, NamedTuple, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .contrast import RandomContrast, apply_contrast_batch
from .dft import on_matmul_device
from .motion import RandomMotion, apply_motion_draws
from .resizing import crop_resize_batch
from .slices import (INPUT_SIZE, SliceSampler, crop, fit_to_size, fourier_resample, head_boxes, normalize,
                     pick_slices, resample)
from .ssim import ssim
from .synthesis import (RandomSynthesis, ghost_band, load_tissue_volume, mix_weights, nyquist_ghost,
                        rician_magnitude, scanner_blur, synthesize_mixed)

#: Changes whenever the same (seed, batch) would give a different sample (with ``data.DATA_VERSION``, which
#: names the recipe both paths follow).  2: parameters drawn a field at a time for the whole batch (sources,
#: slices and synthesis; ``DATA_VERSION`` 15).  3: the motion's parameters drawn a field at a time for each group
#: (``RandomMotion.draw``; ``DATA_VERSION`` 16).
#: 4: the standing ghost band (``DATA_VERSION`` 17).
FACTORY_VERSION = 4
_STREAM = 0x5AFAC  # keeps the factory's generators apart from the reference's per-index ones
_SOURCES: dict = {}  # (device, anatomy files) -> the source volumes, per process
#: Samples per group (one acquired matrix) by device type, where ``group_size`` is not given.
GROUP_SIZE = {"cpu": 16, "cuda": 256}
#: A streamed training batch holds at least this many groups: every sample of a group shares its matrix, and a
#: batch of two or three matrices is a poor sample of the recipe (and skews the batch-norm statistics).
MIN_GROUPS_PER_BATCH = 8


#: Training batches a streamed run makes together, as one round (:meth:`SampleFactory.round`), by device type:
#: on a GPU a group costs about the same few thousand kernel launches at 64 samples as at 256, so a round of 8
#: batches of 512 runs in groups of 256 and still gives every batch 16 matrices.  A CPU gains nothing (measured:
#: the same rate in groups of 16 and 64) and keeps one batch a step.
ROUND_BATCHES = {"cpu": 1, "cuda": 8}
#: A round made by a sample process is handed to the trainer through shared memory (float16 inputs): rounds
#: are kept below this size there (at 256² and batches of 512, rounds of 2; at 128², of 8).
ROUND_HANDOFF_BYTES = 2 ** 27


def stream_round(batch_size: int, size: int, device="cpu", *, handoff_bytes: Optional[int] = None) -> int:
    """Training batches of ``batch_size`` inputs of ``size``² made together on ``device``: the device's
    :data:`ROUND_BATCHES`, fewer where a sample process hands the round over and it would pass
    ``handoff_bytes`` (float16 inputs; ``None``: made where it is used, no limit).

    >>> stream_round(512, 128, "cuda"), stream_round(512, 256, "cuda", handoff_bytes=ROUND_HANDOFF_BYTES)
    (8, 2)
    >>> stream_round(64, 128), stream_round(512, 256, "cuda", handoff_bytes=0)
    (1, 1)
    """
    n = ROUND_BATCHES.get(torch.device(device).type, 1)
    if handoff_bytes is not None:
        n = min(n, int(handoff_bytes) // (2 * int(batch_size) * int(size) ** 2))
    return max(1, n)


def rounds_to_hold_groups(batch_size: int, group_size: int) -> int:
    """Batches of ``batch_size`` a round must hold so that, dealt (:meth:`SampleFactory.round`), each batch holds
    :data:`MIN_GROUPS_PER_BATCH` groups of ``group_size``: what a layout of large groups needs.

    >>> rounds_to_hold_groups(512, 1024), rounds_to_hold_groups(512, 64)
    (16, 1)
    """
    return max(1, MIN_GROUPS_PER_BATCH * int(group_size) // int(batch_size))


def stream_group_size(batch_size: int, device="cpu") -> int:
    """Group size for a training batch of ``batch_size`` made at once on ``device``: the device's
    :data:`GROUP_SIZE`, made smaller where the batch would otherwise hold fewer than
    :data:`MIN_GROUPS_PER_BATCH` groups.

    >>> stream_group_size(512, "cuda"), stream_group_size(64, "cpu"), stream_group_size(4096, "cuda")
    (64, 8, 256)
    """
    return max(1, min(GROUP_SIZE.get(torch.device(device).type, 16), int(batch_size) // MIN_GROUPS_PER_BATCH))


class Group(NamedTuple):
    """Samples of one batch that share an acquired matrix."""

    clean: torch.Tensor  # (n, h, w) the acquisition without motion (noise, ghost and background included)
    corrupted: torch.Tensor  # (n, h, w) the same acquisition with the head moving
    inputs: torch.Tensor  # (n, 1, 256, 256) the normalised corrupted slices fitted to the canvas
    labels: torch.Tensor  # (n,) SSIM of the normalised pair


class _Volume:
    """One source volume on the device, with the slice positions the orientation rule may draw."""

    def __init__(self, data: torch.Tensor, sampler: SliceSampler):
        # One contiguous copy per axis, (n, C, a, b): a batch of slices is then one gather of whole rows
        # (a gather across a strided axis of the (C, X, Y, Z) volume was a third of the factory's time).
        self.by_axis = {a: data.movedim(a + 1, 0).contiguous() for a in sampler.axes}
        # The orientation rule's axes and the positions it may draw (not the sampler: it holds the numpy volume).
        self.axes = sampler.axes
        self.positions = {a: sampler.positions(a) for a in sampler.axes}

    def slices(self, axis: int, index: torch.Tensor) -> torch.Tensor:
        """(n, C, a, b) slices at ``index`` along ``axis`` (0 – 2 of X, Y, Z)."""
        stack = self.by_axis[axis]
        return stack[index.to(stack.device)]


def head_mask_batch(clean: torch.Tensor) -> torch.Tensor:
    """0/1 head masks of (B, H, W): above 5 % of each slice's maximum, grown by 2 pixels (a cross, twice),
    closed by the row-and-column rule (a pixel with head on all four sides along its row and column)."""
    m = clean > 0.05 * clean.amax(dim=(1, 2), keepdim=True)
    for _ in range(2):
        grown = m.clone()
        grown[:, 1:] |= m[:, :-1]
        grown[:, :-1] |= m[:, 1:]
        grown[:, :, 1:] |= m[:, :, :-1]
        grown[:, :, :-1] |= m[:, :, 1:]
        m = grown
    f = m.to(torch.uint8)
    rows = f.cummax(dim=2).values & f.flip(2).cummax(dim=2).values.flip(2)
    cols = f.cummax(dim=1).values & f.flip(1).cummax(dim=1).values.flip(1)
    return (rows & cols).to(clean.dtype)


class SampleFactory:
    """Training samples made a batch at a time, every step batched on ``device``.

    Parameters
    ----------
    seed : int
        Base seed; batch ``i`` of a given size is a pure function of
        ``(seed, i)``.
    config : SampleConfig, optional
        The recipe (the reference's: :class:`~SSIMQualityLib.data.SampleConfig`).
    device : str or torch.device
        Where the sources live and every step runs (``"cpu"`` or ``"cuda"``).
    group_size : int, optional
        Samples that share one acquired matrix (see the module notes); by
        default :data:`GROUP_SIZE` for the device.
    size : int
        Side of the inputs returned (the network's input size; 256 is the
        canvas, smaller sizes are area-averaged from it, as the cache does).

    Examples
    --------
    >>> factory = SampleFactory(seed=0)                          # doctest: +SKIP
    >>> x, y = factory.batch(0, 32)                              # doctest: +SKIP
    >>> x.shape, y.shape                                         # doctest: +SKIP
    (torch.Size([32, 1, 256, 256]), torch.Size([32]))
    """

    def __init__(self, *, seed: int = 0, config=None, device="cpu", group_size: Optional[int] = None,
                 size: int = INPUT_SIZE, use_anatomy: bool = True):
        from .data import P_ANATOMY, SampleConfig, colin27_files

        self.seed = int(seed)
        self.config = config or SampleConfig()
        self.device = torch.device(device)
        self.group_size = int(group_size or GROUP_SIZE.get(self.device.type, 16))
        self.size = int(size)
        self.synthesis = RandomSynthesis()
        self.contrast = RandomContrast(p=self.config.p_contrast)
        self.motion = RandomMotion("random", self.config.severity, p_kspace=self.config.p_kspace)
        self._anatomy_files = colin27_files() if use_anatomy else []
        self.p_anatomy = P_ANATOMY if self._anatomy_files else 0.0
        self._tissue: Optional[_Volume] = None
        self._anatomy: List[_Volume] = []

    # -- sources ---------------------------------------------------------------------------------------------
    def _load(self) -> None:
        if self._tissue is not None:
            return
        # Loaded once per process and device: a factory sent to worker processes (pickled with every task of a
        # pool) must not read and copy the volumes again for each batch.
        key = (str(self.device), tuple(map(str, self._anatomy_files)))
        if key not in _SOURCES:
            vol = load_tissue_volume()
            brain = vol[1].astype(np.float32) + vol[2].astype(np.float32)  # GM + WM decide "foreground", as the reference
            tissue = _Volume(torch.as_tensor(vol).to(self.device), SliceSampler(brain, (1.0, 1.0, 1.0)))
            from .volumes import read_nifti_voxels  # nibabel only: the factory runs without SimpleITK

            anatomy = []
            for path in self._anatomy_files:
                arr, spacing = read_nifti_voxels(path)
                anatomy.append(_Volume(torch.as_tensor(arr)[None].to(self.device), SliceSampler(arr, spacing)))
            _SOURCES[key] = (tissue, anatomy)
        self._tissue, self._anatomy = _SOURCES[key]

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_tissue"], state["_anatomy"] = None, []  # the volumes stay in each process's own cache
        return state

    def _canvases(self, picks, params) -> torch.Tensor:
        """Steps 1 – 2 up to synthesis: (B, 256, 256) raw clean slices (synthetic or anatomy), not normalised."""
        b = len(picks)
        out = torch.empty(b, INPUT_SIZE, INPUT_SIZE, device=self.device)
        groups = {}
        for k, (source, axis, index) in enumerate(picks):
            groups.setdefault((source, axis), []).append((k, index))
        synthetic = [k for k, p in enumerate(picks) if p[0] < 0]
        weights = mix_weights([params[k] for k in synthetic]).to(self.device) if synthetic else None
        row_of = {k: r for r, k in enumerate(synthetic)}
        mixed = torch.empty(len(synthetic), 3, INPUT_SIZE, INPUT_SIZE, device=self.device)
        for (source, axis), members in groups.items():
            ks = [k for k, _ in members]
            index = torch.tensor([i for _, i in members])
            if source < 0:
                stack = self._tissue.slices(axis, index).float()  # (n, 6, a, b)
                rows = [row_of[k] for k in ks]
                mixed[rows] = fit_to_size(torch.einsum("nkc,ncab->nkab", weights[rows], stack))
            else:
                out[ks] = fit_to_size(self._anatomy[source].slices(axis, index)[:, 0].float())
        if synthetic:
            out[synthetic] = synthesize_mixed(mixed, [params[k] for k in synthetic])
        return out

    # -- one batch -------------------------------------------------------------------------------------------
    def rng(self, batch_index: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([self.seed, _STREAM, int(batch_index)]))

    def batch(self, batch_index: int, batch_size: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Batch ``batch_index``: inputs (B, 1, size, size) in [0, 1] and labels (B,), on the factory's device."""
        xs, ys = [], []
        with torch.no_grad():
            # Group by group, keeping only inputs and labels: a large batch (a round) must not hold every group's
            # slices at their matrices until the end.  Area-averaging is per image, so resizing each group's
            # inputs gives what resizing the whole batch would.
            for g in self._groups(batch_index, batch_size):
                x = g.inputs
                if self.size != INPUT_SIZE:
                    x = F.interpolate(x, size=(self.size, self.size), mode="area")
                xs.append(x)
                ys.append(g.labels)
        return torch.cat(xs), torch.cat(ys)

    def round(self, round_index: int, batch_size: int, batches: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """``batches`` training batches of ``batch_size`` made together, as factory batch ``round_index`` of
        ``batches · batch_size`` samples, and dealt like cards: sample ``j`` goes to batch ``j % batches``.

        Every group of the round (one acquired matrix each) then lends a share of its samples to every batch, so
        a batch holds as many matrices as the round has groups, while each group runs in as few kernel
        launches as one of ``batches`` times its size (a GPU's cost per group is mostly launches and host
        round trips).  Returns inputs (batches, B, 1, size, size) and labels (batches, B); round ``i`` is a
        pure function of ``(seed, i, batch_size, batches, group_size)``.

        Examples
        --------
        >>> f = SampleFactory(seed=0, group_size=4, size=32)
        >>> x, y = f.round(0, 4, 2)
        >>> x.shape, y.shape
        (torch.Size([2, 4, 1, 32, 32]), torch.Size([2, 4]))
        >>> bool((y[1] == f.batch(0, 8)[1][1::2]).all())
        True
        """
        n, b = int(batches), int(batch_size)
        x, y = self.batch(round_index, n * b)
        return x.view(b, n, *x.shape[1:]).transpose(0, 1), y.view(b, n).t()

    def groups(self, batch_index: int, batch_size: int) -> List["Group"]:
        """The batch as its groups, each with the clean and corrupted slices at the group's acquired matrix
        (the label is the SSIM of that pair, normalised) and the network inputs."""
        with torch.no_grad():
            return list(self._groups(batch_index, batch_size))

    def _groups(self, batch_index: int, batch_size: int):
        """The batch's groups in order, one at a time (a generator: a caller that keeps only each group's inputs
        and labels holds one group's slices at a time)."""
        self._load()
        rng = self.rng(batch_index)
        b = int(batch_size)
        # Parameters first (source, slice, synthesis, contrast), by the reference's random twins, each field drawn
        # for the whole batch at once (per-sample calls of the generator were most of a GPU's host time); then
        # the arithmetic, batched.  An anatomy slice takes its noise level from its unused synthesis draw (the
        # same log-uniform range).
        from_anatomy = rng.random(b) < self.p_anatomy
        params = self.synthesis.sample_batch(rng, b)
        sigmas = np.array([p.noise for p in params])
        sources = np.where(from_anatomy, rng.integers(max(1, len(self._anatomy)), size=b), -1)
        picks = [None] * b
        for s in np.unique(sources):
            members = np.flatnonzero(sources == s)
            volume = self._tissue if s < 0 else self._anatomy[s]
            for k, pick in zip(members, pick_slices(volume.axes, volume.positions, len(members), rng)):
                picks[k] = (int(s), pick.axis, pick.index)
        params = [None if from_anatomy[k] else params[k] for k in range(b)]
        contrasts = [self.contrast.sample(rng) for _ in range(b)]
        noise_gen = torch.Generator(device=self.device).manual_seed(int(rng.integers(2 ** 62)))
        # Group by group, start to end: a group's images stay in the CPU's cache between steps (a whole batch of
        # 256² images does not, and every step then waits on memory: measured 3x slower per sample).
        for first in range(0, b, self.group_size):
            members = list(range(first, min(b, first + self.group_size)))
            raw = self._canvases([picks[k] for k in members], [params[k] for k in members])
            canvas = apply_contrast_batch(normalize(raw), [contrasts[k] for k in members], check=False)
            canvas = canvas - canvas.amin(dim=(1, 2), keepdim=True)  # air at zero again (as the reference)
            rows, cols = head_boxes(canvas)
            yield self._group(canvas, rows, cols, sigmas[members], rng, noise_gen)

    def _acquire(self, canvas: torch.Tensor, rows: np.ndarray, cols: np.ndarray, rng: np.random.Generator):
        """Field of view and matrix for a group: the canvas as it is, or crops resized to one shared matrix."""
        cfg = self.config
        n = canvas.shape[0]
        native, matrix_draw = rng.random(2)
        margins = cfg.min_margin + rng.random((n, 2)) * (cfg.max_margin - cfg.min_margin)
        stretch = rng.uniform(0.5, 1.5, size=(n, 4))
        in_kspace = rng.random(n) < cfg.p_fourier
        if native < cfg.p_native or (rows[:, 2] < 4).any() or (cols[:, 2] < 4).any():
            return canvas
        r0, r1, c0, c1 = rows[:, 0], rows[:, 1], cols[:, 0], cols[:, 1]
        boxes = np.stack([r0 - cfg.side_shift(r1 - r0, margins[:, 0], stretch[:, 0]),
                          r1 + cfg.side_shift(r1 - r0, margins[:, 0], stretch[:, 1]),
                          c0 - cfg.side_shift(c1 - c0, margins[:, 1], stretch[:, 2]),
                          c1 + cfg.side_shift(c1 - c0, margins[:, 1], stretch[:, 3])], axis=1)
        heights, widths = boxes[:, 1] - boxes[:, 0], boxes[:, 3] - boxes[:, 2]
        lo, hi = np.log(cfg.matrix[0]), np.log(cfg.matrix[1])
        longest = int(round(np.exp(lo + (hi - lo) * matrix_draw)))
        scale = longest / max(heights[0], widths[0])
        size = (max(8, int(round(heights[0] * scale))), max(8, int(round(widths[0] * scale))))
        aspect = size[0] / size[1]
        # Every other box widened on its short side to the group's aspect, about its centre.
        tall = heights / widths < aspect
        grow_h = np.where(tall, widths * aspect - heights, 0.0) / 2
        grow_w = np.where(tall, 0.0, heights / aspect - widths) / 2
        boxes = np.round(boxes + np.stack([-grow_h, grow_h, -grow_w, grow_w], axis=1)).astype(int)
        if on_matmul_device(canvas.device):  # a GPU: the group in two batched products, not ~20 launches a sample
            return crop_resize_batch(canvas, boxes, size, in_kspace).clamp_min(0)
        # A CPU: one sample at a time is faster (the FFT, and no operators to build; measured 5-8x).
        return torch.stack([fourier_resample(crop(canvas[k], boxes[k]), size) if in_kspace[k] else
                            resample(crop(canvas[k], boxes[k])[None, None], size)[0, 0] for k in range(n)]).clamp_min(0)

    def _group(self, canvas, rows, cols, sigmas, rng, noise_gen):
        cfg = self.config
        clean = self._acquire(canvas, rows, cols, rng)
        n, h, w = clean.shape
        ghost = rng.random(n) < cfg.p_nyquist
        phases = rng.uniform(*cfg.nyquist_phase, size=n)
        ghost_axes = rng.integers(2, size=n)
        psf_rows, psf_cols = cfg.draw_psf(rng, n)
        filter_rows, filter_cols = cfg.draw_filter(rng, n)
        band_gains, band_axes = cfg.draw_band(rng, sigmas)
        still = rng.random(n) < cfg.p_clean
        draws = self.motion.draw((h, w), rng, n)  # the group's motion at once: no object per sample
        draws.still(still)
        moved = apply_motion_draws(clean, draws).clamp_min(0)
        pair = torch.stack([clean, moved], dim=1)  # (n, 2, h, w): the scanner's ghost and noise hit both alike
        for axis in (0, 1):
            sel = np.flatnonzero(ghost & (ghost_axes == axis))
            if sel.size:
                pair[sel] = nyquist_ghost(pair[sel], torch.as_tensor(phases[sel]), pe_axis=axis)
        soft = np.flatnonzero(psf_rows > 0)
        if soft.size:  # the scanner's blur, after its ghost, on both images alike
            pair[soft] = scanner_blur(pair[soft], psf_rows[soft], psf_cols[soft])
        names, weights = cfg.background_table()
        kinds = np.asarray(names)[rng.choice(len(names), size=n, p=weights)]
        full_fov = rng.random(n) < cfg.p_full_fov
        fov_margins = rng.integers(0, 41, size=(n, 4))
        partial = rng.uniform(0.05, 0.5, size=n)
        sigma = torch.as_tensor(sigmas, dtype=clean.dtype, device=self.device)[:, None, None, None]
        sigma = sigma * pair[:, :1].amax(dim=(2, 3), keepdim=True)
        noise = torch.randn(n, 2, 1, h, w, generator=noise_gen, device=self.device) * sigma[:, None]
        banded = np.flatnonzero(band_gains > 0)
        if banded.size:  # the band's place is the clean head's, before the filter smooths it (as the reference)
            r, c = head_boxes(pair[banded, 0])
            band = ghost_band(r, c, band_gains[banded], band_axes[banded], (h, w), device=self.device)
        filtered = np.flatnonzero(filter_rows > 0)
        if filtered.size:  # the reconstruction filter: signal and noise smoothed together, before the magnitude
            pair[filtered] = scanner_blur(pair[filtered], filter_rows[filtered], filter_cols[filtered])
            noise[filtered] = scanner_blur(noise[filtered], filter_rows[filtered], filter_cols[filtered])
        if banded.size:  # a standing ghost band: the noise louder over the head's rows or columns, in both images
            noise[banded] = noise[banded] * band[:, None, None].to(noise.dtype)
        noisy = rician_magnitude(pair, noise[:, 0], noise[:, 1])
        weight = torch.ones(n, 1, h, w, device=self.device)
        masked = np.isin(kinds, ("zero", "partial"))
        if masked.any():
            sel = np.flatnonzero(masked)
            m = head_mask_batch(pair[sel, 0])
            level = torch.as_tensor(np.where(kinds[sel] == "partial", partial[sel], 0.0), dtype=m.dtype,
                                    device=self.device)[:, None, None]
            weight[sel, 0] = m + (1 - m) * level
        boxed = np.flatnonzero((kinds == "box") & ~full_fov)
        if boxed.size:
            r, c = head_boxes(pair[boxed, 0])
            top = np.maximum(0, r[:, 0] - fov_margins[boxed, 0])
            bottom = np.minimum(h, r[:, 1] + fov_margins[boxed, 1])
            left = np.maximum(0, c[:, 0] - fov_margins[boxed, 2])
            right = np.minimum(w, c[:, 1] + fov_margins[boxed, 3])
            ii = torch.arange(h, device=self.device)[None, :, None]
            jj = torch.arange(w, device=self.device)[None, None, :]

            def col(v):
                return torch.as_tensor(v, device=self.device)[:, None, None]

            box = (ii >= col(top)) & (ii < col(bottom)) & (jj >= col(left)) & (jj < col(right))
            box |= col((r[:, 2] == 0) | (c[:, 2] == 0))  # no head to frame: the whole matrix
            weight[boxed, 0] = box.to(weight.dtype)
        noisy_kind = torch.as_tensor(kinds == "noisy", device=self.device)[:, None, None, None]
        out = torch.where(noisy_kind, noisy, pair + weight * (noisy - pair))
        boxed_all = torch.as_tensor(kinds == "box", device=self.device)[:, None, None, None]
        out = torch.where(boxed_all, noisy * weight, out)
        norm = normalize(out)  # (n, 2, h, w): each slice on its own
        labels = ssim(norm[:, 0], norm[:, 1], data_range=1.0).float()
        return Group(out[:, 0], out[:, 1], fit_to_size(norm[:, 1:2]), labels)
