"""Tiled inference with overlap blending, so restoring a large photo needs bounded memory.

:func:`tiled_forward` runs any image-to-image function ``fn`` ((B, C, h, w) -> (B, C', h, w)) on
overlapping tiles of an image, in batches, and blends the tile outputs with smooth weights.

Tiling along one axis of length ``L`` with tile size ``t`` (``t = L`` when the image is smaller)
and overlap ``o``: tiles start every ``t - o`` pixels and the last one is aligned to the end of
the axis, so every tile has the full size ``t``.

Blending window, per axis and separable (``w(y, x) = w_y(y) * w_x(x)``), at each *inner* edge (one
that borders another tile; image borders are never down-weighted): weight 0 on the ``margin``
outermost pixels (default ``overlap // 4``; the network saw zero padding there), then a raised-cosine
ramp from 0 to 1 over ``overlap - 2 * margin`` pixels, then 1. The accumulated outputs are divided by
the accumulated weights. Exactly (up to float rounding): one tile covering the image (or
``tile <= 0``) gives ``fn(img)`` in one call, and a local operator whose receptive field reaches at
most ``margin`` pixels gives the untiled result.

Alignment (``align``, e.g. 8 for MPRNet): the image is first reflect-padded at the bottom/right to a
multiple of ``align``, and every tile is a multiple of ``align`` pixels and starts at one, so a network
that downsamples sees each tile on the same grid as the whole image. The step is rounded down to a
multiple of ``align``, so the actual overlap may be larger than requested (never smaller). Networks
with global operations (MPRNet's channel attention, its half/quarter splits) still differ slightly
near each tile's own split lines; why, and how much: docs/design.md, "Tiled inference" and
docs/findings.md, "Tiling parity".

Memory: :func:`tiled_bands` reads each tile on demand (the caller's image may stay in 8 or 16 bits)
and keeps the weighted sums only for the band of rows that later tiles still reach (a tile height by
the image width), handing out finished rows top to bottom; :func:`tiled_forward` is the same
computation on a tensor, writing the bands into its output, so both give the same result bit for bit.
"""
import math

import torch
from tqdm import tqdm

from uniremoval.utils.padding import pad_to_multiple


def _pair(value, name):
    if isinstance(value, int):
        return value, value
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return tuple(value)
    raise TypeError(f'{name} must be an int or a pair of ints (height, width), got {value!r}')


