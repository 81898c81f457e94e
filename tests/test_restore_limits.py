"""uniremoval-restore on inputs that must be refused per image (issue [12]): a header declaring more
pixels than --max-pixels, NaN / inf / out-of-range float pixels, a checkpoint with a NaN weight, and
engine outputs (PyTorch or ONNX Runtime) that break the contract (shape, channels, finiteness)."""
import resource
import struct
import subprocess
import sys
import zlib
from os import path as osp

import cv2
import numpy as np
import pytest
import torch
from torch import nn

import uniremoval  # noqa: F401  (compat shim + registration)
from basicsr.archs import build_network
from uniremoval.commands.restore import main
from uniremoval.restoration import restore_image
from conftest import TINY_MPRNET, write_tiny_model


@pytest.fixture(scope='module')
def tiny_model(tmp_path_factory):
    root = tmp_path_factory.mktemp('limits_model')
    return write_tiny_model(root, TINY_MPRNET)


def _chunk(kind, data):
    return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data) & 0xffffffff)


def bomb_png(path, width=30000, height=30000):
    """A valid-header RGB PNG declaring width x height with a tiny IDAT (a few rows of zeros)."""
    ihdr = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b'\0' * (3 * width + 1) * 4, 9)
    with open(path, 'wb') as f:
        f.write(b'\x89PNG\r\n\x1a\n' + _chunk(b'IHDR', ihdr) + _chunk(b'IDAT', idat) + _chunk(b'IEND', b''))


def _limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))


def test_a_header_over_the_pixel_budget_is_refused_before_decoding(tiny_model, tmp_path):
    """Real process under a 4 GiB address-space limit: the 30000x30000 PNG (a few KB) is refused naming
    its size and the budget, the normal image is still restored, exit 1."""
    ckpt, opt = tiny_model
    src, dst = tmp_path / 'in', tmp_path / 'out'
    src.mkdir()
    bomb_png(str(src / 'bomb.png'))
    assert osp.getsize(src / 'bomb.png') < 100_000
    assert cv2.imwrite(str(src / 'fine.png'), np.full((24, 30, 3), 100, np.uint8))
    exe = osp.join(osp.dirname(sys.executable), 'uniremoval-restore')
    proc = subprocess.run([exe, '-i', str(src), '-o', str(dst), '-w', ckpt, '--opt', opt, '-q',
                           '--max-pixels', '100000000'],
                          capture_output=True, text=True, timeout=300, preexec_fn=_limit_memory)
    assert proc.returncode == 1, proc.stderr
    assert 'bomb.png' in proc.stderr and '30000x30000' in proc.stderr and '100000000' in proc.stderr, proc.stderr
    assert 'pixel budget' in proc.stderr
    assert (dst / 'fine.png').exists() and not (dst / 'bomb.png').exists()
    assert 'restored 1, failed 1' in proc.stdout


@pytest.mark.parametrize('fault, needle', [('nan', 'NaN or inf'), ('inf', 'NaN or inf'), ('range', '[-0.5, 1.5]')])
def test_non_finite_or_out_of_range_float_pixels_stop_that_image(tiny_model, tmp_path, capsys, fault, needle):
    ckpt, opt = tiny_model
    src, dst = tmp_path / 'in', tmp_path / 'out'
    src.mkdir()
    img = np.full((20, 24, 3), 0.5, np.float32)
    if fault == 'nan':
        img.reshape(-1)[::100] = np.nan
    elif fault == 'inf':
        img[3, 4, 1] = np.inf
    else:
        img[0, 0, 0], img[1, 1, 1] = -0.5, 1.5
    assert cv2.imwrite(str(src / 'bad.tif'), img)
    assert cv2.imwrite(str(src / 'good.png'), np.full((20, 24, 3), 90, np.uint8))
    assert main(['-i', str(src), '-o', str(dst), '-w', ckpt, '--opt', opt, '-q']) == 1
    err = capsys.readouterr().err
    assert 'bad.tif' in err and needle in err, err
    assert (dst / 'good.png').exists() and not (dst / 'bad.tif').exists()


def test_a_checkpoint_with_a_nan_weight_fails_at_load(tiny_model, tmp_path, capsys):
    _, opt = tiny_model
    torch.manual_seed(0)
    state = build_network(dict(TINY_MPRNET)).state_dict()
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key].view(-1)[0] = float('nan')
    ckpt = str(tmp_path / 'nan.pth')
    torch.save({'params_ema': state}, ckpt)
    src = tmp_path / 'in.png'
    assert cv2.imwrite(str(src), np.full((20, 24, 3), 90, np.uint8))
    assert main(['-i', str(src), '-o', str(tmp_path / 'out'), '-w', ckpt, '--opt', opt, '-q']) == 2
    err = capsys.readouterr().err
    assert 'nan.pth' in err and key in err and 'NaN or inf' in err, err


class Upsample2x(nn.Module):
    def forward(self, x):
        return nn.functional.interpolate(x, scale_factor=2.0, mode='nearest')


class OneChannel(nn.Module):
    def forward(self, x):
        return x.mean(dim=1, keepdim=True)


class MakesNaN(nn.Module):
    def forward(self, x):
        return x * 0 + torch.log(x - 2)  # log of a negative number


FOREIGN = [(Upsample2x, 'shape (1, 3, 40, 48)'), (OneChannel, 'shape (1, 1, 20, 24)'), (MakesNaN, 'NaN or inf')]


@pytest.mark.parametrize('module, needle', FOREIGN)
def test_pytorch_engine_output_is_checked_against_the_contract(module, needle):
    img = np.full((20, 24, 3), 90, np.uint8)
    with pytest.raises(ValueError, match=needle.replace('(', r'\(').replace(')', r'\)')):
        restore_image(module(), img)


@pytest.mark.parametrize('module, needle', FOREIGN)
def test_onnx_engine_output_is_checked_against_the_contract(module, needle, tmp_path, capsys):
    pytest.importorskip('onnxruntime')
    graph = str(tmp_path / 'foreign.onnx')
    torch.onnx.export(module(), torch.rand(1, 3, 16, 16), graph, input_names=['input'], output_names=['output'],
                      dynamic_axes={'input': {2: 'h', 3: 'w'}, 'output': {2: 'h2', 3: 'w2'}}, dynamo=False)
    src = tmp_path / 'in.png'
    assert cv2.imwrite(str(src), np.full((20, 24, 3), 90, np.uint8))
    assert main(['-i', str(src), '-o', str(tmp_path / 'out'), '-w', graph, '--tile', '0', '-q']) == 1
    err = capsys.readouterr().err
    assert 'in.png' in err and needle in err, err
    assert not (tmp_path / 'out').exists() or not list((tmp_path / 'out').iterdir())


def test_a_training_image_over_pils_bomb_limit_is_a_one_line_data_error(tmp_path):
    """Training data: PIL's DecompressionBombError becomes DataCheckError (a usage error, one line) naming the file."""
    from uniremoval.data.data_util import DataCheckError, image_size
    bomb = str(tmp_path / 'huge.png')
    bomb_png(bomb)
    with pytest.raises(DataCheckError, match='huge.png'):
        image_size(bomb)
