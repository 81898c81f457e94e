"""ONNX export with dynamic height and width (uniremoval.onnx_export) and the onnxruntime engine of
uniremoval-restore: parity with PyTorch eager within 1e-4 (max abs difference, [0, 1] images) on
random and real images, for every restoration network."""
import os
from os import path as osp

import cv2
import numpy as np
import pytest
import torch
import yaml
from torch import nn

import uniremoval  # noqa: F401  (registration)
from basicsr.archs import build_network
from uniremoval.ads.selection import random_scores, select_top_q
from uniremoval.commands.export_onnx import main as export_main
from uniremoval.commands.restore import main as restore_main
from uniremoval.demo.shipped import CHECKPOINT_DIR, checkpoint_file
from uniremoval.onnx_export import (PARITY_TOLERANCE, OnnxNetwork, RestorationGraph, example_size, export_onnx,
                                    max_abs_difference)
from uniremoval.options import load_option_file
from uniremoval.restoration import load_network, network_function, restore_image

NAFNET = {'type': 'NAFNet', 'img_channel': 3, 'width': 8, 'middle_blk_num': 1, 'enc_blk_nums': [1, 1],
          'dec_blk_nums': [1, 1]}
NETWORKS = {
    'MPRNet': {'type': 'MPRNet', 'n_feat': 8, 'scale_unetfeats': 4, 'scale_orsnetfeats': 4, 'num_cab': 2},
    'NAFNet': NAFNET,
    'MSBDNDFF': {'type': 'MSBDNDFF', 'num_feat': 4, 'res_blocks': 2},
    'MSBDNRDFF': {'type': 'MSBDNRDFF', 'num_feat': 4, 'res_blocks': 2},
}


