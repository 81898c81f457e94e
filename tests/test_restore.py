"""Tiled inference (uniremoval.utils.tiling), the restoration library (uniremoval.restoration) and the
uniremoval-restore command (uniremoval.commands.restore)."""
import os
import subprocess
import sys
from os import path as osp

import cv2
import numpy as np
import pytest
import torch
import yaml
from torch import nn

import uniremoval  # noqa: F401  (compat shim + registration)
from basicsr.archs import build_network
from uniremoval.commands.restore import main
from uniremoval.restoration import SetupError, load_network, restore_image
from uniremoval.utils.tiling import edge_window, tiled_forward

TINY_MPRNET = {'type': 'MPRNet', 'n_feat': 8, 'scale_unetfeats': 4, 'scale_orsnetfeats': 4, 'num_cab': 2}


def tiny_mprnet(seed=0):
    torch.manual_seed(seed)
    return build_network(dict(TINY_MPRNET)).eval()


def local_net(depth=3):
    """``depth`` stacked 3x3 convolutions: each output pixel sees ``depth`` pixels around it."""
    torch.manual_seed(0)
    layers = []
    for i in range(depth):
        layers += [nn.Conv2d(3 if i == 0 else 8, 3 if i == depth - 1 else 8, 3, padding=1), nn.ReLU()]
    return nn.Sequential(*layers[:-1]).eval()


class CountingFn:
    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, x):
        self.calls += 1
        return self.fn(x)


# ------------------------------------------------------------------------------------------
# tiled_forward
# ------------------------------------------------------------------------------------------
def test_identity_is_reproduced_for_every_tiling():
    """Every pixel gets a positive total weight and the weights are normalised, for sizes below,
    at and above the tile and overlaps with and without a margin."""
    torch.manual_seed(0)
    for height, width in ((1, 1), (5, 7), (17, 9), (37, 50)):
        x = torch.rand(2, 3, height, width)
        for tile in (8, 16):
            for overlap in (0, 1, 4, 7):
                out = tiled_forward(lambda t: t, x, tile, overlap, batch=3)
                assert out.shape == x.shape
                assert (out - x).abs().max() < 1e-6, (height, width, tile, overlap)


def test_edge_windows_are_a_partition_of_unity():
    """Regular neighbours: the ramps of two tiles sum to 1 across the overlap; the margin is 0."""
    tile, overlap, margin = 24, 16, 4
    left = edge_window(tile, overlap, margin, inner_start=False, inner_end=True)
    right = edge_window(tile, overlap, margin, inner_start=True, inner_end=False)
    assert torch.allclose(left[-overlap:] + right[:overlap], torch.ones(overlap, dtype=torch.float64))
    assert (left[-margin:] == 0).all() and (right[:margin] == 0).all()
    assert (left[:tile - overlap] == 1).all()


@pytest.mark.parametrize('tile, overlap, batch', [(24, 16, 1), (24, 16, 5), (16, 12, 4), ((20, 24), (12, 16), 2)])
def test_tiled_equals_untiled_for_a_local_operator(tile, overlap, batch):
    """A network that sees 3 pixels around each output pixel, tiles whose inner margin
    (overlap // 4 >= 3) discards exactly what it cannot see: tiled == untiled."""
    net = local_net(depth=3)
    x = torch.rand(1, 3, 37, 50)
    with torch.no_grad():
        full = net(x)
    fn = CountingFn(net)
    out = tiled_forward(fn, x, tile, overlap, batch=batch)
    assert fn.calls > 1
    assert (out - full).abs().max() < 1e-4


def test_a_margin_smaller_than_the_receptive_field_is_not_exact():
    """The equality above really depends on the margin (sanity check of the test itself)."""
    net = local_net(depth=3)
    x = torch.rand(1, 3, 37, 50)
    with torch.no_grad():
        full = net(x)
    assert (tiled_forward(net, x, 24, 16, margin=0) - full).abs().max() > 1e-4


@pytest.mark.parametrize('tile', [0, 30, (24, 40)])
def test_one_tile_covering_the_image_is_one_exact_call(tile):
    net = tiny_mprnet()
    x = torch.rand(1, 3, 21, 30)
    with torch.no_grad():
        full = net(x)[0]
    fn = CountingFn(lambda t: net(t)[0])
    out = tiled_forward(fn, x, tile, overlap=16)
    assert fn.calls == 1
    assert torch.equal(out, full)


