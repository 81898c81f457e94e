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


def tiled_forward(fn, img, tile, overlap=0, batch=1, multiple=1, margin=None, device=None, progress=False,
                  align=1):
    """Apply ``fn`` to ``img`` tile by tile and blend the tiles (see the module docstring).

    Runs under ``torch.inference_mode()`` (the result is an ordinary tensor). Memory on ``device`` is
    bounded by ``batch`` tiles; the full-size input, output and weight sum stay on ``img``'s device
    (keep ``img`` on the CPU for large photos).

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
    if batch < 1:
        raise ValueError(f'batch must be >= 1, got {batch}')
    if multiple < 1:
        raise ValueError(f'multiple must be >= 1, got {multiple}')
    if not isinstance(align, int) or align < 1:
        raise ValueError(f'align must be an int >= 1, got {align!r}')
    tile_h, tile_w = _pair(tile, 'tile')
    margin_given = margin is not None
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
    num, _, height, width = img.shape
    device = img.device if device is None else torch.device(device)

    def run(x):
        x_in = pad_to_multiple(x.to(device), multiple)
        out = fn(x_in)
        if not isinstance(out, torch.Tensor) or out.dim() != 4 or out.shape[0] != x.shape[0] \
                or out.shape[-2:] != x_in.shape[-2:]:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f'fn must map (B, C, h, w) to (B, C\', h, w): input {tuple(x_in.shape)}, output {got}')
        return out[..., :x.shape[-2], :x.shape[-1]].to(img.device)

    with torch.inference_mode():
        if whole or (height <= tile_h and width <= tile_w):
            result = torch.cat([run(img[i:i + batch]) for i in range(0, num, batch)])
        else:
            rows = _grid(height, tile_h, overlap_h, margin_h if margin_given else None, align)
            cols = _grid(width, tile_w, overlap_w, margin_w if margin_given else None, align)
            padded = pad_to_multiple(img, align) if align > 1 else img
            result = _blend(run, padded, rows, cols, batch, progress)[..., :height, :width]
    return result.clone()  # an ordinary tensor: inference tensors refuse later in-place updates


def _grid(length, tile, overlap, margin, align):
    """[(start, size, window)] of one axis, on the image padded to a multiple of ``align``."""
    if align == 1:
        return _axis_tiles(length, tile, overlap, overlap // 4 if margin is None else margin)
    length = length + (-length % align)
    tile = max(align, min(tile, length) // align * align)
    return _axis_tiles(length, tile, min(overlap, tile - 1), margin, align)


def _blend(run, img, rows, cols, batch, progress):
    """Run every tile of the grid ``rows`` x ``cols`` through ``run``, ``batch`` at a time, and blend."""
    num, (height, width) = img.shape[0], img.shape[-2:]
    tiles = [(n, row, col) for n in range(num) for row in rows for col in cols]
    output = weight_sum = None
    batches = range(0, len(tiles), batch)
    for first in tqdm(batches, desc='tiles', unit='batch', leave=False, disable=not progress or len(batches) <= 1):
        group = tiles[first:first + batch]
        inputs = torch.stack([img[n, :, y:y + h, x:x + w] for n, (y, h, _), (x, w, _) in group])
        outputs = run(inputs)
        if output is None:
            acc_dtype = torch.float64 if outputs.dtype == torch.float64 else torch.float32
            output = torch.zeros((num, outputs.shape[1], height, width), dtype=acc_dtype, device=img.device)
            weight_sum = torch.zeros((num, 1, height, width), dtype=acc_dtype, device=img.device)
        for out, (n, (y, h, wy), (x, w, wx)) in zip(outputs, group):
            window = (wy[:, None] * wx[None, :]).to(device=img.device, dtype=output.dtype)
            output[n, :, y:y + h, x:x + w] += out.to(output.dtype) * window
            weight_sum[n, :, y:y + h, x:x + w] += window
    return output / weight_sum
