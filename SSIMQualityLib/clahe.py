"""Batched contrast-limited adaptive histogram equalisation (CLAHE) in torch.

:func:`equalize_adapthist_batch` computes ``skimage.exposure.equalize_adapthist``
(scikit-image 0.26, after Zuiderveld, Graphics Gems IV, 1994) for a stack of
2-D grey images of one size, with the tile size the project uses in
:class:`SSIMQualityLib.contrast.AdaptiveHistogramEqualization`::

    kernel = tuple(max(2, int(round(s * kernel_fraction))) for s in image.shape)
    exposure.equalize_adapthist(image, kernel_size=kernel, clip_limit=clip_limit)

It follows scikit-image step by step, in the same arithmetic:

1. Quantise: ``img_as_uint`` (``rint(x * 65535)``), stretch that image's
   min..max to 0..16383 and round half to even, then fold into ``nbins``
   bins of ``1 + 16384 // nbins`` levels (with 256 bins only bins 0..252
   ever hold pixels; the other three still take part in the clipping).
2. Tiles: scikit-image reflect-pads the image by ``k // 2`` before and
   ``(k - s % k) % k + ceil(k / 2)`` after each axis; its histogram tiles are
   the ``ceil(s / k)`` tiles of side ``k`` that start at the first image
   pixel (mirrored past the last one).  Here the padding is index arithmetic.
3. Clip limit in counts: ``int(max(clip_limit * kh * kw, 1))``; no clipping
   for ``clip_limit <= 0``.
4. Clip and redistribute with scikit-image's integer arithmetic and quirks:
   ``excess // nbins`` goes to every bin below ``clim - excess // nbins``;
   every bin then in ``[clim - excess // nbins, clim)``, including bins just
   raised, is filled to ``clim`` even when that overdraws the excess; what is
   left is dealt out one count at a time by scikit-image's strided passes
   (``for index in range(nbins)``, ``step = max(1, n_under // n_excess)``).
   Those passes are replayed exactly, one vectorised step per ``index`` for
   all tiles still dealing (most tiles of head slices are done after one to
   three steps, the last of a stack after up to about a dozen) -- not
   approximated by a fixed number of passes.
5. Map: ``floor(min(cumsum(hist) * (16383 / (kh * kw)), 16383))`` in float64.
6. Interpolate bilinearly between the four surrounding tile maps with
   scikit-image's weights ``i / k``, truncate to an integer, stretch that
   image's min..max to [0, 1].

Difference from scikit-image
----------------------------
None beyond the float32 result: the output is scikit-image's float64 output
cast to float32, bit for bit.  Measured by ``Testing/test_clahe.py`` on
synthetic head slices (eight 256 x 256, one 96 x 128, one 384 x 320; exact-zero
air, noise), kernel fraction 1/8, clip limits 0.005, 0.01 and 0.03: mean
absolute difference 4.6e-9 to 4.9e-9, 99th percentile 2.9e-8, maximum 3.0e-8
(half a float32 ulp at 1) for each clip limit; identical arrays for the twelve
float32 slices of the bundled sample (scikit-image then works in float32).

That rests on replaying scikit-image's rounding: numpy's float64 operations
in numpy's order for the quantisation and the maps; for the interpolation
four float32-rounded float64 products summed in float32 in scikit-image's
order -- or, when the tile sides are powers of two with ``kh * kw <= 1024``
(256 x 256 images: 32 x 32 tiles), three float32 ``lerp``, as every product
and partial sum is then exact in float32; the final stretch in float32,
which is numpy's float64 quotient rounded to float32 (exact integer
operands, one correctly rounded division).

Deliberate differences: inputs are clamped to [0, 1] (scikit-image raises
outside [-1, 1]); the input is quantised in float64 whatever its dtype
(scikit-image computes ``x * 65535`` in float32 for float32 input, which
could move a value lying within float32 rounding of half-way between two
16-bit levels -- none of the test slices has one); a ``clip_limit`` tensor
is read in float64 (a float32 tensor gives the counts of its float32
values); only 2-D grey images; the result is float32 and, on the CPU, its
memory comes from numpy (see below), so it cannot be resized in place.

Speed
-----
Everything is vectorised over images, tiles and pixels; Python loops run over
chunks of the stack and over the redistribution steps only.  On the CPU no
operation touches more than 32 768 elements (torch's parallel grain,
``_CPU_PIXELS``): every operation stays in cache and on the calling thread,
because on a small machine shared with other work each operation torch hands
to its thread pool waits milliseconds for a busy core.  Work buffers come
from one numpy block and the result from numpy, which ask the kernel for
transparent huge pages: touching fresh 4 KiB pages of torch's allocator cost
more than the arithmetic on the project's virtual machine.  On a GPU the
whole stack is one chunk, and the host waits for the device once per call:
the redistribution's first steps run on every tile at once, finished tiles
masked, and only then are the tiles still dealing looked up (a CPU instead
drops finished tiles after every step, which it can check for free).

Measured on the project's shared 2-core CPU, torch's default (2) threads,
32 head slices per call, per slice: 256 x 256, 1.0 ms against 3.8 ms for
scikit-image (3.8 x); 96 x 128, 0.42 ms against 2.1 ms (5 x); 384 x 320
(tiles 48 x 40, the exact float64 interpolation), 2.2 ms against 5.9 ms
(2.6 x).  One thread gives the same times.
"""
from __future__ import annotations

