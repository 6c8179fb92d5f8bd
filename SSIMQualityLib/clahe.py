"""Batched contrast-limited adaptive histogram equalisation (CLAHE) in torch.

:func:`equalize_adapthist_batch` reproduces ``skimage.exposure.equalize_adapthist``
(scikit-image 0.26, after Zuiderveld, Graphics Gems IV, 1994) for a stack of
2-D grey images of one size, with the tile size the project uses in
:class:`SSIMQualityLib.contrast.AdaptiveHistogramEqualization`::

    kernel = tuple(max(2, int(round(s * kernel_fraction))) for s in image.shape)
    exposure.equalize_adapthist(image, kernel_size=kernel, clip_limit=clip_limit)

It follows scikit-image step by step:

1. Quantise: ``img_as_uint`` (``rint(x * 65535)``), stretch that image's
   min..max to 0..16383 and round half to even, then fold into ``nbins``
   bins of ``1 + 16384 // nbins`` levels (with 256 bins only bins 0..252
   ever hold pixels; the other three still take part in the clipping).
2. Tiles: the image is reflect-padded by ``k // 2`` before and
   ``(k - s % k) % k + ceil(k / 2)`` after each axis; the histogram tiles are
   the ``ceil(s / k)`` tiles of side ``k`` starting at the first image pixel
   (mirrored past the last one).  Padding is done with indices, never copied.
3. Clip limit in counts: ``int(max(clip_limit * kh * kw, 1))``; no clipping
   for ``clip_limit <= 0``.
4. Clip and redistribute with scikit-image's integer arithmetic and quirks:
   ``excess // nbins`` goes to every bin below ``clim - excess // nbins``;
   every bin then in ``[clim - excess // nbins, clim)``, including bins just
   raised, is filled to ``clim`` and booked against the excess even when that
   overdraws it; what is left is dealt out one count at a time by
   scikit-image's strided passes (``for index in range(nbins)`` with
   ``step = max(1, n_under // n_excess)``).  Those passes are replayed for
   all tiles at once, one vectorised step per ``index``; finished tiles drop
   out, so the Python loop runs only as long as the slowest tile (two to five
   steps on head slices), and the counts are the same as scikit-image's.
5. Map: ``floor(min(cumsum(hist) * (16383 / (kh * kw)), 16383))``.
6. Interpolate bilinearly between the four surrounding tile maps with the
   weights ``i / k`` of scikit-image, truncate to an integer, stretch that
   image's min..max to [0, 1].

Speed
-----
Everything is vectorised over images, tiles and pixels; Python loops run over
chunks only.  On the CPU the work is cut into chunks of at most
``_CPU_CHUNK`` (32 768) elements per operation -- torch's parallel grain --
so that every operation stays in cache and runs on the calling thread: on a
small machine shared with other work, torch's thread pool costs several
milliseconds per parallel operation whenever a core is busy elsewhere.  On a
GPU the whole batch is one chunk.  Measured on the project's 2-core CPU
(shared, torch default threads), 32 head slices of 256 x 256: about
0.6 ms per slice against about 4 ms per slice for scikit-image (see
``Testing/test_clahe.py`` for the timing test).

Difference from scikit-image
----------------------------
Measured by ``Testing/test_clahe.py`` on synthetic head-like slices (eight
256 x 256, one 96 x 128, one 384 x 320; zero background, noise), kernel
fraction 1/8, clip limits 0.005 / 0.01 / 0.03:

* 256 x 256 (tiles 32 x 32): identical up to the float32 rounding of the
  result (max 3e-8);
* 96 x 128 and 384 x 320 (tiles 12 x 16 and 48 x 40): mean absolute
  difference below 1e-6, 99th percentile below 1e-6 (float32 rounding),
  maximum one grey level of the 16383 (about 7e-5).

The one source of difference is the interpolation arithmetic: scikit-image
rounds each of the four weighted map values to float32 before summing them,
here the interpolation is two nested ``lerp`` in float32.  Both are exact
(hence identical) when every weight is a multiple of ``1 / 1024`` -- tile
sides that are powers of two with ``kh * kw <= 1024``, e.g. 256 x 256 images
-- otherwise scikit-image's rounding sometimes leaves a value a hair below an
integer that its truncation then drops by one level, mostly in flat regions.

Other deliberate differences: inputs are clamped to [0, 1] (scikit-image
raises outside [-1, 1]); the input is quantised in float64 whatever its dtype
(scikit-image uses float32 for float32 input, which can move a value lying
exactly half-way between two 16-bit levels); a ``clip_limit`` tensor is used
in float64; only 2-D grey images; the result is float32, not float64.
"""
from __future__ import annotations

