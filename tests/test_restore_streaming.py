"""Streaming restoration (issue [12] item 4): ``restore_image`` reads tiles from the caller's 8/16-bit
array and writes finished bands of rows into a result of the same dtype, so its memory grows with
the tile, not with the image, and its result equals the whole-image float path bit for bit."""
import tracemalloc

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import uniremoval  # noqa: F401  (compat shim + registration)
from basicsr.archs import build_network
from uniremoval.restoration import _from_unit_float, _to_unit_float, network_function, restore_image
from uniremoval.utils.padding import pad_to_multiple
from uniremoval.utils.tiling import _grid, tiled_bands, tiled_forward
from conftest import TINY_MPRNET


def reference_blend(fn, img, tile, overlap, batch, multiple, align):
    """The whole-image path as it was before streaming: the padded image and whole-size float sums."""
    height, width = img.shape[-2:]

    def run(x):
        return fn(pad_to_multiple(x, multiple))[..., :x.shape[-2], :x.shape[-1]]

    if tile <= 0 or (height <= tile and width <= tile):
        return torch.cat([run(img[i:i + batch]) for i in range(0, img.shape[0], batch)])
    rows, cols = _grid(height, tile, overlap, None, align), _grid(width, tile, overlap, None, align)
    padded = pad_to_multiple(img, align) if align > 1 else img
    tiles = [(n, row, col) for n in range(img.shape[0]) for row in rows for col in cols]
    output = torch.zeros((img.shape[0], 3) + padded.shape[-2:])
    weight = torch.zeros((img.shape[0], 1) + padded.shape[-2:])
    for first in range(0, len(tiles), batch):
        group = tiles[first:first + batch]
        outs = run(torch.stack([padded[n, :, y:y + h, x:x + w] for n, (y, h, _), (x, w, _) in group]))
        for out, (n, (y, h, wy), (x, w, wx)) in zip(outs, group):
            window = (wy[:, None] * wx[None, :]).float()
            output[n, :, y:y + h, x:x + w] += out * window
            weight[n, :, y:y + h, x:x + w] += window
    return (output / weight)[..., :height, :width]


def reference_restore(net, img, tile, overlap=32, batch=1, multiple=1, bgr=True, align=1, blend=reference_blend):
    """restore_image as it was before streaming: the whole image in float32, converted back at the end."""
    colour, alpha = (img[..., None], None) if img.ndim == 2 else \
        (img, None) if img.shape[2] in (1, 3) else (img[..., :-1], img[..., -1:])
    grey = colour.shape[2] == 1
    x = _to_unit_float(colour)
    x = np.repeat(x, 3, axis=2) if grey else (x[..., ::-1] if bgr else x)
    tensor = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]
    with torch.inference_mode():
        out = blend(network_function(net), tensor, tile, overlap, batch, multiple, align)
    out = out[0].float().numpy().transpose(1, 2, 0)
    out = out.mean(axis=2, keepdims=True) if grey else (out[..., ::-1] if bgr else out)
    out = _from_unit_float(out, colour.dtype)
    if alpha is not None:
        out = np.concatenate([out, alpha], axis=2)
    elif img.ndim == 2:
        out = out[..., 0]
    return np.ascontiguousarray(out)


def via_tiled_forward(fn, tensor, tile, overlap, batch, multiple, align):
    return tiled_forward(fn, tensor, tile, overlap, batch=batch, multiple=multiple, align=align)


def local_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1), nn.Sigmoid()).eval()


def tiny_mprnet():
    torch.manual_seed(0)
    return build_network(dict(TINY_MPRNET)).eval()