def test_mprnet_tiled_has_the_image_size_and_stays_close():
    """MPRNet is not local (global pooling in channel attention): tiled differs from untiled,
    but stays close and keeps the size."""
    net = tiny_mprnet()
    x = torch.rand(1, 3, 40, 56)
    with torch.no_grad():
        full = net(x)[0]
    fn = CountingFn(lambda t: net(t)[0])
    out = tiled_forward(fn, x, 32, 16, batch=4)
    assert fn.calls == 2  # 2 x 3 tiles in batches of 4
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert (out - full).abs().mean() < 0.1


def test_multiple_pads_every_network_input():
    def double(t):
        assert t.shape[-2] % 8 == 0 and t.shape[-1] % 8 == 0, t.shape
        return 2 * t

    x = torch.rand(1, 3, 37, 50)
    for tile in (0, 20):
        out = tiled_forward(double, x, tile, overlap=8, multiple=8)
        assert out.shape == x.shape and (out - 2 * x).abs().max() < 1e-6


def test_invalid_tiling_arguments():
    x = torch.rand(1, 3, 20, 20)
    with pytest.raises(ValueError, match='overlap'):
        tiled_forward(lambda t: t, x, 8, 8)
    with pytest.raises(ValueError, match='margin'):
        tiled_forward(lambda t: t, x, 8, 4, margin=3)
    with pytest.raises(ValueError, match='fn must map'):
        tiled_forward(lambda t: t[..., 1:, :], x, 8, 4)


# ------------------------------------------------------------------------------------------
# restore_image
# ------------------------------------------------------------------------------------------
class Identity(nn.Module):
    def forward(self, x):
        return [x.clone()]


class RedEverywhere(nn.Module):
    """Copies the network's first (red, in RGB order) channel into all three."""

    def forward(self, x):
        return x[:, :1].expand_as(x).clone()


def test_restore_image_keeps_16_bit_values_exactly():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 65536, size=(37, 50, 3), dtype=np.uint16)
    out = restore_image(Identity(), img, tile=16, overlap=8)
    assert out.dtype == np.uint16 and np.array_equal(out, img)


def test_restore_image_channel_order_grey_and_alpha():
    rng = np.random.default_rng(1)
    bgra = rng.integers(0, 256, size=(21, 30, 4), dtype=np.uint8)
    out = restore_image(RedEverywhere(), bgra)
    assert np.array_equal(out[..., 3], bgra[..., 3])  # alpha untouched
    assert all(np.array_equal(out[..., c], bgra[..., 2]) for c in range(3))  # BGR in, RGB to the network

    grey = rng.integers(0, 256, size=(21, 30), dtype=np.uint8)
    out = restore_image(Identity(), grey, tile=16, overlap=8)
    assert out.shape == grey.shape and np.array_equal(out, grey)
    out = restore_image(Identity(), grey[..., None])
    assert out.shape == (21, 30, 1)


def test_restore_image_maps_the_pixel_range():
    seen = []

    class Recorder(nn.Module):
        def forward(self, x):
            seen.append((x.min().item(), x.max().item()))
            return [x]

    img = np.array([[[0, 128, 255]]], dtype=np.uint8).repeat(4, axis=0).repeat(4, axis=1)
    out = restore_image(Recorder(), img, pixel_range=(-1, 1))
    assert np.array_equal(out, img) and seen == [(-1.0, 1.0)]


# ------------------------------------------------------------------------------------------
# Checkpoints
# ------------------------------------------------------------------------------------------
def _same_weights(net, state):
    return all(torch.equal(v, state[k]) for k, v in net.state_dict().items())