def tile_starts(length, tile, overlap, align=1):
    """Start offsets of the tiles along an axis of ``length`` pixels (see the module docstring).

    One tile at 0 when ``length <= tile``; otherwise tiles every ``tile - overlap`` pixels (rounded
    down to a multiple of ``align``, at least ``align``), the last one ending exactly at ``length``.
    With ``length`` and ``tile`` multiples of ``align``, every start is a multiple of ``align``.
    """
    if length <= tile:
        return [0]
    if not 0 <= overlap < tile:
        raise ValueError(f'overlap ({overlap}) must be >= 0 and smaller than the tile ({tile})')
    step = max(align, (tile - overlap) // align * align)
    starts = list(range(0, length - tile, step))
    starts.append(length - tile)
    return starts


def edge_window(size, overlap, margin, inner_start, inner_end):
    """1-D blending weights (float64) of a tile of ``size`` pixels: at each inner edge, 0 on the
    ``margin`` outermost pixels, then a raised-cosine ramp over ``overlap - 2 * margin`` pixels;
    1 elsewhere. Positive on ``[margin, size - margin)`` when ``size > overlap >= 2 * margin``.

    Args:
        inner_start (bool): the tile's first pixel borders another tile (not the image border).
        inner_end (bool): the tile's last pixel borders another tile.
    """
    ramp_len = overlap - 2 * margin
    # Sampled at pixel centres: strictly inside (0, 1), and ramp + reversed ramp == 1, so regular
    # neighbours' weights sum to 1 across the overlap.
    ramp = 0.5 - 0.5 * torch.cos(math.pi * (torch.arange(ramp_len, dtype=torch.float64) + 0.5) / max(ramp_len, 1))

    def taper_start(weights):
        weights[:margin] = 0
        ramped = weights[margin:margin + ramp_len]
        ramped *= ramp[:ramped.numel()]
        return weights

    weights = torch.ones(size, dtype=torch.float64)
    if inner_start:
        weights = taper_start(weights)
    if inner_end:
        weights = taper_start(weights.flip(0)).flip(0)
    return weights


def _axis_tiles(length, tile, overlap, margin, align=1):
    """[(start, size, window)] for one axis; with ``align > 1`` the window ramps span the actual
    overlap of aligned neighbours (at least ``overlap``)."""
    size = min(tile, length)
    starts = tile_starts(length, tile, overlap, align)
    if align > 1 and len(starts) > 1:
        overlap = size - (starts[1] - starts[0])
    margin = overlap // 4 if margin is None else margin
    last = len(starts) - 1
    return [(start, size, edge_window(size, overlap, margin, i > 0, i < last)) for i, start in enumerate(starts)]


def _settings(tile, overlap, batch, multiple, margin, align):
    """Validated tiling settings: (tile_h, tile_w, overlap_h, overlap_w, margin_h, margin_w, margin given, whole)."""
    if batch < 1:
        raise ValueError(f'batch must be >= 1, got {batch}')
    if multiple < 1:
        raise ValueError(f'multiple must be >= 1, got {multiple}')
    if not isinstance(align, int) or align < 1:
        raise ValueError(f'align must be an int >= 1, got {align!r}')
    tile_h, tile_w = _pair(tile, 'tile')
    overlap_h, overlap_w = _pair(overlap, 'overlap')
    if margin is None:
        margin_h, margin_w = overlap_h // 4, overlap_w // 4
    else:
        margin_h, margin_w = _pair(margin, 'margin')
    whole = tile_h <= 0 or tile_w <= 0
    if not whole and not (0 <= overlap_h < tile_h and 0 <= overlap_w < tile_w):
        raise ValueError(f'overlap {overlap} must be >= 0 and smaller than the tile {tile}')
    if not (0 <= 2 * margin_h <= overlap_h and 0 <= 2 * margin_w <= overlap_w):
        raise ValueError(f'margin {margin} must be >= 0 and at most half the overlap {overlap}')
    return tile_h, tile_w, overlap_h, overlap_w, margin_h, margin_w, margin is not None, whole


def _runner(fn, multiple, device, out_device):
    """``fn`` on a batch: input moved to ``device`` and padded to ``multiple``, output checked, cropped back
    and moved to ``out_device``."""

    def run(x):
        x_in = pad_to_multiple(x.to(device), multiple)
        out = fn(x_in)
        if not isinstance(out, torch.Tensor) or out.dim() != 4 or out.shape[0] != x.shape[0] \
                or out.shape[-2:] != x_in.shape[-2:]:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f'fn must map (B, C, h, w) to (B, C\', h, w): input {tuple(x_in.shape)}, output {got}')
        return out[..., :x.shape[-2], :x.shape[-1]].to(out_device)

    return run