import functools
import math
from typing import Dict, Iterator, NamedTuple, Tuple, Union

import numpy as np
import torch

__all__ = ["equalize_adapthist_batch", "kernel_size_for"]

NR_OF_GRAY = 2 ** 14  # grey levels of scikit-image's intermediate image
_CPU_PIXELS = 32768  # most elements per CPU operation: torch's parallel grain (at::internal::GRAIN_SIZE)
_CPU_CLIP_ROWS_BYTES = 120 * 1024  # int32 histogram rows clipped at once: below the 128 KiB mmap threshold
_ROUNDER = 1.5 * 2.0 ** 52  # x + _ROUNDER - _ROUNDER rounds a float64 x half to even
_CPU_BINCOUNT = 16384  # longest bincount on the CPU: its int64 result stays below the mmap threshold
_HUGE_PAGE_BYTES = 4 << 20  # numpy asks for transparent huge pages from this block size on
# Redistribution steps a GPU takes on every tile before it looks which tiles still deal (those go on one step
# at a time, and each step's look stalls the device). Measured on the factory's canvases, 24 stacks of 32:
# the last tile of a stack was done after 2 to 12 steps (median 5); 8 finish 20 of the 24 stacks unread.
_DEVICE_DEAL_STEPS = 8
# A stack of many tiles has more stragglers: on the factory's groups (recipe 13) stacks of ~3,000 tiles (groups
# of 256) had 0 - 2 tiles dealing after 8 steps and none after 20 - 24; a stack of 13,000 tiles (a group of
# 1,024) had 3 after 8, 2 after 16 and none after 24. Each step costs about 17 operations on every tile, each
# step of the tail about 25 and a read back; from this many tiles on, 24 steps on all tiles cost fewer of both.
_MANY_TILES, _MANY_TILES_DEAL_STEPS = 8192, 24


def device_deal_steps(tiles: int) -> int:
    """Redistribution steps a GPU takes on all ``tiles`` at once (:func:`_deal_all_rows`) before it reads back
    which still deal.  The result is the same for any number (``Testing/test_clahe.py``); only the cost differs.

    >>> device_deal_steps(3000), device_deal_steps(13000)
    (8, 24)
    """
    return _MANY_TILES_DEAL_STEPS if tiles >= _MANY_TILES else _DEVICE_DEAL_STEPS


def kernel_size_for(shape: Tuple[int, int], *, kernel_fraction: float = 0.125) -> Tuple[int, int]:
    """Tile size the project uses for an image of ``shape``.

    Parameters
    ----------
    shape : tuple of int
        Image height and width.
    kernel_fraction : float, optional
        Tile side as a share of the image side.

    Returns
    -------
    tuple of int
        ``max(2, round(s * kernel_fraction))`` per side (Python's round), as in
        :class:`SSIMQualityLib.contrast.AdaptiveHistogramEqualization`.
    """
    return tuple(max(2, int(round(s * kernel_fraction))) for s in shape)


def _reflect(pos: np.ndarray, size: int) -> np.ndarray:
    """Mirror positions into ``[0, size)`` as ``numpy.pad(mode='reflect')``, repeatedly if need be."""
    if size == 1:
        return np.zeros_like(pos)
    period = 2 * (size - 1)
    pos = pos % period
    return np.where(pos < size, pos, period - pos)


class _Geometry(NamedTuple):
    """What depends only on the image size, the tiles and the chunking (numpy arrays)."""

    n_tiles: int  # histogram tiles per image, nh * nw
    grid: int  # maps per image in the edge-padded grid, (nh + 2) * (nw + 2)
    hist_geo: np.ndarray  # (per_chunk, H, W) int32 flat histogram entry of each pixel at bin 0
    hist_base: np.ndarray  # (n_bands,) histogram entry of its image where a band's hist_geo starts
    hist_len: np.ndarray  # (n_bands,) histogram entries a band touches
    block_geo: np.ndarray  # (per_chunk, H, W) int32 flat entry of each pixel's upper-left map at bin 0
    corner_shift: Tuple[int, int, int, int]  # entries from the upper-left map to the four corner maps
    interior: np.ndarray  # (n_tiles,) row of each tile's map in the padded grid
    wy: np.ndarray  # (H,) float64 weight of the lower tile row at each row
    wx: np.ndarray  # (W,) float64 weight of the right tile column at each column
    corner_w: np.ndarray  # (4, H, W) float64 weight of each corner map, scikit-image's products
    extra_src: np.ndarray  # (E,) int64 source pixel of each mirrored pixel counted by the tiles
    extra_entry: np.ndarray  # (E,) int32 its histogram entry at bin 0