def _randomise(net, seed):
    """Weights far from their initialisation (MSBDN/NAFNet start near identity/zero maps)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.05)
    return net.eval()


def ads_network():
    """CNN-ADS on a tiny NAFNet with random masks for three degradations (they overlap: a filter chosen
    for several degradations sums their contributions) and its classifier."""
    torch.manual_seed(0)
    um = build_network(dict(NAFNET))
    degradations = ['rain', 'blur', 'noise']
    masks = {d: select_top_q(random_scores(um, seed), 50) for seed, d in enumerate(degradations)}
    net = build_network({'type': 'ADSNet', 'backbone': dict(NAFNET), 'num_degradations': 3,
                         'masks': {'degradations': degradations, 'masks': masks, 'q': 50, 'method': 'random'},
                         'classifier': {'type': 'DegradationClassifier', 'num_feat': 8, 'num_blocks': 1}})
    return _randomise(net, 1)


def check_any_size(net, path, pixel_range=(0.0, 1.0)):
    """One file, traced at one size, matches PyTorch at other sizes (multiples of the network's size
    multiple or not, below its small-input threshold, batch 2) within 1e-4."""
    onnx_net = OnnxNetwork(path)
    traced = example_size(net)
    sizes = [(37, 50), (64, 48), (traced[0] + 16, traced[1] - 7), (12, 21)]
    assert max_abs_difference(net, onnx_net, sizes, pixel_range) < PARITY_TOLERANCE
    x = torch.rand(2, 3, 40, 56)
    with torch.inference_mode():
        reference = RestorationGraph(net, pixel_range)(x)
    out = onnx_net(x)
    assert out.shape == (2, 3, 40, 56) and (out - reference).abs().max() < PARITY_TOLERANCE


@pytest.mark.parametrize('name', ['ADSNet', 'MSBDNDFF', 'MSBDNRDFF', 'NAFNet'])  # MPRNet: the command test
def test_every_network_exports_once_and_runs_at_any_size(name, tmp_path):
    torch.manual_seed(0)
    net = ads_network() if name == 'ADSNet' else _randomise(build_network(dict(NETWORKS[name])), 0)
    path = str(tmp_path / f'{name}.onnx')
    meta = export_onnx(net, path)
    assert meta['network'] == name and os.listdir(tmp_path) == [f'{name}.onnx']  # atomic write, no leftovers
    check_any_size(net, path)
    if name == 'ADSNet':  # the masks overlap, so index_add accumulates repeated indices (custom symbolic)
        convs = net.adaptive_layers().values()
        assert any(len(torch.cat([c.selected_index(d) for d in range(3)]).unique()) <
                   len(torch.cat([c.selected_index(d) for d in range(3)])) for c in convs)


def test_index_add_with_repeated_indices_accumulates(tmp_path):
    class AddRows(nn.Module):
        def forward(self, x):
            index = torch.tensor([0, 2, 0])
            return x.index_add(1, index, x[:, :3] * 2)

    path = str(tmp_path / 'add.onnx')
    export_onnx(AddRows(), path)
    x = torch.rand(1, 3, 9, 11)
    expected = x.clone()
    expected[:, 0] += 2 * x[:, 0] + 2 * x[:, 2]
    expected[:, 2] += 2 * x[:, 1]
    assert torch.allclose(OnnxNetwork(path)(x), expected, atol=1e-6)


def real_rain_image(size=(96, 128)):
    """A real photograph (scikit-image's rocket) with synthetic rain, float32 RGB in [0, 1]."""
    from uniremoval.data.degradations import degrade
    from uniremoval.demo.data import load_photos
    photo = load_photos(['rocket'])[0]['rocket'][:size[0], 100:100 + size[1]]
    return np.clip(degrade(photo[..., ::-1].astype(np.float32) / 255, 'rain', 0), 0, 1).astype(np.float32)


@pytest.fixture(scope='module')
def shipped_rain(tmp_path_factory):
    """(network, .onnx file) of the demo's trained rain teacher."""
    opt = load_option_file(osp.join(CHECKPOINT_DIR, 'pretrain_teacher_rain.yml'))
    net = load_network(checkpoint_file('rain'), opt['network_g'])
    path = str(tmp_path_factory.mktemp('onnx') / 'teacher_rain.onnx')
    export_onnx(net, path)
    return net, path


def test_trained_network_on_a_real_photo(shipped_rain):
    net, path = shipped_rain
    x = torch.from_numpy(np.ascontiguousarray(real_rain_image().transpose(2, 0, 1)))[None]
    onnx_out = OnnxNetwork(path)(x)
    reference = network_function(net)(x)
    assert (onnx_out - reference).abs().max() < PARITY_TOLERANCE
    assert (reference - x).abs().mean() > 0.01  # the trained network does change the image


def test_export_and_restore_commands(shipped_rain, tmp_path, capsys):
    """uniremoval-export-onnx (an MPRNet in [-1, 1], folded into the file; checked at several sizes)
    then uniremoval-restore with the onnxruntime engine: the written images equal the PyTorch engine's
    within one grey level."""
    torch.manual_seed(3)
    net = _randomise(build_network(dict(NETWORKS['MPRNet'])), 3)
    ckpt, opt = str(tmp_path / 'net.pth'), str(tmp_path / 'net.yml')
    torch.save({'params': net.state_dict()}, ckpt)
    with open(opt, 'w') as f:
        yaml.safe_dump({'name': 'tiny', 'network_g': dict(NETWORKS['MPRNet']), 'pixel_range': [-1, 1]}, f)
    onnx_file = str(tmp_path / 'net.onnx')
    assert export_main(['-w', ckpt, '--opt', opt, '-o', onnx_file]) == 0
    assert 'within the tolerance' in capsys.readouterr().out
    check_any_size(net, onnx_file, pixel_range=(-1, 1))

    src = tmp_path / 'in'
    src.mkdir()
    img = (real_rain_image((60, 90)) * 255).round().astype(np.uint8)[..., ::-1]
    assert cv2.imwrite(str(src / 'photo.png'), img)
    common = ['-i', str(src), '--tile', '48', '--tile-overlap', '16', '-q']
    assert restore_main(common + ['-o', str(tmp_path / 'ort'), '-w', onnx_file, '--engine', 'onnxruntime']) == 0
    assert restore_main(common + ['-o', str(tmp_path / 'auto'), '-w', onnx_file]) == 0  # auto: by the extension
    assert restore_main(common + ['-o', str(tmp_path / 'pt'), '-w', ckpt, '--opt', opt]) == 0
    ort_img = cv2.imread(str(tmp_path / 'ort' / 'photo.png')).astype(int)
    pt_img = cv2.imread(str(tmp_path / 'pt' / 'photo.png')).astype(int)
    assert np.array_equal(ort_img, cv2.imread(str(tmp_path / 'auto' / 'photo.png')))
    assert np.abs(ort_img - pt_img).max() <= 1 and np.abs(ort_img - pt_img).mean() < 0.01
    expected = restore_image(load_network(ckpt, NETWORKS['MPRNet'], 'params'), img, tile=48, overlap=16,
                             pixel_range=(-1, 1))
    assert np.array_equal(pt_img, expected)

    capsys.readouterr()
    assert restore_main(common + ['-o', str(tmp_path / 'x'), '-w', onnx_file, '--engine', 'pytorch']) == 2
    assert 'is an ONNX file' in capsys.readouterr().err
    assert restore_main(common + ['-o', str(tmp_path / 'x'), '-w', ckpt, '--opt', opt, '--engine',
                                  'onnxruntime']) == 2
    assert 'runs an .onnx file' in capsys.readouterr().err
    assert restore_main(common + ['-o', str(tmp_path / 'x'), '-w', onnx_file, '--bf16']) == 2
    assert export_main(['-w', ckpt, '--opt', opt, '-o', str(tmp_path / 'net.bin')]) == 2