def test_load_official_and_basicsr_checkpoints(tmp_path):
    state = tiny_mprnet(seed=1).state_dict()
    other = tiny_mprnet(seed=2).state_dict()

    official = str(tmp_path / 'official.pth')
    torch.save({'epoch': 3, 'state_dict': {'module.' + k: v for k, v in state.items()}}, official)
    assert _same_weights(load_network(official, TINY_MPRNET), state)

    basicsr_ckpt = str(tmp_path / 'basicsr.pth')
    torch.save({'params': other, 'params_ema': state}, basicsr_ckpt)
    assert _same_weights(load_network(basicsr_ckpt, TINY_MPRNET), state)  # params_ema preferred
    assert _same_weights(load_network(basicsr_ckpt, TINY_MPRNET, param_key='params'), other)

    with pytest.raises(SetupError, match='does not fit'):  # strict: the default MPRNet is bigger
        load_network(official)


# ------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def tiny_model(tmp_path_factory):
    """(checkpoint with params_ema, option file with the tiny network_g)."""
    root = tmp_path_factory.mktemp('restore_model')
    ckpt = str(root / 'net_g.pth')
    torch.save({'params_ema': tiny_mprnet().state_dict()}, ckpt)
    opt = str(root / 'tiny.yml')
    with open(opt, 'w') as f:
        yaml.safe_dump({'name': 'tiny', 'network_g': dict(TINY_MPRNET), 'pixel_range': [0, 1]}, f)
    return ckpt, opt


def _write(path, img):
    assert cv2.imwrite(str(path), img)


