"""Tests of NAFNet (uniremoval/archs/nafnet_arch.py), CPU only."""
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import uniremoval  # noqa: F401  (torchvision shim + registration before BasicSR is used)
from basicsr.archs import build_network
from basicsr.utils.registry import ARCH_REGISTRY
from uniremoval.archs.nafnet_arch import LayerNorm2d, NAFBlock, NAFNet, SimpleGate
from uniremoval.utils.padding import pad_to_multiple

# official configurations (megvii-research/NAFNet options/test/{GoPro,SIDD}/NAFNet-width32.yml)
GOPRO_32 = dict(img_channel=3, width=32, middle_blk_num=1, enc_blk_nums=[1, 1, 1, 28], dec_blk_nums=[1, 1, 1, 1])
SIDD_32 = dict(img_channel=3, width=32, middle_blk_num=12, enc_blk_nums=[2, 2, 4, 8], dec_blk_nums=[2, 2, 2, 2])
SMALL = dict(img_channel=3, width=4, middle_blk_num=1, enc_blk_nums=[1, 2], dec_blk_nums=[1, 1])


def num_params(model):
    return sum(p.numel() for p in model.parameters())


def randomize_scales(net, seed=0):
    """beta and gamma start at zero (every block the identity); give them values so that blocks act."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith(('.beta', '.gamma')):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return net


@pytest.fixture(scope='module')
def gopro_net():
    torch.manual_seed(0)
    return NAFNet(**GOPRO_32)


def test_registry_and_build_network():
    assert ARCH_REGISTRY.get('NAFNet') is NAFNet
    net = build_network({'type': 'NAFNet', **SMALL})
    assert isinstance(net, NAFNet)
    assert net.intro.weight.shape == (4, 3, 3, 3)
    assert net.padder_size == 4


def test_official_parameter_counts(gopro_net):
    assert num_params(gopro_net) == 17111907
    assert num_params(NAFNet(**SIDD_32)) == 29159715


def test_official_key_names_and_shapes(gopro_net):
    sd = gopro_net.state_dict()
    expected = {
        'intro.weight': (32, 3, 3, 3),
        'intro.bias': (32, ),
        'ending.weight': (3, 32, 3, 3),
        'encoders.0.0.conv1.weight': (64, 32, 1, 1),
        'encoders.0.0.conv2.weight': (64, 1, 3, 3),  # depth-wise
        'encoders.0.0.conv3.weight': (32, 32, 1, 1),
        'encoders.0.0.sca.1.weight': (32, 32, 1, 1),
        'encoders.0.0.conv4.weight': (64, 32, 1, 1),
        'encoders.0.0.conv5.weight': (32, 32, 1, 1),
        'encoders.0.0.norm1.weight': (32, ),
        'encoders.0.0.norm2.bias': (32, ),
        'encoders.3.27.beta': (1, 256, 1, 1),
        'downs.0.weight': (64, 32, 2, 2),
        'downs.3.bias': (512, ),
        'middle_blks.0.beta': (1, 512, 1, 1),
        'middle_blks.0.gamma': (1, 512, 1, 1),
        'ups.0.0.weight': (1024, 512, 1, 1),
        'ups.3.0.weight': (128, 64, 1, 1),
        'decoders.3.0.conv1.weight': (64, 32, 1, 1),
    }
    for key, shape in expected.items():
        assert tuple(sd[key].shape) == shape, key
    assert 'ups.0.0.bias' not in sd and 'encoders.3.28.beta' not in sd
    # 18 tensors per NAFBlock (31 encoder + 1 middle + 4 decoder blocks), intro/ending/downs weight+bias, ups weight
    assert len(sd) == 36 * 18 + 4 + 4 * 2 + 4
    # official registration order: intro, ending, encoders, decoders, middle_blks, ups, downs
    tops = list(dict.fromkeys(key.split('.')[0] for key in sd))
    assert tops == ['intro', 'ending', 'encoders', 'decoders', 'middle_blks', 'ups', 'downs']


def test_state_dict_round_trip_strict(tmp_path):
    torch.manual_seed(1)
    net = randomize_scales(NAFNet(**SMALL))
    path = tmp_path / 'net_g.pth'
    torch.save({'params': net.state_dict()}, path)
    torch.manual_seed(2)
    other = NAFNet(**SMALL)
    other.load_state_dict(torch.load(path, weights_only=True)['params'], strict=True)
    x = torch.rand(1, 3, 20, 24)
    with torch.no_grad():
        assert torch.equal(net(x), other(x))
    with pytest.raises(RuntimeError, match='Missing key'):
        NAFNet(**{**SMALL, 'enc_blk_nums': [1, 3]}).load_state_dict(net.state_dict(), strict=True)


def test_layer_norm_2d_is_channel_layer_norm():
    torch.manual_seed(0)
    norm = LayerNorm2d(5)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(5) + 0.5)
        norm.bias.copy_(torch.randn(5))
    x = torch.randn(2, 5, 3, 4) * 3 + 1
    expected = F.layer_norm(x.permute(0, 2, 3, 1), (5, ), norm.weight, norm.bias, eps=1e-6).permute(0, 3, 1, 2)
    assert torch.allclose(norm(x), expected, atol=1e-5)
    assert norm.eps == 1e-6


def test_simple_gate_multiplies_halves():
    x = torch.arange(8.).view(1, 4, 1, 2)
    assert torch.equal(SimpleGate()(x), x[:, :2] * x[:, 2:])


def test_nafblock_formula():
    torch.manual_seed(0)
    block = NAFBlock(4)
    x = torch.randn(2, 4, 6, 5)
    with torch.no_grad():
        assert torch.equal(block(x), x)  # beta = gamma = 0: identity
        block.beta.copy_(torch.randn(1, 4, 1, 1))
        block.gamma.copy_(torch.randn(1, 4, 1, 1))
        # NAFNet Fig. 3d: y = x + beta * conv3(SG(dw(conv1(LN(x)))) * SCA); out = y + gamma * conv5(SG(conv4(LN(y))))
        h = block.conv2(block.conv1(block.norm1(x)))
        h = h[:, :4] * h[:, 4:]
        h = h * block.sca[1](h.mean((2, 3), keepdim=True))
        y = x + block.conv3(h) * block.beta
        g = block.conv4(block.norm2(y))
        expected = y + block.conv5(g[:, :4] * g[:, 4:]) * block.gamma
        assert torch.allclose(block(x), expected, atol=1e-6)
    assert isinstance(block.dropout1, nn.Identity)
    dropping = NAFBlock(4, drop_out_rate=0.2)
    assert isinstance(dropping.dropout2, nn.Dropout) and dropping.dropout2.p == 0.2
    assert list(dropping.state_dict()) == list(block.state_dict())


def test_global_residual():
    torch.manual_seed(0)
    net = randomize_scales(NAFNet(**SMALL))
    with torch.no_grad():
        net.ending.weight.zero_()
        net.ending.bias.zero_()
        x = torch.rand(1, 3, 13, 18)
        assert torch.equal(net(x), x)  # output = ending(features) + input


@pytest.mark.parametrize('size', [(37, 45), (1, 1), (8, 3), (16, 16)])
def test_any_size_output_shape(size):
    torch.manual_seed(0)
    net = randomize_scales(NAFNet(**SMALL))
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        y = net(x)
    assert y.shape == x.shape and torch.isfinite(y).all()


def test_real_config_tiny_forward(gopro_net):
    torch.manual_seed(0)
    x1, x2 = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        y1, y2, y12, y0 = (gopro_net(x) for x in (x1, x2, x1 + x2, torch.zeros_like(x1)))
    assert y1.shape == x1.shape and not torch.equal(y1, x1)
    # new blocks are identities (beta = gamma = 0), so the untrained network is affine: convolutions only
    assert torch.allclose(y12, y1 + y2 - y0, atol=1e-4)


def test_padding_then_cropping():
    torch.manual_seed(0)
    net = randomize_scales(NAFNet(**SMALL)).eval()
    with torch.no_grad():
        # already a multiple of padder_size (4): nothing padded, same as the unpadded network
        x = torch.rand(1, 3, 24, 28)
        assert torch.equal(net(x), net.forward_padded(x))
        # otherwise: zero-padded (official check_image_size) at the bottom/right to 40x48, run, cropped back
        x = torch.rand(1, 3, 37, 45)
        padded = pad_to_multiple(x, 4, mode='constant')
        assert padded.shape[-2:] == (40, 48)
        assert torch.equal(padded[:, :, :37, :45], x) and padded[:, :, 37:].abs().sum() == 0
        assert torch.equal(net(x), net.forward_padded(padded)[:, :, :37, :45])


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    net = NAFNet(**SMALL)
    x = torch.rand(2, 3, 12, 20, requires_grad=True)
    net(x).square().mean().backward()
    # at initialisation beta = gamma = 0: only they (and the trunk outside the blocks) receive gradients
    assert all(p.grad.abs().sum() > 0 for name, p in net.named_parameters() if name.endswith(('beta', 'gamma')))
    net.zero_grad()
    randomize_scales(net)
    net(x).square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0


def test_mismatched_levels_are_rejected():
    with pytest.raises(ValueError, match='enc_blk_nums'):
        NAFNet(width=4, enc_blk_nums=[1, 1], dec_blk_nums=[1])