def tiled_forward(fn, img, tile, overlap=0, batch=1, multiple=1, margin=None, device=None, progress=False,
                  align=1):
    """Apply ``fn`` to ``img`` tile by tile and blend the tiles (see the module docstring).

    Runs ``fn`` under ``torch.inference_mode()`` (the result is an ordinary tensor). Memory on ``device``
    is bounded by ``batch`` tiles; the full-size input and output stay on ``img``'s device (keep ``img``
    on the CPU for large photos); the blending accumulators hold one band of tile rows
    (:func:`tiled_bands`).

    Args:
        fn (callable): maps a (B, C, h, w) tensor to a (B, C', h, w) tensor (same h and w).
        img (Tensor): (N, C, H, W) input, N >= 1.
        tile (int | tuple[int, int]): tile size (height, width); ``<= 0`` processes the whole image in
            one call. Tiles larger than the image are clipped to it, so an image that fits in one tile
            is processed in one call.
        overlap (int | tuple[int, int]): overlap between neighbouring tiles, smaller than the tile.
        batch (int): number of tiles (or whole images) per call of ``fn``.
        multiple (int): reflect-pad every input of ``fn`` at the bottom/right so that its sides are
            multiples of this (outputs are cropped back); 1 disables padding.
        margin (int | tuple[int, int] | None): pixels discarded at each inner tile edge;
            ``None``: ``overlap // 4``. Needs ``2 * margin <= overlap``.
        device (torch.device | str | None): where ``fn`` runs; default ``img.device``.
        progress (bool): show a tqdm bar over tile batches (when there is more than one).
        align (int): when tiling, reflect-pad the image to a multiple of this and place tiles (sizes
            rounded down to multiples of it) at multiples of it (see the module docstring; the
            restoration library passes the network's size multiple, 8 for MPRNet). 1: no alignment.
            ``margin=None`` then means a quarter of the actual overlap.

    Returns:
        Tensor: (N, C', H, W) on ``img``'s device; tiles are blended in float32 (float64 when ``fn``
        returns float64).
    """
    if img.dim() != 4:
        raise ValueError(f'img must be (N, C, H, W), got shape {tuple(img.shape)}')
    tile_h, tile_w, *_, whole = _settings(tile, overlap, batch, multiple, margin, align)
    num, _, height, width = img.shape
    device = img.device if device is None else torch.device(device)
    if whole or (height <= tile_h and width <= tile_w):
        run = _runner(fn, multiple, device, img.device)
        with torch.inference_mode():
            result = torch.cat([run(img[i:i + batch]) for i in range(0, num, batch)])
        return result.clone()  # an ordinary tensor: inference tensors refuse later in-place updates
    output = None
    bands = tiled_bands(fn, lambda n, rows, cols: img[n][:, rows][:, :, cols], img.shape, tile, overlap, batch=batch,
                        multiple=multiple, margin=margin, device=device, progress=progress, align=align,
                        out_device=img.device)
    for n, top, bottom, band in bands:
        if output is None:  # an ordinary tensor (allocated outside inference mode)
            output = torch.empty((num, band.shape[0], height, width), dtype=band.dtype, device=img.device)
        output[n, :, top:bottom] = band
    return output


def tiled_bands(fn, read, shape, tile, overlap=0, batch=1, multiple=1, margin=None, device=None, progress=False,
                align=1, out_device='cpu'):
    """:func:`tiled_forward` for an image that is never held whole in float: tiles are read on demand
    and the blended result comes out in bands of finished rows, in order.

    The tiles, their order, their batches, the calls of ``fn`` and the blending arithmetic are those of
    :func:`tiled_forward` (same arguments), so the bands put together equal its result exactly. The
    weighted sums (``sum_t w_t * fn(x_t)`` and ``sum_t w_t``) are kept only for the rows that a tile not
    yet run can still reach: one tile height (plus the rows the tiles of one batch span) by the padded
    width, per image; rows above the next tile's first row are final, divided and handed out.

    Args:
        fn: as for :func:`tiled_forward`.
        read (callable): ``read(n, rows, cols)`` -> (C, h, w) tensor: image ``n``'s pixels at rows ``rows``
            and columns ``cols``, each a ``slice`` or a list of indices (a tile that reaches into the
            ``align`` padding gets the reflected / replicated source indices of
            :func:`~uniremoval.utils.padding.pad_to_multiple`), any dtype ``fn`` accepts.
        shape (tuple): (N, C, H, W) of the image (C is not used).
        tile, overlap, batch, multiple, margin, device, progress, align: as for :func:`tiled_forward`.
        out_device: where the accumulators and the bands are kept.

    Yields:
        (n, top, bottom, band): rows ``[top, bottom)`` of image ``n``'s result, band (C', bottom - top, W)
        on ``out_device`` (float32, float64 when ``fn`` returns float64; ``fn``'s output as is when the
        image is processed in one call). Every row of every image comes exactly once, top to bottom.
    """
    tile_h, tile_w, overlap_h, overlap_w, margin_h, margin_w, margin_given, whole = _settings(
        tile, overlap, batch, multiple, margin, align)
    num, _, height, width = shape
    device = torch.device(out_device) if device is None else torch.device(device)
    run = _runner(fn, multiple, device, torch.device(out_device))
    if whole or (height <= tile_h and width <= tile_w):
        everything = slice(0, height), slice(0, width)
        for first in range(0, num, batch):
            with torch.inference_mode():
                outputs = run(torch.stack([read(n, *everything) for n in range(first, min(num, first + batch))]))
            for i, out in enumerate(outputs):
                yield first + i, 0, height, out
        return
    rows = _grid(height, tile_h, overlap_h, margin_h if margin_given else None, align)
    cols = _grid(width, tile_w, overlap_w, margin_w if margin_given else None, align)
    padded_w = cols[-1][0] + cols[-1][1]
    # pad_to_multiple's choice, for the whole padded image: reflect unless a side is too short for it
    replicate = not (rows[-1][0] + rows[-1][1] - height < height and padded_w - width < width)
    col_index = [_source_index(x, x + w, width, replicate) for x, w, _ in cols]
    tiles = [(n, row, col) for n in range(num) for row in rows for col in range(len(cols))]
    bands, acc_dtype = {}, None  # n -> [first row held, weighted output sum, weight sum]
    batches = range(0, len(tiles), batch)
    for first in tqdm(batches, desc='tiles', unit='batch', leave=False, disable=not progress or len(batches) <= 1):
        group = tiles[first:first + batch]
        with torch.inference_mode():
            outputs = run(torch.stack([read(n, _source_index(y, y + h, height, replicate), col_index[c])
                                       for n, (y, h, _), c in group]))
            if acc_dtype is None:  # fixed by the first batch, as the whole-size sums used to be
                acc_dtype = torch.float64 if outputs.dtype == torch.float64 else torch.float32
            for out, (n, (y, h, wy), c) in zip(outputs, group):
                x, w, wx = cols[c]
                if n not in bands:
                    bands[n] = [y, None, None]
                top = bands[n][0]
                _hold_rows(bands[n], y + h - top, out.shape[0], padded_w, acc_dtype, out_device)
                window = (wy[:, None] * wx[None, :]).to(device=out_device, dtype=acc_dtype)
                bands[n][1][:, y - top:y - top + h, x:x + w] += out.to(acc_dtype) * window
                bands[n][2][:, y - top:y - top + h, x:x + w] += window
            finished = []
            rest = tiles[first + batch:]
            for n in sorted(bands):
                # rows above the next tile of image n are final (all of them once its last tile is in)
                nxt = next((row[0] for m, row, _ in rest[:1] if m == n), None)
                done = min(nxt if nxt is not None else height, height)
                finished += _release_rows(n, bands[n], done, width)
                if nxt is None:
                    del bands[n]
        yield from finished