@functools.lru_cache(maxsize=64)  # the factory's matrices vary by group; an entry is ~40 bytes a pixel
def _geometry(height: int, width: int, kh: int, kw: int, nbins: int, per_chunk: int, rows: int) -> _Geometry:
    """Index and weight arrays for tiles of ``kh`` x ``kw`` on a ``height`` x ``width`` image."""
    nh, nw = -(-height // kh), -(-width // kw)  # histogram tiles per axis
    n_tiles, grid = nh * nw, (nh + 2) * (nw + 2)
    ys, xs = np.arange(height), np.arange(width)
    img = np.arange(per_chunk).reshape(-1, 1, 1)  # image within its chunk

    # Histogram tile of each pixel (tiles start at the first pixel).  Offsets
    # are relative to the first tile row a band of rows touches, so that a
    # band's counts are short (see hist_base).
    tile_row = ys // kh
    band_first = tile_row[::rows]
    row_base = np.repeat(band_first, rows)[:height]
    hist_geo = (img * n_tiles + ((tile_row - row_base) * nw)[:, None] + (xs // kw)[None, :]) * nbins
    hist_base = band_first * nw * nbins
    band_last = tile_row[np.minimum(np.arange(0, height, rows) + rows, height) - 1]
    hist_len = (band_last - band_first + 1) * nw * nbins

    # Maps live in a grid padded by one map on every side, the edge maps
    # repeated, as scikit-image pads its map array.  In padded coordinates
    # pixel y is in block (y + kh//2) // kh at offset (y + kh//2) % kh, and
    # block (i, j) blends grid maps (i, j), (i, j+1), (i+1, j), (i+1, j+1).
    py, px = ys + kh // 2, xs + kw // 2
    block_geo = (img * grid + (py // kh * (nw + 2))[:, None] + (px // kw)[None, :]) * nbins
    corner_shift = (0, nbins, (nw + 2) * nbins, (nw + 3) * nbins)
    interior = ((np.arange(nh)[:, None] + 1) * (nw + 2) + np.arange(nw)[None, :] + 1).reshape(-1)
    wy = (np.arange(kh) / kh)[py % kh]  # scikit-image: np.arange(k) / k
    wx = (np.arange(kw) / kw)[px % kw]
    # scikit-image multiplies column weight by row weight, then map by that.
    corner_w = np.stack([(cx * cy[:, None]) for cy in (1 - wy, wy) for cx in (1 - wx, wx)])

    # Tiles reaching past the last row or column also count mirrored pixels.
    ey, ex = np.nonzero(np.pad(np.zeros((height, width), bool),
                               ((0, nh * kh - height), (0, nw * kw - width)), constant_values=True))
    sy, sx = _reflect(ey, height), _reflect(ex, width)
    extra_src = sy * width + sx
    extra_entry = (ey // kh * nw + ex // kw) * nbins

    i32 = np.int32
    return _Geometry(n_tiles, grid, hist_geo.astype(i32), hist_base, hist_len, block_geo.astype(i32), corner_shift,
                     interior, wy, wx, corner_w, extra_src.astype(np.int64), extra_entry.astype(i32))


@functools.lru_cache(maxsize=4)
def _stride_table(nbins: int) -> np.ndarray:
    """``table[s, nbins + p] = int(p % s == 0)`` for ``0 <= p < nbins``; 0 elsewhere and for ``s = 0``.

    Row ``s`` read from column ``nbins - index`` marks the bins ``index,
    index + s, index + 2 s, ...`` that scikit-image's redistribution visits.
    """
    table = np.zeros((nbins + 1, 2 * nbins), dtype=np.int32)
    table[1:, nbins:] = np.arange(nbins)[None, :] % np.arange(1, nbins + 1)[:, None] == 0
    return table


def _whole_stack(device: torch.device) -> bool:
    """Whether to treat the stack as one chunk (GPUs) rather than in CPU-cache-sized chunks."""
    return device.type != "cpu"


def _allocate(device: torch.device, specs: Dict[str, Tuple[Tuple[int, ...], torch.dtype]]
              ) -> Dict[str, torch.Tensor]:
    """Empty work tensors, ``name: (shape, dtype)``; on the CPU carved out of one numpy block.

    numpy's allocator asks the kernel for transparent huge pages for blocks
    of 4 MiB and more, torch's does not.  On a virtual machine, where the
    first touch of every fresh 4 KiB page is a costly fault, fresh torch work
    buffers cost more than the arithmetic that fills them.
    """
    if device.type != "cpu":
        return {name: torch.empty(shape, dtype=dtype, device=device) for name, (shape, dtype) in specs.items()}
    places, total = {}, 0
    for name, (shape, dtype) in specs.items():
        nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        places[name] = (total, nbytes)
        total += -(-nbytes // 64) * 64  # keep every buffer 64-byte aligned
    block = torch.from_numpy(np.empty(max(total, _HUGE_PAGE_BYTES), dtype=np.uint8))
    return {name: block[start:start + nbytes].view(dtype).view(shape)
            for (name, (shape, dtype)), (start, nbytes) in zip(specs.items(), places.values())}


def _chunks(n_images: int, height: int, images_per_chunk: int, rows_per_chunk: int
            ) -> Iterator[Tuple[int, int, int, int, int]]:
    """Split a (B, H, W) stack into contiguous blocks ``(b0, b1, y0, y1, band)``.

    A block is up to ``images_per_chunk`` whole images (band 0) or, when
    ``rows_per_chunk < height``, band number ``band`` of the rows of one image.
    """
    if rows_per_chunk >= height:
        for b0 in range(0, n_images, images_per_chunk):
            yield b0, min(n_images, b0 + images_per_chunk), 0, height, 0
    else:
        for b in range(n_images):
            for band, y0 in enumerate(range(0, height, rows_per_chunk)):
                yield b, b + 1, y0, min(height, y0 + rows_per_chunk), band


def _clip(hist: torch.Tensor, clim: torch.Tensor, total: int, excess: torch.Tensor,
          scratch: Tuple[torch.Tensor, torch.Tensor]) -> None:
    """Clip histogram rows at ``clim`` and hand out the excess in bulk, in place, as scikit-image.

    Parameters
    ----------
    hist : (T, nbins) int32 tensor
        One histogram per row (tile), each summing to ``total``; clipped in place.
    clim : (T, 1) int32 tensor
        Maximum count per bin of each row.
    total : int
        Pixels per tile.
    excess : (T, 1) int32 tensor
        Receives the excess still to be dealt out (see :func:`_deal_out`).
    scratch : two (>= T, nbins) int32 tensors
        Work space.

    Notes
    -----
    Every count taken off a bin goes to the excess and every count added comes
    from it (scikit-image lets the excess go negative), so the excess is always
    ``total - hist.sum()`` and needs no bookkeeping of its own.
    """
    nbins = hist.shape[1]
    hist.clamp_(max=clim)
    n_excess = total - hist.sum(dim=1, keepdim=True, dtype=torch.int32)
    # scikit-image gives every bin below clim - incr (incr = excess // nbins)
    # incr more, then fills every bin in [clim - incr, clim) to the limit --
    # bins just raised too -- even if that overdraws the excess.  Both at
    # once: a bin ends at h + incr if that is below clim - incr, else at clim.
    # With gap = clim - (h + incr): end = clim - gap * [gap > incr], the mask
    # [gap > incr] being clamp(gap - incr, 0, 1) for integers (no bool tensors:
    # they are slower here).
    bin_incr = torch.div(n_excess, nbins, rounding_mode="floor")
    gap = torch.sub(clim - bin_incr, hist, out=scratch[0][:hist.shape[0]])
    mask = torch.sub(gap, bin_incr, out=scratch[1][:hist.shape[0]]).clamp_(0, 1)
    torch.sub(clim, gap.mul_(mask), out=hist)
    torch.sub(total, hist.sum(dim=1, keepdim=True, dtype=torch.int32), out=excess)


def _deal_all_rows(hist: torch.Tensor, clim: torch.Tensor, total: int, left: torch.Tensor,
                   strides: torch.Tensor, steps: int) -> torch.Tensor:
    """The first ``steps`` steps of :func:`_deal_out` on every row at once, rows that are done masked out.

    A GPU waits for nothing here: no row is dropped, so no step reads a count
    back to the host (each read stalls the device, and :func:`_deal_out`
    reads two a step).  Done rows stay done (they take no more counts), so
    masking them gives what dropping them gives.  ``steps`` must not exceed
    ``nbins``: the stall check of a second pass is left to :func:`_deal_out`.

    Returns the (T, 1) bool mask of the rows still dealing.
    """
    nbins = hist.shape[1]
    under, hits = torch.empty_like(hist), torch.empty_like(hist)

    def still_dealing():
        u = torch.sub(clim, hist, out=under).clamp_(max=1)
        n = torch.sum(u, dim=1, keepdim=True, dtype=torch.int32)
        return u, n, torch.minimum(left, n) > 0  # excess left and a bin below the limit

    for index in range(steps):
        u, n_under, active = still_dealing()
        # clamp(min=1): a done row may have no excess left.  A done row's step becomes 0, whose row of the
        # stride table is all zeros: it visits no bin (a mask on the step, not on every bin).
        step = torch.div(n_under, left.clamp(min=1), rounding_mode="floor").clamp_(min=1).mul_(active).view(-1)
        torch.index_select(strides[:, nbins - index:2 * nbins - index], 0, step, out=hits)
        hist.add_(u.mul_(hits))
        torch.sub(total, hist.sum(dim=1, keepdim=True, dtype=torch.int32), out=left)
    return still_dealing()[2]


def _deal_out(hist: torch.Tensor, clim: torch.Tensor, total: int, excess: torch.Tensor,
              strides: torch.Tensor, rows_per_op: int, space: torch.Tensor, *, first_steps: int = 0) -> None:
    """Deal the remaining excess out one count per bin, in place, replaying scikit-image.

    scikit-image runs, per histogram::

        while excess > 0:
            for index in range(nbins):
                step = max(1, n_under // excess)     # n_under: bins below clim
                add 1 to the bins below clim among index, index + step, ...
                stop once excess <= 0
            stop if the pass changed nothing

    Here one ``index`` is one vectorised step for all rows still dealing; rows
    that are done are written back and dropped, so later steps (most rows need
    at most two) only touch the few rows left.  Bins never exceed the limit
    any more, so ``min(clim - hist, 1)`` is the 0/1 "below the limit" mask.

    Parameters
    ----------
    hist : (T, nbins) int32 tensor
        Histograms after :func:`_clip`; finished in place.
    clim : (T, 1) int32 tensor
        Limit per row.
    total : int
        Pixels per tile.
    excess : (T, 1) int32 tensor
        Excess per row, from :func:`_clip`.
    strides : (nbins + 1, 2 * nbins) int32 tensor
        :func:`_stride_table`.
    rows_per_op : int
        Most rows per operation (see ``_CPU_CLIP_ROWS_BYTES``).
    space : (2, T, nbins) int32 tensor
        Work space for the rows still dealing.
    first_steps : int
        Steps taken first on all rows at once (:func:`_deal_all_rows`, for
        GPUs); the rows still dealing after them go on here, so the result
        is the same for any value from 0 to ``nbins``.
    """
    nbins = hist.shape[1]
    t = min(int(first_steps), nbins)
    start = excess.clone() if t else excess  # the stall check compares with the excess before the first pass
    dealing = _deal_all_rows(hist, clim, total, excess, strides, t) if t else excess > 0
    ids = torch.nonzero(dealing.view(-1)).view(-1)
    if ids.numel() == 0:
        return
    rows = space[0, :ids.numel()]
    for r0 in range(0, ids.numel(), rows_per_op):
        torch.index_select(hist, 0, ids[r0:r0 + rows_per_op], out=rows[r0:r0 + rows_per_op])
    under = torch.empty((min(rows_per_op, ids.numel()), nbins), dtype=hist.dtype, device=hist.device)
    hits = torch.empty_like(under)
    lim, left = clim[ids], excess[ids]
    prev = start[ids]
    while True:
        index = t % nbins
        stuck = torch.zeros_like(left, dtype=torch.bool)
        if index == 0 and t > 0:
            stuck = left == prev  # a full pass changed nothing: scikit-image gives up
            prev = left.clone()  # a copy: left is updated in place below
        n_under = torch.empty_like(left)
        for r0 in range(0, rows.shape[0], rows_per_op):
            h, c = rows[r0:r0 + rows_per_op], lim[r0:r0 + rows_per_op]
            u = torch.sub(c, h, out=under[:h.shape[0]]).clamp_(max=1)
            torch.sum(u, dim=1, keepdim=True, dtype=torch.int32, out=n_under[r0:r0 + rows_per_op])
        # Done: excess spent, nothing below the limit (cannot change), or stuck.
        done = (left <= 0) | (n_under == 0) | stuck
        if bool(done.any()):
            finished = torch.nonzero(done.view(-1)).view(-1)
            for r0 in range(0, finished.numel(), rows_per_op):
                part = finished[r0:r0 + rows_per_op]
                hist.index_copy_(0, ids[part], rows.index_select(0, part))
            keep = torch.nonzero(~done.view(-1)).view(-1)
            if keep.numel() == 0:
                return
            ids, lim, left, prev, n_under = ids[keep], lim[keep], left[keep], prev[keep], n_under[keep]
            kept = space[1 if rows.data_ptr() == space[0].data_ptr() else 0, :keep.numel()]
            for r0 in range(0, keep.numel(), rows_per_op):
                torch.index_select(rows, 0, keep[r0:r0 + rows_per_op], out=kept[r0:r0 + rows_per_op])
            rows = kept
        step = torch.div(n_under, left, rounding_mode="floor").clamp_(min=1).view(-1)
        visited = strides[:, nbins - index:2 * nbins - index]
        for r0 in range(0, rows.shape[0], rows_per_op):
            h, c = rows[r0:r0 + rows_per_op], lim[r0:r0 + rows_per_op]
            u = torch.sub(c, h, out=under[:h.shape[0]]).clamp_(max=1)
            u.mul_(torch.index_select(visited, 0, step[r0:r0 + rows_per_op], out=hits[:h.shape[0]]))
            h.add_(u)
            torch.sub(total, h.sum(dim=1, keepdim=True, dtype=torch.int32), out=left[r0:r0 + rows_per_op])
        t += 1


def equalize_adapthist_batch(
    images: torch.Tensor,
    clip_limit: Union[float, torch.Tensor],
    *,
    kernel_fraction: float = 0.125,
    nbins: int = 256,
) -> torch.Tensor:
    """CLAHE of a stack of 2-D images, as ``skimage.exposure.equalize_adapthist``.

    Parameters
    ----------
    images : (B, H, W) float tensor
        Grey images with values in [0, 1] (values outside are clamped), on
        any device.
    clip_limit : float or (B,) tensor
        Normalised contrast limit (higher equalises harder), one for all
        images or one per image; ``<= 0`` means no clipping (plain AHE).
    kernel_fraction : float, optional
        Tile side as a share of the image side: the tile is
        ``max(2, round(s * kernel_fraction))`` pixels per side, as in
        :class:`SSIMQualityLib.contrast.AdaptiveHistogramEqualization`.
    nbins : int, optional
        Number of grey bins of the histograms.

    Returns
    -------
    (B, H, W) float32 tensor
        Equalised images in [0, 1], on the device of ``images``.

    Examples
    --------
    >>> x = torch.linspace(0, 1, 64 * 64).reshape(1, 64, 64) ** 2
    >>> y = equalize_adapthist_batch(x, 0.01)
    >>> tuple(y.shape), y.dtype, float(y.min()), float(y.max())
    ((1, 64, 64), torch.float32, 0.0, 1.0)
    """
    if images.ndim != 3:
        raise ValueError(f"images must be (B, H, W), got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"images must be a float tensor, got {images.dtype}")
    if not 0 < kernel_fraction <= 1:
        raise ValueError(f"kernel_fraction must be in (0, 1], got {kernel_fraction}")
    if not 1 <= nbins <= NR_OF_GRAY:
        raise ValueError(f"nbins must be in [1, {NR_OF_GRAY}], got {nbins}")
    B, H, W = images.shape
    device = images.device
    cl = torch.as_tensor(clip_limit, dtype=torch.float64, device=device)
    if cl.ndim == 0:
        cl = cl.expand(B)
    if cl.shape != (B,):
        raise ValueError(f"clip_limit must be a float or a ({B},) tensor, got shape {tuple(cl.shape)}")
    if B * H * W == 0:
        return torch.empty((B, H, W), dtype=torch.float32, device=device)
    with torch.no_grad():  # the out= operations below refuse tensors that record gradients
        return _equalize(images, cl, kernel_fraction, nbins)


def _equalize(images: torch.Tensor, cl: torch.Tensor, kernel_fraction: float, nbins: int) -> torch.Tensor:
    """:func:`equalize_adapthist_batch` on checked arguments, ``cl`` a (B,) float64 tensor."""
    B, H, W = images.shape
    device = images.device
    # The result through numpy on the CPU, for its huge pages (see _allocate).
    out = (torch.from_numpy(np.empty((B, H, W), dtype=np.float32)) if device.type == "cpu"
           else torch.empty((B, H, W), dtype=torch.float32, device=device))

    f64, f32, i32 = torch.float64, torch.float32, torch.int32
    kh, kw = kernel_size_for((H, W), kernel_fraction=kernel_fraction)
    kernel_elements = kh * kw
    n_tiles = -(-H // kh) * -(-W // kw)
    grid = (-(-H // kh) + 2) * (-(-W // kw) + 2)
    tile_bins, grid_bins = n_tiles * nbins, grid * nbins
    if B * grid_bins >= 2 ** 31:
        raise ValueError(f"a stack of {B} images is too large for int32 indices: split it")

    # Chunks (see the module's Speed notes): per_chunk whole images, or bands
    # of `rows` rows of one image; clip_rows histograms clipped at once; the
    # padding rings of per_grid images' map grids filled at once.
    whole = _whole_stack(device)
    if whole:
        per_chunk, rows, clip_rows, per_grid = B, H, B * n_tiles, B
    else:
        per_chunk = max(1, min(B, _CPU_PIXELS // (H * W), _CPU_PIXELS // tile_bins))
        rows = -(-H // -(-H * W // _CPU_PIXELS))  # equal bands
        clip_rows = max(1, min(B * n_tiles, _CPU_CLIP_ROWS_BYTES // (4 * nbins)))
        per_grid = max(1, min(B, _CPU_PIXELS // (max(-(-H // kh), -(-W // kw) + 2) * nbins)))
    n_bands = -(-H // rows)
    chunks = list(_chunks(B, H, per_chunk, rows))
    max_pixels = per_chunk * rows * W
    # A GPU takes one image's index tables from the host and adds each image's offset on the device. Tables for
    # the whole stack used to be built in numpy and copied over at every call (the factory's stacks differ in
    # count and size from call to call, so the cache hardly ever held them): 8 bytes a pixel, 0.9 s on this
    # project's 2-core CPU for 1,024 images of 192 x 160, while the fifth window's GPU profile put 174 ms of a
    # group of 1,024's 332 ms in the contrast stage.
    geo = _geometry(H, W, kh, kw, nbins, 1 if whole else per_chunk, rows)
    hist_geo = torch.from_numpy(geo.hist_geo).to(device)
    block_geo = torch.from_numpy(geo.block_geo).to(device)
    if whole:
        image_index = torch.arange(B, dtype=i32, device=device).view(B, 1, 1)
        hist_geo = hist_geo + image_index * tile_bins
        block_geo = block_geo + image_index * grid_bins
    wy = torch.from_numpy(geo.wy).to(device)
    wx = torch.from_numpy(geo.wx).to(device)
    # Tile sides that are powers of two with kh * kw <= 1024 make every weight
    # product a multiple of 1/1024, so map value (< 2**14) times weight and all
    # partial sums fit float32's 24 bits: any float32 evaluation is exact and
    # nested lerps give scikit-image's numbers.  Otherwise replay its rounding:
    # each corner's float64 product rounded to float32, summed in float32 in
    # scikit-image's order.
    dyadic = all(k & (k - 1) == 0 for k in (kh, kw)) and kernel_elements <= 1024
    if dyadic:
        wy32, wx32 = wy.to(f32).view(H, 1), wx.to(f32)
    else:
        corner_w = torch.from_numpy(geo.corner_w).to(device)

    # --- per-image intensity range (img_as_uint is monotone: min/max of x do) ---
    band_lo = torch.empty((n_bands, B), dtype=images.dtype, device=device)
    band_hi = torch.empty((n_bands, B), dtype=images.dtype, device=device)
    for b0, b1, y0, y1, band in chunks:
        piece = images[b0:b1, y0:y1].reshape(b1 - b0, -1)
        torch.amin(piece, dim=1, out=band_lo[band, b0:b1])
        torch.amax(piece, dim=1, out=band_hi[band, b0:b1])
    x_lo, x_hi = band_lo.amin(dim=0).to(f64), band_hi.amax(dim=0).to(f64)
    # A GPU clamps and clips unconditionally below (each is a no-op when not needed): asking first whether it
    # is needed would make the device wait for the answer.
    clamp_input = whole or bool((x_lo < 0).any() | (x_hi > 1).any())
    u_lo = torch.round(x_lo.clamp(0, 1) * 65535)
    u_span = torch.round(x_hi.clamp(0, 1) * 65535) - u_lo
    # scikit-image clips a constant image into 0..16383 instead of stretching
    # it: lo = 0, span = 16383 and a clamp do the same.
    flat_input = u_span == 0
    any_flat_input = whole or bool(flat_input.any())
    u_lo = torch.where(flat_input, torch.zeros_like(u_lo), u_lo)
    u_span = torch.where(flat_input, torch.full_like(u_span, NR_OF_GRAY - 1), u_span).view(B, 1, 1)
    # x * 65535 + R - (R + lo) is rint(x * 65535) - lo: adding R = 1.5 * 2**52
    # leaves no fraction bits, so the FPU rounds half to even as np.rint does
    # (torch.round_ does too, but goes multi-threaded from 2048 elements).
    lo_shift = (u_lo + _ROUNDER).view(B, 1, 1)
    # level // bin_size as a truncated product: with 1/bin_size rounded up,
    # level * scale lands in [m, m + 1) for level in [m, m + 1) * bin_size
    # (the error is < 2**-36, the distance to m + 1 at least 1/bin_size).
    bin_scale = float(np.nextafter(1.0 / (1 + NR_OF_GRAY // nbins), 2.0))

    # --- 1. quantise and count --------------------------------------------------
    buf = _allocate(device, {
        "bins": ((B, H, W), i32),  # kept for step 3, then holds the truncated result
        "hist": ((B * tile_bins,), i32),
        "maps": ((B * grid, nbins), f32),  # edge-padded grids of maps
        "work": ((max_pixels,), f64),
        "index": ((max_pixels,), i32),
        "result": ((max_pixels,), f32),
        "corners": ((4, max_pixels), f32),
        "cdf": ((clip_rows, nbins), f64),
        "cdf_int": ((clip_rows, nbins), i32),
        "cdf_f32": ((clip_rows, nbins), f32),
        "clip_scratch": ((clip_rows, nbins), i32),
        "deal": ((2, B * n_tiles, nbins), i32),
        "term64": ((max_pixels if not dyadic else 0,), f64),
        "term32": ((max_pixels if not dyadic else 0,), f32),
    })
    bins, hist, work, index_buf = buf["bins"], buf["hist"], buf["work"], buf["index"]
    ones = torch.ones(1, dtype=i32, device=device).expand(max_pixels)
    for b0, b1, y0, y1, band in chunks:
        nb, shape = b1 - b0, (b1 - b0, y1 - y0, W)
        n = nb * (y1 - y0) * W
        q = work[:n].view(shape)
        # img_as_uint, then rescale_intensity to 0..16383 and np.round, with
        # numpy's float64 operations in numpy's order.
        if images.dtype == f64 and not clamp_input:
            torch.mul(images[b0:b1, y0:y1], 65535, out=q)
        else:
            q.copy_(images[b0:b1, y0:y1])
            q.clamp_(0, 1).mul_(65535)
        q.add_(_ROUNDER).sub_(lo_shift[b0:b1])
        q.div_(u_span[b0:b1]).mul_(NR_OF_GRAY - 1).add_(_ROUNDER).sub_(_ROUNDER)
        if any_flat_input:
            q.clamp_(max=NR_OF_GRAY - 1)
        chunk_bins = bins[b0:b1, y0:y1]
        chunk_bins.copy_(q.mul_(bin_scale))  # truncation is floor: levels are >= 0
        if y0 == 0:
            hist[b0 * tile_bins:b1 * tile_bins].zero_()
        flat = torch.add(chunk_bins, hist_geo[:nb, y0:y1], out=index_buf[:n].view(shape))
        start = b0 * tile_bins + int(geo.hist_base[band])
        length = int(geo.hist_len[band]) if nb == 1 else nb * tile_bins
        if length <= _CPU_BINCOUNT:
            hist[start:start + length] += torch.bincount(flat.view(-1), minlength=length)
        else:
            hist[start:start + length].index_add_(0, flat.view(-1), ones[:n])

    # Tiles reaching past the image also count the mirrored pixels.
    if geo.extra_src.size:
        src = torch.from_numpy(geo.extra_src).to(device)
        extra_entry = torch.from_numpy(geo.extra_entry).to(device)
        flat_bins = bins.view(B, -1)
        per_extra = B if whole else max(1, min(B, _CPU_PIXELS // src.numel(), _CPU_PIXELS // tile_bins))
        for b0 in range(0, B, per_extra):
            b1 = min(B, b0 + per_extra)
            image_start = (torch.arange(b1 - b0, device=device) * tile_bins).to(i32).view(-1, 1)
            vals = (flat_bins[b0:b1].index_select(1, src) + (extra_entry + image_start)).view(-1)
            hist[b0 * tile_bins:b1 * tile_bins].index_add_(0, vals, torch.ones(1, dtype=i32, device=device).expand(vals.numel()))

    # --- 2. clip and map --------------------------------------------------------
    # (A limit above the tile size clips nothing, as no limit at all.)
    clim = torch.where(cl > 0, torch.floor((cl * kernel_elements).clamp(1.0, kernel_elements)),
                       torch.full_like(cl, float(kernel_elements))).to(i32)
    clim = clim.repeat_interleave(n_tiles).view(-1, 1)
    hist = hist.view(B * n_tiles, nbins)
    strides = torch.from_numpy(_stride_table(nbins)).to(device)
    maps = buf["maps"]
    interior = torch.from_numpy(geo.interior).to(device)
    interior = (interior.view(1, -1) + torch.arange(B, device=device).view(-1, 1) * grid).view(-1)
    cdf, cdf_int, cdf_f32, clip_scratch = buf["cdf"], buf["cdf_int"], buf["cdf_f32"], buf["clip_scratch"]
    scale = (NR_OF_GRAY - 1) / kernel_elements
    excess = torch.empty((B * n_tiles, 1), dtype=i32, device=device)
    for r0 in range(0, B * n_tiles, clip_rows):
        _clip(hist[r0:r0 + clip_rows], clim[r0:r0 + clip_rows], kernel_elements, excess[r0:r0 + clip_rows],
              (cdf_int, clip_scratch))
    _deal_out(hist, clim, kernel_elements, excess, strides, clip_rows, buf["deal"],
              first_steps=device_deal_steps(B * n_tiles) if whole else 0)
    for r0 in range(0, B * n_tiles, clip_rows):
        r1 = min(B * n_tiles, r0 + clip_rows)
        # float64 product and truncation, as scikit-image's map_histogram.
        m = torch.cumsum(hist[r0:r1], dim=1, dtype=f64, out=cdf[:r1 - r0])
        m.mul_(scale).clamp_(max=NR_OF_GRAY - 1)
        m = cdf_f32[:r1 - r0].copy_(cdf_int[:r1 - r0].copy_(m))
        maps.index_copy_(0, interior[r0:r1], m)
    # Repeat the edge maps into the padding ring, columns first, then rows.
    maps = maps.view(B, -(-H // kh) + 2, -(-W // kw) + 2, nbins)
    for b0 in range(0, B, per_grid):
        m = maps[b0:b0 + per_grid]
        m[:, 1:-1, 0] = m[:, 1:-1, 1]
        m[:, 1:-1, -1] = m[:, 1:-1, -2]
        m[:, 0] = m[:, 1]
        m[:, -1] = m[:, -2]
    maps = maps.view(-1)

    # --- 3. interpolate and truncate --------------------------------------------
    corner_buf = buf["corners"].unbind(0)
    term64, term32 = buf["term64"], buf["term32"]
    band_lo = torch.empty((n_bands, B), dtype=f32, device=device)
    band_hi = torch.empty((n_bands, B), dtype=f32, device=device)
    for b0, b1, y0, y1, band in chunks:
        nb, shape = b1 - b0, (b1 - b0, y1 - y0, W)
        n = nb * (y1 - y0) * W
        index = torch.add(bins[b0:b1, y0:y1], block_geo[:nb, y0:y1], out=index_buf[:n].view(shape)).view(-1)
        chunk_maps = maps[b0 * grid_bins:b1 * grid_bins]
        corner = [torch.index_select(chunk_maps[shift:], 0, index, out=dest[:n]).view(shape)
                  for shift, dest in zip(geo.corner_shift, corner_buf)]
        res = buf["result"][:n].view(shape)
        if dyadic:
            top = torch.lerp(corner[0], corner[1], wx32, out=corner[0])
            bottom = torch.lerp(corner[2], corner[3], wx32, out=corner[2])
            torch.lerp(top, bottom, wy32[y0:y1], out=res)
        else:
            t64, t32 = term64[:n].view(shape), term32[:n].view(shape)
            for e in range(4):
                torch.mul(corner[e], corner_w[e, y0:y1], out=t64)
                if e == 0:
                    res.copy_(t64)  # rounds to float32
                else:
                    res.add_(t32.copy_(t64))
        # scikit-image casts back to its integer image: truncate, into bins
        # (no longer needed); the truncation is monotone, so min/max may precede it.
        bins[b0:b1, y0:y1].copy_(res)
        torch.amin(res.reshape(nb, -1), dim=1, out=band_lo[band, b0:b1])
        torch.amax(res.reshape(nb, -1), dim=1, out=band_hi[band, b0:b1])

    # --- 4. stretch each image's min..max to [0, 1] -------------------------------
    r_lo = band_lo.amin(dim=0).to(i32).to(f32)
    r_span = band_hi.amax(dim=0).to(i32).to(f32) - r_lo
    # rescale_intensity clips a constant result into [0, 1] instead.
    flat_result = r_span == 0
    any_flat_result = whole or bool(flat_result.any())
    r_lo = torch.where(flat_result, torch.zeros_like(r_lo), r_lo).view(B, 1, 1)
    r_span = torch.where(flat_result, torch.ones_like(r_span), r_span).view(B, 1, 1)
    for b0, b1, y0, y1, band in chunks:
        # In float32 this is numpy's float64 quotient rounded to float32: the
        # operands are exact integers and one division is correctly rounded.
        res = torch.sub(bins[b0:b1, y0:y1], r_lo[b0:b1], out=out[b0:b1, y0:y1])
        res.div_(r_span[b0:b1])
        if any_flat_result:
            res.clamp_(0, 1)
    return out