def image(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    if dtype == np.uint8:
        return rng.integers(0, 256, shape, dtype=np.uint8)
    if dtype == np.uint16:
        return rng.integers(0, 65536, shape, dtype=np.uint16)
    return rng.random(shape).astype(dtype)


CASES = {  # name: (image shape, dtype, restore_image keywords)
    'whole image (tile 0)': ((37, 50, 3), np.uint8, dict(tile=0)),
    'one tile': ((37, 50, 3), np.uint8, dict(tile=64, overlap=8)),
    'many tiles': ((45, 61, 3), np.uint8, dict(tile=16, overlap=6)),
    'no overlap': ((45, 61, 3), np.uint8, dict(tile=16, overlap=0)),
    'overlap with margin': ((45, 61, 3), np.uint8, dict(tile=24, overlap=12)),
    'batch spanning tile rows': ((45, 61, 3), np.uint8, dict(tile=16, overlap=6, batch=5)),
    'align 8 (MPRNet), odd size': ((45, 61, 3), np.uint8, dict(tile=24, overlap=8, align=8, batch=2)),
    'align 8, side shorter than the padding': ((5, 61, 3), np.uint8, dict(tile=16, overlap=4, align=8)),
    'multiple 8': ((45, 61, 3), np.uint8, dict(tile=20, overlap=6, multiple=8)),
    'grey (H, W)': ((45, 61), np.uint8, dict(tile=16, overlap=6)),
    'grey (H, W, 1)': ((45, 61, 1), np.uint8, dict(tile=16, overlap=6)),
    'grey + alpha': ((45, 61, 2), np.uint8, dict(tile=16, overlap=6)),
    'BGRA': ((45, 61, 4), np.uint8, dict(tile=16, overlap=6)),
    '16-bit': ((45, 61, 3), np.uint16, dict(tile=16, overlap=6)),
    '16-bit BGRA, align 8': ((45, 61, 4), np.uint16, dict(tile=24, overlap=8, align=8)),
    'float32': ((45, 61, 3), np.float32, dict(tile=16, overlap=6)),
    'float64 grey': ((45, 61), np.float64, dict(tile=16, overlap=6)),
    'RGB input (bgr=False)': ((45, 61, 3), np.uint8, dict(tile=16, overlap=6, bgr=False)),
    'progress bar': ((45, 61, 3), np.uint8, dict(tile=16, overlap=6, progress=True)),
}


@pytest.mark.parametrize('name', list(CASES))
def test_streaming_equals_the_whole_image_path_bit_for_bit(name):
    """Bit-exact (np.array_equal) for every output dtype, floats included: the same tiles, batches and
    float32 operations in the same order, only on a band instead of the whole image."""
    shape, dtype, kw = CASES[name]
    img = image(shape, dtype)
    net = local_net()
    out = restore_image(net, img, **kw)
    ref_kw = {k: v for k, v in kw.items() if k != 'progress'}
    expected = reference_restore(net, img, **ref_kw)
    assert out.dtype == img.dtype and out.shape == img.shape and out.flags.c_contiguous
    assert np.array_equal(out, expected), name
    assert np.array_equal(out, reference_restore(net, img, blend=via_tiled_forward, **ref_kw)), name
    if shape[-1] in (2, 4) and len(shape) == 3:
        assert np.array_equal(out[..., -1], img[..., -1])


def test_mprnet_with_align_and_batches_equals_the_whole_image_path():
    net, img = tiny_mprnet(), image((41, 70, 3), np.uint8, seed=1)
    kw = dict(tile=24, overlap=8, align=8, batch=3)
    assert np.array_equal(restore_image(net, img, **kw), reference_restore(net, img, **kw))


def test_bands_cover_every_row_once_in_order_for_several_images():
    """tiled_bands on N=3 images with batches spanning images: rows come top to bottom, each once,
    and put together equal the whole-size blend exactly."""
    torch.manual_seed(0)
    x = torch.rand(3, 3, 29, 40)
    fn = network_function(local_net())
    bands = list(tiled_bands(fn, lambda n, r, c: x[n][:, r][:, :, c], x.shape, 12, 4, batch=7, align=8))
    for n in range(3):
        spans = [(top, bottom) for m, top, bottom, _ in bands if m == n]
        assert spans[0][0] == 0 and spans[-1][1] == 29 and all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    got = torch.stack([torch.cat([b for m, _, _, b in bands if m == n], dim=1) for n in range(3)])
    with torch.inference_mode():
        assert torch.equal(got, reference_blend(fn, x, 12, 4, 7, 1, 8))


def test_a_non_finite_tile_output_is_reported():
    img, calls = image((45, 61, 3), np.uint8), []

    def poisoned(x):  # the third tile comes back with a NaN
        calls.append(1)
        return torch.where(torch.tensor(len(calls) == 3), x * float('nan'), x)

    with pytest.raises(ValueError, match='NaN or inf'):
        restore_image(poisoned, img, tile=16, overlap=6)
    assert len(calls) == 3  # stopped at the tile that failed


class LargestTensor(TorchDispatchMode):
    """Bytes of the largest tensor any torch operation creates while active."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in (out if isinstance(out, (tuple, list)) else [out]):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel() * t.element_size())
        return out


def test_memory_grows_with_the_tile_rows_not_with_the_image():
    """2048x2048 uint8 BGR, tile 128: whole-image float32 copies would be 48 MiB each (the old path
    made several, in numpy and in torch). Streaming: no torch tensor larger than the float sums of a
    band of two tile heights by the width, and numpy's peak beyond the uint8 result below a few bands."""
    height, width, tile = 2048, 2048, 128
    img = image((height, width, 3), np.uint8)
    whole_float = height * width * 3 * 4
    band_float = 2 * tile * width * 3 * 4
    restore_image(lambda x: x * 0.5 + 0.25, img[:64, :64], tile=32, overlap=8)  # lazy one-time allocations
    largest = LargestTensor()
    tracemalloc.start()
    try:
        with largest:
            out = restore_image(lambda x: x * 0.5 + 0.25, img, tile=tile, overlap=32)
        _, numpy_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert np.array_equal(out, reference_restore(lambda x: x * 0.5 + 0.25, img, tile=tile, overlap=32))
    assert largest.largest <= band_float, (largest.largest, band_float, whole_float)
    assert numpy_peak - out.nbytes <= 2 * band_float, (numpy_peak, out.nbytes, band_float, whole_float)
    assert 2 * band_float < whole_float / 2  # the bounds are far below one whole-image float copy