def _grid(length, tile, overlap, margin, align):
    """[(start, size, window)] of one axis, on the image padded to a multiple of ``align``."""
    if align == 1:
        return _axis_tiles(length, tile, overlap, overlap // 4 if margin is None else margin)
    length = length + (-length % align)
    tile = max(align, min(tile, length) // align * align)
    return _axis_tiles(length, tile, min(overlap, tile - 1), margin, align)


def _source_index(start, stop, length, replicate):
    """Indices into an axis of ``length`` pixels of positions ``[start, stop)`` of that axis padded at its
    end as :func:`~uniremoval.utils.padding.pad_to_multiple` pads it (reflect: ``length - 1 + k`` reads
    ``length - 1 - k``; or replicate): a ``slice`` when no position lies in the padding."""
    if stop <= length:
        return slice(start, stop)
    return [i if i < length else (length - 1 if replicate else 2 * (length - 1) - i) for i in range(start, stop)]


def _hold_rows(state, rows, channels, width, dtype, device):
    """Make the accumulators of ``state`` ([first row, output sum, weight sum]) hold at least ``rows`` rows."""
    held = 0 if state[1] is None else state[1].shape[1]
    if rows <= held:
        return
    output = torch.zeros((channels, rows, width), dtype=dtype, device=device)
    weight = torch.zeros((1, rows, width), dtype=dtype, device=device)
    if held:
        output[:, :held], weight[:, :held] = state[1], state[2]
    state[1], state[2] = output, weight


def _release_rows(n, state, done, width):
    """The finished rows ``[state[0], done)`` of image ``n`` as a list of one (n, top, bottom, band), or none;
    the accumulators move up so that they start at ``done``."""
    top, output, weight = state
    if done <= top or output is None:
        return []
    count = done - top
    band = output[:, :count, :width] / weight[:, :count, :width]
    keep = output.shape[1] - count
    if keep > 0:
        output[:, :keep] = output[:, count:].clone()
        weight[:, :keep] = weight[:, count:].clone()
    output[:, max(keep, 0):] = 0
    weight[:, max(keep, 0):] = 0
    state[0] = done
    return [(n, top, done, band)]
