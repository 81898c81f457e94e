"""Inference fast paths of the restoration library (uniremoval.restoration.network_function) and their
uniremoval-restore flags: channels-last equals the reference within float32 rounding (1e-5, [0, 1]
images); bfloat16 autocast is compared by PSNR against float32 (at least 35 dB on a real photo with a
trained network; measured about 63 dB with the demo's rain teacher); inference runs under
torch.inference_mode and hands back ordinary tensors."""
from os import path as osp

import cv2
import numpy as np
import pytest
import torch
import yaml

import uniremoval  # noqa: F401  (registration)
from basicsr.archs import build_network
from uniremoval.commands.restore import main
from uniremoval.demo.shipped import CHECKPOINT_DIR, checkpoint_file
from uniremoval.options import load_option_file
from uniremoval.restoration import load_network, network_function, restore_image
from uniremoval.utils.tiling import tiled_forward

CHANNELS_LAST_TOLERANCE = 1e-5
BF16_MIN_PSNR = 35.0

NETWORKS = {
    'MPRNet': {'type': 'MPRNet', 'n_feat': 8, 'scale_unetfeats': 4, 'scale_orsnetfeats': 4, 'num_cab': 2},
    'NAFNet': {'type': 'NAFNet', 'img_channel': 3, 'width': 8, 'middle_blk_num': 1, 'enc_blk_nums': [1, 1],
               'dec_blk_nums': [1, 1]},
    'MSBDNDFF': {'type': 'MSBDNDFF', 'num_feat': 4, 'res_blocks': 2},
}


def psnr(a, b):
    return (-10 * torch.log10(((a.clamp(0, 1) - b.clamp(0, 1))**2).mean())).item()


@pytest.fixture(scope='module')
def trained_rain():
    """The demo's trained rain teacher (MPRNet) and a real photograph with synthetic rain, (1, 3, H, W)."""
    from uniremoval.data.degradations import degrade
    from uniremoval.demo.data import load_photos
    opt = load_option_file(osp.join(CHECKPOINT_DIR, 'pretrain_teacher_rain.yml'))
    photo = load_photos(['rocket'])[0]['rocket'][:128, 100:260]
    lq = np.clip(degrade(photo[..., ::-1].astype(np.float32) / 255, 'rain', 0), 0, 1).astype(np.float32)
    return opt['network_g'], torch.from_numpy(np.ascontiguousarray(lq.transpose(2, 0, 1)))[None]


@pytest.mark.parametrize('name', sorted(NETWORKS))
def test_channels_last_equals_the_reference(name):
    torch.manual_seed(0)
    net = build_network(dict(NETWORKS[name])).eval()
    x = torch.rand(2, 3, 45, 52)
    reference = network_function(net)(x)
    fast = network_function(net, channels_last=True)(x)
    assert net.state_dict()[next(k for k, v in net.state_dict().items() if v.dim() == 4)].is_contiguous(
        memory_format=torch.channels_last)
    assert fast.shape == reference.shape and fast.is_contiguous()
    assert (fast - reference).abs().max() < CHANNELS_LAST_TOLERANCE


def test_trained_network_fast_paths(trained_rain):
    network_opt, x = trained_rain
    net = load_network(checkpoint_file('rain'), network_opt)
    reference = network_function(net)(x)
    bf16 = network_function(net, bf16=True)(x)
    assert bf16.dtype == torch.float32
    assert BF16_MIN_PSNR <= psnr(bf16, reference) < 200  # close, but not the float32 computation
    assert psnr(reference, x) < 35  # the network changes the image more than bf16 changes the result
    fast = network_function(load_network(checkpoint_file('rain'), network_opt), channels_last=True)(x)
    assert (fast - reference).abs().max() < CHANNELS_LAST_TOLERANCE


def test_inference_mode_and_ordinary_results():
    seen = []

    def fn(t):
        seen.append(torch.is_inference_mode_enabled())
        return t * 2

    x = torch.rand(1, 3, 20, 30, requires_grad=True)
    for tile in (0, 16):
        out = tiled_forward(fn, x, tile, 4)
        out.add_(1)  # an inference tensor would refuse this outside inference mode
        assert not out.requires_grad and torch.allclose(out, x.detach() * 2 + 1)
    assert seen and all(seen)


def test_restore_flags(trained_rain, tmp_path):
    """uniremoval-restore --channels-last equals the default output; --bf16 stays within a few grey levels."""
    network_opt, x = trained_rain
    img = (x[0].numpy().transpose(1, 2, 0)[..., ::-1] * 255).round().astype(np.uint8)
    assert cv2.imwrite(str(tmp_path / 'photo.png'), img)
    opt = str(tmp_path / 'net.yml')
    with open(opt, 'w') as f:
        yaml.safe_dump({'name': 'rain', 'network_g': dict(network_opt)}, f)
    common = ['-i', str(tmp_path / 'photo.png'), '-w', checkpoint_file('rain'), '--opt', opt, '--tile', '96',
              '--tile-overlap', '32', '-q']
    outputs = {}
    for flags in ([], ['--channels-last'], ['--bf16']):
        out_dir = tmp_path / ('out' + ''.join(flags))
        assert main(common + ['-o', str(out_dir)] + flags) == 0
        outputs[tuple(flags)] = cv2.imread(str(out_dir / 'photo.png')).astype(int)
    reference = restore_image(load_network(checkpoint_file('rain'), network_opt), img, tile=96, overlap=32)
    assert np.array_equal(outputs[()], reference)
    assert np.abs(outputs[('--channels-last', )] - reference).max() <= 1
    bf16_diff = np.abs(outputs[('--bf16', )] - reference)
    assert 0 < bf16_diff.max() <= 8 and bf16_diff.mean() < 0.5
