"""Tiled against whole-image restoration with a TRAINED network (the demo's shipped rain teacher, an
MPRNet) on a real photograph, and the tile alignment option of uniremoval.utils.tiling.

MPRNet processes its input as four quarters (stage 1) and two halves (stage 2) with zero padding at
the split lines, so its output has seams along the lines that split *its input*: the whole image's
centre lines untiled, every tile's centre lines tiled. Tiling therefore cannot reproduce the
untiled output near those lines; the overlap blending (margin and ramps) handles the tile edges.
Measured here (256x256, tiles of 128 with overlap 32): differences are concentrated within a few
pixels of those lines, are small elsewhere, and the PSNR against the clean image is unchanged
within 0.1 dB (0.13 dB with tiles of 96 on 192x192: smaller tiles, more split lines; bench/bench_tiling.py
measures a 1000x1000 image and 4K memory)."""
from os import path as osp

import numpy as np
import pytest
import torch
from torch import nn

import uniremoval  # noqa: F401  (registration)
from uniremoval.demo.shipped import CHECKPOINT_DIR, checkpoint_file
from uniremoval.options import load_option_file
from uniremoval.restoration import load_network, network_function
from uniremoval.utils.tiling import tile_starts, tiled_forward

SIZE, TILE, OVERLAP = 256, 128, 32


def psnr(a, b):
    return (-10 * torch.log10(((a.clamp(0, 1) - b.clamp(0, 1))**2).mean())).item()


@pytest.fixture(scope='module')
def rain_case():
    from uniremoval.data.degradations import degrade
    from uniremoval.demo.data import load_photos
    photo = load_photos(['rocket'])[0]['rocket'][:SIZE, 100:100 + SIZE]
    gt = np.ascontiguousarray(photo[..., ::-1].astype(np.float32) / 255)
    lq = np.clip(degrade(gt, 'rain', 0), 0, 1).astype(np.float32)
    opt = load_option_file(osp.join(CHECKPOINT_DIR, 'pretrain_teacher_rain.yml'))
    net = load_network(checkpoint_file('rain'), opt['network_g'])

    def tensor(a):
        return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))[None]

    fn = network_function(net)
    lq_t = tensor(lq)
    return {'gt': tensor(gt), 'lq': lq_t, 'untiled': tiled_forward(fn, lq_t, 0).clamp(0, 1),
            'tiled': tiled_forward(fn, lq_t, TILE, OVERLAP).clamp(0, 1)}


def distance_to_lines(length, lines):
    positions = torch.arange(length)
    return (positions[:, None] - torch.tensor(lines)[None]).abs().amin(1)


def test_trained_network_tiled_close_to_untiled(rain_case):
    untiled, tiled, gt = rain_case['untiled'], rain_case['tiled'], rain_case['gt']
    diff = (tiled - untiled).abs().amax(1)[0] * 255  # grey levels, worst channel
    assert diff.mean() < 1.5 and psnr(tiled, untiled) > 36
    assert abs(psnr(tiled, gt) - psnr(untiled, gt)) < 0.1
    assert psnr(untiled, gt) > psnr(rain_case['lq'], gt) + 5  # a trained network: it removes the rain

    # where the difference comes from: the split lines of the whole image and of each tile, tile edges
    starts = tile_starts(SIZE, TILE, OVERLAP)
    lines = sorted({SIZE // 2} | {s + TILE // 2 for s in starts} | {s for s in starts[1:]} |
                   {s + TILE for s in starts[:-1]})
    dist = distance_to_lines(SIZE, lines)
    far = torch.minimum(dist[:, None], dist[None, :]) >= 16
    assert far.sum() > 0.05 * SIZE * SIZE
    assert diff[far].max() < 3 and diff[far].mean() < 0.3
    assert diff[~far].max() > 5 * diff[far].max()


def test_aligned_tiles_are_multiples_and_never_padded_inside():
    """align=8 (MPRNet's size multiple): the image is padded to a multiple of 8 once, tiles are
    multiples of 8 placed at multiples of 8, so fn never sees a size it would pad; a local operator's
    tiled result still equals its untiled one, and the identity is reproduced for odd sizes."""
    shapes, starts_seen = [], []

    def recorder(t):
        shapes.append(tuple(t.shape[-2:]))
        return t

    torch.manual_seed(0)
    x = torch.rand(1, 3, 45, 61)
    out = tiled_forward(recorder, x, 24, 8, align=8, batch=2)
    assert torch.allclose(out, x, atol=1e-6)
    assert shapes and all(h % 8 == 0 and w % 8 == 0 for h, w in shapes)
    for length in (48, 64, 200):
        starts = tile_starts(length, 24, 10, align=8)
        starts_seen += starts
        assert starts[0] == 0 and starts[-1] == length - 24
        assert max(b - a for a, b in zip(starts, starts[1:])) <= 24 - 10  # at least the requested overlap
    assert all(s % 8 == 0 for s in starts_seen)

    torch.manual_seed(1)
    local = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1)).eval()
    with torch.no_grad():
        full = local(torch.nn.functional.pad(x, (0, 3, 0, 3), mode='reflect'))[..., :45, :61]
    tiled = tiled_forward(local, x, 24, 16, align=8)
    assert (tiled - full).abs().max() < 1e-5
    with pytest.raises(ValueError, match='align'):
        tiled_forward(recorder, x, 24, 8, align=0)