def test_cli_folder_with_a_corrupt_file(tiny_model, tmp_path):
    """Console script on a folder: the corrupt file is reported and skipped, the others are
    restored with their bit depth, channels and (odd) sizes; exit status 1."""
    ckpt, opt = tiny_model
    rng = np.random.default_rng(0)
    src, dst = tmp_path / 'in', tmp_path / 'out'
    src.mkdir()
    _write(src / 'colour.png', rng.integers(0, 256, (37, 50, 3), dtype=np.uint8))
    _write(src / 'deep.png', rng.integers(0, 65536, (33, 40, 3), dtype=np.uint16))
    _write(src / 'grey.png', rng.integers(0, 256, (29, 31), dtype=np.uint8))
    (src / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n not really a png')
    (src / 'notes.txt').write_text('not an image')

    exe = osp.join(osp.dirname(sys.executable), 'uniremoval-restore')
    assert osp.exists(exe), f'{exe} is not installed: run pip install -e .'
    args = ['-i', str(src), '-o', str(dst), '-w', ckpt, '--opt', opt, '--tile', '32', '--tile-overlap', '8',
            '--tile-batch', '4', '--quiet']
    proc = subprocess.run([exe] + args, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert 'broken.png' in proc.stderr and 'cannot decode' in proc.stderr
    assert 'restored 3, failed 1: broken.png' in proc.stdout

    assert sorted(os.listdir(dst)) == ['colour.png', 'deep.png', 'grey.png']  # no temporary files left
    expected = {'colour.png': ((37, 50, 3), np.uint8), 'deep.png': ((33, 40, 3), np.uint16),
                'grey.png': ((29, 31), np.uint8)}
    for name, (shape, dtype) in expected.items():
        out = cv2.imread(str(dst / name), cv2.IMREAD_UNCHANGED)
        assert out.shape == shape and out.dtype == dtype, name


def test_cli_single_file_to_a_file_path_and_official_checkpoint(tiny_model, tmp_path):
    """JPEG in, PNG out at the given path; an official-style checkpoint; tiled == restore_image."""
    _, opt = tiny_model
    state = tiny_mprnet(seed=3).state_dict()
    ckpt = str(tmp_path / 'official.pth')
    torch.save({'state_dict': {'module.' + k: v for k, v in state.items()}}, ckpt)
    rng = np.random.default_rng(1)
    _write(tmp_path / 'photo.jpg', rng.integers(0, 256, (30, 44, 3), dtype=np.uint8))

    out_path = tmp_path / 'result' / 'restored.png'
    args = ['-i', str(tmp_path / 'photo.jpg'), '-o', str(out_path), '-w', ckpt, '--opt', opt,
            '--param-key', 'state_dict', '--tile', '24', '--tile-overlap', '8', '--tile-batch', '3', '-q']
    assert main(args) == 0
    out = cv2.imread(str(out_path), cv2.IMREAD_UNCHANGED)
    img = cv2.imread(str(tmp_path / 'photo.jpg'), cv2.IMREAD_UNCHANGED)
    expected = restore_image(load_network(ckpt, TINY_MPRNET, 'state_dict'), img, tile=24, overlap=8, batch=3)
    assert out.shape == img.shape and np.array_equal(out, expected)


def test_cli_setup_errors_exit_2(tiny_model, tmp_path, capsys):
    ckpt, opt = tiny_model
    _write(tmp_path / 'a.png', np.zeros((8, 8, 3), np.uint8))
    out = str(tmp_path / 'out')
    assert main(['-i', str(tmp_path / 'a.png'), '-o', out, '-w', ckpt, '--opt', opt, '--tile', '16',
                 '--tile-overlap', '16']) == 2
    assert main(['-i', str(tmp_path / 'missing'), '-o', out, '-w', ckpt, '--opt', opt]) == 2
    assert main(['-i', str(tmp_path / 'a.png'), '-o', out, '-w', ckpt]) == 2  # default MPRNet: mismatch
    assert 'does not fit' in capsys.readouterr().err
    assert main(['-i', str(tmp_path), '-o', str(tmp_path), '-w', ckpt, '--opt', opt]) == 1  # no overwrite
    assert np.array_equal(cv2.imread(str(tmp_path / 'a.png')), np.zeros((8, 8, 3), np.uint8))


# ------------------------------------------------------------------------------------------
# Output folder: checked before anything is processed; names stay inside it
# ------------------------------------------------------------------------------------------
def test_cli_unwritable_output_folder_exits_2_before_processing(tiny_model, tmp_path, capsys, monkeypatch):
    """A read-only output folder (simulated for root, who may write anywhere), or one that cannot be
    created, fails with exit 2 naming it, before the network is loaded or any image is restored."""
    ckpt, opt = tiny_model
    src = tmp_path / 'in'
    src.mkdir()
    for i in range(3):
        _write(src / f'{i}.png', np.zeros((16, 16, 3), np.uint8))
    calls = []
    monkeypatch.setattr('uniremoval.commands.restore.restore_image', lambda *a, **k: calls.append(a))
    monkeypatch.setattr('uniremoval.commands.restore.load_network', lambda *a, **k: calls.append(a))

    read_only = tmp_path / 'read_only'
    read_only.mkdir()
    read_only.chmod(0o555)
    if os.geteuid() == 0:  # permissions do not stop root: make creating files there fail as EACCES would
        import tempfile
        real_mkstemp = tempfile.mkstemp

        def refuse(*args, dir=None, **kwargs):
            if dir is not None and osp.abspath(dir) == str(read_only):
                raise PermissionError(13, 'Permission denied', dir)
            return real_mkstemp(*args, dir=dir, **kwargs)

        monkeypatch.setattr(tempfile, 'mkstemp', refuse)
    blocker = tmp_path / 'a_file'
    blocker.write_text('not a folder')
    for output in (read_only, blocker / 'sub'):
        assert main(['-i', str(src), '-o', str(output), '-w', ckpt, '--opt', opt, '-q']) == 2
        err = capsys.readouterr().err
        assert f'output folder {output}' in err and 'not writable' in err
    assert calls == [] and os.listdir(read_only) == []


def test_cli_output_names_stay_in_the_output_folder(tiny_model, tmp_path, capsys):
    ckpt, opt = tiny_model
    src, dst = tmp_path / 'in', tmp_path / 'deep' / 'out'
    src.mkdir()
    _write(src / '..png', np.zeros((16, 16, 3), np.uint8))  # stem '.', hidden: skipped by list_images
    _write(src / 'a..b.png', np.full((16, 16, 3), 7, np.uint8))
    for suffix in ('/../../escaped', '_x/../../escaped', os.sep + 'y'):
        assert main(['-i', str(src), '-o', str(dst), '-w', ckpt, '--opt', opt, '--suffix', suffix, '-q']) == 2
        assert 'must not contain a path separator' in capsys.readouterr().err
    assert not osp.exists(tmp_path / 'escaped.png') and not osp.exists(dst)
    assert main(['-i', str(src), '-o', str(dst), '-w', ckpt, '--opt', opt, '--suffix', '..', '-q']) == 0
    assert os.listdir(dst) == ['a..b...png']
    assert sorted(os.listdir(tmp_path)) == ['deep', 'in']