import math
import os
from typing import Iterator, Tuple, Union

import torch

__all__ = ["equalize_adapthist_batch", "kernel_size_for"]

NR_OF_GRAY = 2 ** 14  # grey levels of scikit-image's intermediate image
_CPU_CHUNK = int(os.environ.get('CLAHE_CHUNK', 16384))  # elements per CPU operation, below torch's parallel grain (32768)
_ROUNDER = 1.5 * 2.0 ** 52  # x + _ROUNDER - _ROUNDER rounds float64 x half to even


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


def _reflect(pos: torch.Tensor, size: int) -> torch.Tensor:
    """Mirror positions into ``[0, size)`` without repeating the edge sample.

    This is ``numpy.pad(mode='reflect')``, also for pads longer than the
    axis, where numpy mirrors again (a period of ``2 * (size - 1)``).
    """
    if size == 1:
        return torch.zeros_like(pos)
    period = 2 * (size - 1)
    pos = pos.remainder(period)
    return torch.where(pos < size, pos, period - pos)


def _round_half_even(x: torch.Tensor) -> torch.Tensor:
    """Round float64 ``x`` (``|x| < 2**51``) half to even in place, as ``np.round``.

    Adding and subtracting 1.5 * 2**52 leaves no fraction bits, so the FPU
    rounds to nearest even.  ``torch.round_`` does the same but goes
    parallel from 2048 elements (see ``_CPU_CHUNK``).
    """
    return x.add_(_ROUNDER).sub_(_ROUNDER)


def _chunks(n_images: int, height: int, images_per_chunk: int, rows_per_chunk: int
            ) -> Iterator[Tuple[int, int, int, int]]:
    """Split a (B, H, W) stack into contiguous ``(b0, b1, y0, y1)`` blocks.

    A block is either ``images_per_chunk`` whole images or, when
    ``rows_per_chunk < height``, a band of rows of one image.
    """
    if rows_per_chunk >= height:
        for b0 in range(0, n_images, images_per_chunk):
            yield b0, min(n_images, b0 + images_per_chunk), 0, height
    else:
        for b in range(n_images):
            for y0 in range(0, height, rows_per_chunk):
                yield b, b + 1, y0, min(height, y0 + rows_per_chunk)


def _clip_histograms(hist: torch.Tensor, clim: torch.Tensor) -> None:
    """Clip every histogram row at ``clim`` and hand the excess back, in place, as scikit-image.

    Parameters
    ----------
    hist : (T, nbins) long tensor
        One histogram per row (tile); clipped in place.
    clim : (T, 1) long tensor
        Maximum count per bin of each row.
    """
    nbins = hist.shape[1]
    over = (hist - clim).clamp_(min=0)
    n_excess = over.sum(dim=1, keepdim=True)
    hist.sub_(over)

    # First pass: one increment for every bin that stays below the limit.
    bin_incr = torch.div(n_excess, nbins, rounding_mode="floor")
    upper = clim - bin_incr
    low = hist < upper
    hist.add_(low * bin_incr)
    n_excess -= low.sum(dim=1, keepdim=True) * bin_incr
    # scikit-image then fills every bin in [upper, clim) to the limit -- bins
    # just raised by bin_incr too -- and books that against the excess even if
    # it goes negative (then nothing more is dealt out).
    mid = (hist >= upper) & (hist < clim)
    n_excess += ((hist - clim) * mid).sum(dim=1, keepdim=True)
    hist.copy_(torch.where(mid, clim, hist))

    # Deal out the rest one count per bin, replaying scikit-image's loop
    #   for index in range(nbins): add 1 to the bins under the limit at
    #   index, index + step, ... with step = max(1, n_under // n_excess)
    # (repeated while a full pass still changes something), one index per
    # step for all rows at once; rows that are done are masked out.
    active = n_excess > 0
    if not bool(active.any()):
        return
    prev = n_excess.clone()
    bins = torch.arange(nbins, device=hist.device)
    t = 0
    while True:
        index = t % nbins
        if index == 0 and t > 0:
            # End of a full pass: scikit-image stops when it changed nothing.
            active &= n_excess != prev
            prev = n_excess.clone()
        under = hist < clim
        n_under = under.sum(dim=1, keepdim=True)
        # A row with no bin under the limit can never change again.
        active &= (n_excess > 0) & (n_under > 0)
        if not bool(active.any()):
            return
        step = torch.div(n_under, n_excess.clamp(min=1), rounding_mode="floor").clamp_(min=1)
        offset = bins - index
        hit = under & active & (offset >= 0) & (offset.remainder(step) == 0)
        hist += hit
        n_excess -= hit.sum(dim=1, keepdim=True)
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
    out = torch.empty((B, H, W), dtype=torch.float32, device=device)
    if out.numel() == 0:
        return out

    f64, f32 = torch.float64, torch.float32
    kh, kw = kernel_size_for((H, W), kernel_fraction=kernel_fraction)
    nh, nw = math.ceil(H / kh), math.ceil(W / kw)  # histogram tiles per axis
    n_tiles = nh * nw
    n_blocks = (nh + 1) * (nw + 1)  # interpolation blocks of the padded image
    tile_bins, block_bins = n_tiles * nbins, n_blocks * nbins
    kernel_elements = kh * kw
    # int32 indices are cheaper to build and gather with; int64 for huge stacks.
    index_dtype = torch.int32 if B * max(tile_bins, block_bins) < 2 ** 31 else torch.int64

    # Chunking: on the CPU no operation may exceed _CPU_CHUNK elements, be it
    # pixels of the chunk or histogram bins of its images.
    if device.type == "cpu":
        per_chunk = max(1, min(_CPU_CHUNK // (H * W), _CPU_CHUNK // tile_bins))
        n_bands = -(-H * W // _CPU_CHUNK)  # equal bands of rows when an image is too large
        rows = -(-H // n_bands)
        per_group = max(1, _CPU_CHUNK // tile_bins)  # images per clipping pass
        per_table = max(1, _CPU_CHUNK // block_bins)  # images per map-table copy
    else:
        per_chunk = per_group = per_table = B
        rows = H
    per_chunk = min(per_chunk, B)

    # --- per-image intensity range (img_as_uint is monotone: min/max of x do) ---
    x_lo = torch.empty(B, dtype=f64, device=device)
    x_hi = torch.empty(B, dtype=f64, device=device)
    for b0, b1, y0, y1 in _chunks(B, H, per_chunk, rows):
        piece = images[b0:b1, y0:y1].reshape(b1 - b0, -1)
        lo, hi = piece.amin(dim=1).to(f64), piece.amax(dim=1).to(f64)
        if y0 > 0:
            lo, hi = torch.minimum(lo, x_lo[b0:b1]), torch.maximum(hi, x_hi[b0:b1])
        x_lo[b0:b1], x_hi[b0:b1] = lo, hi
    clamp_input = bool((x_lo < 0).any() | (x_hi > 1).any())
    u_lo = torch.round(x_lo.clamp(0, 1) * 65535)
    u_span = torch.round(x_hi.clamp(0, 1) * 65535) - u_lo
    # scikit-image clips a constant image into 0..16383 instead of stretching
    # it: lo = 0, span = 16383 and a clamp do the same.
    flat_input = u_span == 0
    any_flat_input = bool(flat_input.any())
    u_lo = torch.where(flat_input, torch.zeros_like(u_lo), u_lo)
    u_span = torch.where(flat_input, torch.full_like(u_span, NR_OF_GRAY - 1), u_span)
    lo_shift = (u_lo + _ROUNDER).view(B, 1, 1)  # folds the rounding of x * 65535 into "- lo"
    u_span = u_span.view(B, 1, 1)
    bin_size = 1 + NR_OF_GRAY // nbins

    # --- geometry: per-row and per-column parts of the flat indices -------------
    ys = torch.arange(H, device=device)
    xs = torch.arange(W, device=device)
    img = torch.arange(per_chunk, device=device).view(-1, 1, 1)  # image within a chunk
    # Histogram tile of each pixel (tiles start at the first pixel).
    hist_row = (img * tile_bins + (ys // kh * (nw * nbins)).view(1, H, 1)).to(index_dtype)
    hist_col = (xs // kw * nbins).to(index_dtype)
    # Interpolation block of each pixel: in padded coordinates pixel y is in
    # block (y + kh//2) // kh at offset (y + kh//2) % kh.  Block (i, j) blends
    # the maps of tiles i-1 and i (rows) and j-1 and j (columns), clamped to
    # the tile grid, as scikit-image pads its grid of maps by its edge.
    py, px = ys + kh // 2, xs + kw // 2
    block_row = (img * block_bins + (py // kh * ((nw + 1) * nbins)).view(1, H, 1)).to(index_dtype)
    block_col = (px // kw * nbins).to(index_dtype)
    wy = (torch.arange(kh, device=device, dtype=f64) / kh)[py % kh]  # scikit-image: arange(k) / k
    wx = (torch.arange(kw, device=device, dtype=f64) / kw)[px % kw]
    # Tile sides that are powers of two with kh * kw <= 1024 make every weight
    # product a multiple of 1/1024, so map value (< 2**14) times weight and all
    # partial sums fit float32's 24 bits: every float32 evaluation order is
    # exact, and two nested lerps give scikit-image's numbers.  Otherwise
    # replay scikit-image's rounding: each corner's float64 product rounded
    # to float32, summed in float32 in its order.
    dyadic = all(k & (k - 1) == 0 for k in (kh, kw)) and kernel_elements <= 1024
    if dyadic:
        wy32, wx32 = wy.to(f32).view(H, 1), wx.to(f32)
    else:
        wy_c = [(1 - wy).view(H, 1), wy.view(H, 1)]
        wx_c = [(1 - wx).view(1, W), wx.view(1, W)]

    # --- 1. quantise, count, and note each pixel's map-table index ---------------
    hist = torch.empty(B * tile_bins, dtype=torch.int64, device=device)
    table_index = torch.empty((B, H, W), dtype=index_dtype, device=device)
    for b0, b1, y0, y1 in _chunks(B, H, per_chunk, rows):
        nb = b1 - b0
        q = images[b0:b1, y0:y1].to(f64, copy=True)
        if clamp_input:
            q.clamp_(0, 1)
        # img_as_uint (rint of x * 65535), then rescale_intensity to
        # 0..16383 and np.round, with numpy's float64 operations in its order.
        q.mul_(65535).add_(_ROUNDER).sub_(lo_shift[b0:b1])
        _round_half_even(q.div_(u_span[b0:b1]).mul_(NR_OF_GRAY - 1))
        if any_flat_input:
            q.clamp_(max=NR_OF_GRAY - 1)
        bins = q.div_(bin_size).to(index_dtype)  # truncation: the level is >= 0
        flat = (bins + hist_row[:nb, y0:y1]).add_(hist_col)
        counts = torch.bincount(flat.view(-1), minlength=nb * tile_bins)
        if y0 == 0:
            hist[b0 * tile_bins:b1 * tile_bins] = counts
        else:
            hist[b0 * tile_bins:b1 * tile_bins] += counts
        torch.add(bins, block_row[:nb, y0:y1], out=table_index[b0:b1, y0:y1]).add_(block_col)

    # Tiles reaching past the image also count the mirrored pixels.
    hist_h, hist_w = nh * kh, nw * kw
    if hist_h > H or hist_w > W:
        ey = torch.arange(hist_h, device=device).view(-1, 1).expand(hist_h, hist_w)
        ex = torch.arange(hist_w, device=device).view(1, -1).expand(hist_h, hist_w)
        outside = (ey >= H) | (ex >= W)
        ey, ex = ey[outside], ex[outside]
        sy, sx = _reflect(ey, H), _reflect(ex, W)
        # table_index holds bin + block offset: swap that for the tile offset.
        shift = (ey // kh * nw + ex // kw) * nbins - ((py[sy] // kh) * (nw + 1) + px[sx] // kw) * nbins
        src = sy * W + sx
        per_extra = max(1, _CPU_CHUNK // max(src.numel(), tile_bins)) if device.type == "cpu" else B
        for b0 in range(0, B, per_extra):
            b1 = min(B, b0 + per_extra)
            b = torch.arange(b0, b1, device=device)
            # Undo the image's place within its chunk, put its place in this group.
            image_shift = (b - b0) * tile_bins - b.remainder(per_chunk) * block_bins
            vals = table_index[b0:b1].view(b1 - b0, -1).index_select(1, src)
            vals = vals + (shift.view(1, -1) + image_shift.view(-1, 1)).to(index_dtype)
            hist[b0 * tile_bins:b1 * tile_bins] += torch.bincount(vals.view(-1), minlength=(b1 - b0) * tile_bins)

    # --- 2. clip limit in counts, per image ---------------------------------------
    clim = torch.where(cl > 0, torch.floor((cl * kernel_elements).clamp(min=1.0)),
                       torch.full_like(cl, float(kernel_elements))).long()

    # --- 3. clip, map, and lay the maps out per interpolation block --------------
    # table[b, block, v, e] = map of corner e (upper-left, upper-right,
    # lower-left, lower-right) of the block at grey bin v, so that one 16-byte
    # gather per pixel fetches all four values.
    bi = torch.arange(nh + 1, device=device).view(-1, 1)
    bj = torch.arange(nw + 1, device=device).view(1, -1)
    corner_tiles = [((bi + ey - 1).clamp(0, nh - 1) * nw + (bj + ex - 1).clamp(0, nw - 1)).flatten()
                    for ey in (0, 1) for ex in (0, 1)]
    table = torch.empty((B, n_blocks, nbins, 4), dtype=f32, device=device)
    scale = (NR_OF_GRAY - 1) / kernel_elements
    hist = hist.view(B * n_tiles, nbins)
    for g0 in range(0, B, per_group):
        g1 = min(B, g0 + per_group)
        h = hist[g0 * n_tiles:g1 * n_tiles]
        _clip_histograms(h, clim[g0:g1].repeat_interleave(n_tiles).view(-1, 1))
        # float64 product and truncation, as scikit-image's map_histogram.
        maps = torch.cumsum(h, dim=1).to(f64).mul_(scale).clamp_(max=NR_OF_GRAY - 1)
        maps = maps.to(torch.int32).view(g1 - g0, n_tiles, nbins)
        for t0 in range(0, g1 - g0, per_table):
            t1 = min(g1 - g0, t0 + per_table)
            for e, tiles in enumerate(corner_tiles):
                table[g0 + t0:g0 + t1, :, :, e] = maps[t0:t1].index_select(1, tiles)

    # --- 4. interpolate and truncate ---------------------------------------------
    r_lo = torch.empty(B, dtype=f32, device=device)
    r_hi = torch.empty(B, dtype=f32, device=device)
    for b0, b1, y0, y1 in _chunks(B, H, per_chunk, rows):
        nb = b1 - b0
        corners = table[b0:b1].view(torch.complex128).view(-1)  # 4 float32 = one complex128
        g = corners.index_select(0, table_index[b0:b1, y0:y1].view(-1))
        g = g.view(f32).view(nb, y1 - y0, W, 4)
        res = out[b0:b1, y0:y1]
        if dyadic:
            top = torch.lerp(g[..., 0], g[..., 1], wx32)
            bottom = torch.lerp(g[..., 2], g[..., 3], wx32)
            torch.lerp(top, bottom, wy32[y0:y1], out=res)
        else:
            for e in range(4):
                term = g[..., e].to(f64).mul_(wy_c[e // 2][y0:y1]).mul_(wx_c[e % 2])
                if e == 0:
                    res.copy_(term)  # rounds to float32
                else:
                    res.add_(term.to(f32))
        res.copy_(res.to(torch.int32))  # scikit-image casts back to its integer image
        lo = res.reshape(nb, -1).amin(dim=1)
        hi = res.reshape(nb, -1).amax(dim=1)
        if y0 > 0:
            lo, hi = torch.minimum(lo, r_lo[b0:b1]), torch.maximum(hi, r_hi[b0:b1])
        r_lo[b0:b1], r_hi[b0:b1] = lo, hi

    # --- 5. stretch each image's min..max to [0, 1] ----------------------------
    # rescale_intensity clips a constant result into [0, 1] instead.
    r_span = r_hi - r_lo
    flat_result = r_span == 0
    any_flat_result = bool(flat_result.any())
    r_lo = torch.where(flat_result, torch.zeros_like(r_lo), r_lo).view(B, 1, 1)
    r_span = torch.where(flat_result, torch.ones_like(r_span), r_span).view(B, 1, 1)
    for b0, b1, y0, y1 in _chunks(B, H, per_chunk, rows):
        # float32 gives numpy's float64 quotient rounded to float32: the
        # operands are exact integers and a single division is correctly rounded.
        res = out[b0:b1, y0:y1]
        res.sub_(r_lo[b0:b1]).div_(r_span[b0:b1])
        if any_flat_result:
            res.clamp_(0, 1)
    return out
