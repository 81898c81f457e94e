"""Tests of MSBDN-DFF and MSBDN-RDFF (uniremoval/archs/msbdn_arch.py), CPU only."""
import pytest
import torch

import uniremoval  # noqa: F401  (torchvision shim + registration before BasicSR is used)
from basicsr.archs import build_network
from basicsr.utils.registry import ARCH_REGISTRY
from uniremoval.archs.msbdn_arch import MSBDNDFF, MSBDNRDFF, RDB, DecoderMDCBlock, EncoderMDCBlock
from uniremoval.utils.padding import pad_to_multiple

VARIANTS = (MSBDNDFF, MSBDNRDFF)
SMALL = dict(num_feat=4, res_blocks=2)


def num_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope='module')
def official_nets():
    torch.manual_seed(0)
    return {cls: cls() for cls in VARIANTS}


def test_registry_and_build_network():
    for cls in VARIANTS:
        assert ARCH_REGISTRY.get(cls.__name__) is cls
        net = build_network({'type': cls.__name__, **SMALL})
        assert isinstance(net, cls)
        assert net.conv_input.conv2d.weight.shape == (4, 3, 11, 11)
        assert len(net.dehaze) == 2


def test_official_parameter_counts(official_nets):
    assert num_params(official_nets[MSBDNDFF]) == 31353061
    assert num_params(official_nets[MSBDNRDFF]) == 28712861


# keys and shapes of the official networks (BookerDeWitt/MSBDN-DFF, networks/MSBDN-DFF-v1-1.py and MSBDN-RDFF.py);
# ConvTranspose2d weights are (in, out, k, k)
COMMON_KEYS = {
    'conv_input.conv2d.weight': (16, 3, 11, 11),
    'dense0.0.conv1.conv2d.weight': (16, 16, 3, 3),
    'dense0.2.relu.weight': (1, ),
    'conv2x.conv2d.weight': (32, 16, 3, 3),
    'dense1.2.conv2.conv2d.bias': (32, ),
    'conv16x.conv2d.weight': (256, 128, 3, 3),
    'dehaze.res0.conv1.conv2d.weight': (256, 256, 3, 3),
    'dehaze.res17.relu.weight': (1, ),
    'convd16x.conv2d.weight': (256, 128, 3, 3),
    'convd2x.conv2d.bias': (16, ),
    'dense_4.0.conv1.conv2d.weight': (128, 128, 3, 3),
    'dense_1.2.relu.weight': (1, ),
    'conv_output.conv2d.weight': (3, 16, 3, 3),
}
DFF_KEYS = {
    'fusion1.up_convs.0.deconv.weight': (32, 16, 4, 4),
    'fusion1.down_convs.0.conv.weight': (32, 16, 4, 4),
    'fusion1.down_convs.0.act.weight': (1, ),
    'fusion4.up_convs.3.deconv.weight': (32, 16, 4, 4),
    'fusion4.down_convs.0.conv.bias': (256, ),
    'fusion_4.down_convs.0.conv.weight': (256, 128, 4, 4),
    'fusion_1.down_convs.3.conv.weight': (256, 128, 4, 4),
    'fusion_1.up_convs.3.deconv.weight': (256, 128, 4, 4),
}
RDFF_KEYS = {
    'conv1.dense_layers.0.conv.weight': (16, 16, 3, 3),
    'conv1.dense_layers.3.conv.weight': (16, 64, 3, 3),
    'conv1.conv_1x1.weight': (16, 80, 1, 1),
    'conv4.conv_1x1.weight': (128, 640, 1, 1),
    'conv_1.conv_1x1.weight': (8, 40, 1, 1),
    'conv_4.dense_layers.2.conv.weight': (64, 192, 3, 3),
    'fusion1.up_convs.0.deconv.weight': (16, 8, 4, 4),
    'fusion4.up_convs.3.deconv.weight': (16, 8, 4, 4),
    'fusion_4.down_convs.0.conv.weight': (128, 64, 4, 4),
    'fusion_1.up_convs.3.deconv.weight': (128, 64, 4, 4),
}


@pytest.mark.parametrize('cls, keys', [(MSBDNDFF, DFF_KEYS), (MSBDNRDFF, RDFF_KEYS)])
def test_official_key_names_and_shapes(official_nets, cls, keys):
    sd = official_nets[cls].state_dict()
    for key, shape in {**COMMON_KEYS, **keys}.items():
        assert tuple(sd[key].shape) == shape, key
    assert 'dehaze.res18.relu.weight' not in sd and 'fusion1.up_convs.1.deconv.weight' not in sd
    assert all(not key.endswith('bias') for key in sd if '.dense_layers.' in key or 'conv_1x1' in key)
    # no buffers, only parameters: residual blocks 6 x 3 per level x 8 + 18 x 5 bottleneck; DFF 6 per step
    dff_steps = 2 * sum(range(1, 5))  # encoder fusion{k}: k up/down pairs; decoder fusion_{k}: 5 - k
    count = 2 + 8 * 3 * 5 + 18 * 5 + 4 * 2 + 4 * 2 + 2 + dff_steps * 6
    if cls is MSBDNRDFF:
        count += 8 * 5  # eight RDBs: four dense convolutions and a 1x1, no biases
    assert len(sd) == count


def test_state_dict_round_trip_strict(tmp_path):
    for cls in VARIANTS:
        torch.manual_seed(1)
        net = cls(**SMALL)
        path = tmp_path / f'{cls.__name__}.pth'
        torch.save({'params': net.state_dict()}, path)
        torch.manual_seed(2)
        other = cls(**SMALL)
        other.load_state_dict(torch.load(path, weights_only=True)['params'], strict=True)
        x = torch.rand(1, 3, 32, 48)
        with torch.no_grad():
            assert torch.equal(net(x), other(x))
    # the two variants are not interchangeable
    with pytest.raises(RuntimeError, match='Unexpected key'):
        MSBDNDFF(**SMALL).load_state_dict(MSBDNRDFF(**SMALL).state_dict(), strict=True)


@pytest.mark.parametrize('cls', VARIANTS)
@pytest.mark.parametrize('size', [(37, 45), (5, 7), (16, 70), (17, 33)])
def test_any_size_output_shape(cls, size):
    torch.manual_seed(0)
    net = cls(**SMALL)
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        y = net(x)
    assert y.shape == x.shape and torch.isfinite(y).all()


def test_official_configs_tiny_forward(official_nets):
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        outs = [official_nets[cls](x) for cls in VARIANTS]
    assert all(y.shape == x.shape and torch.isfinite(y).all() for y in outs)
    assert not torch.allclose(outs[0], outs[1])


@pytest.mark.parametrize('cls', VARIANTS)
def test_padding_then_cropping(cls):
    torch.manual_seed(0)
    net = cls(**SMALL).eval()
    with torch.no_grad():
        # a multiple of 16 (and at least 32): nothing padded, same as the unpadded network
        x = torch.rand(1, 3, 48, 64)
        assert torch.equal(net(x), net.forward_padded(x))
        # otherwise: padded at the bottom/right to a multiple of 16, run, cropped to the top-left
        x = torch.rand(1, 3, 37, 45)
        assert torch.equal(net(x), net.forward_padded(pad_to_multiple(x, 16))[:, :, :37, :45])
        # a side of at most 16: padded to a multiple of 32 (the 1/16 level needs 2 pixels)
        x = torch.rand(1, 3, 12, 40)
        assert torch.equal(net(x), net.forward_padded(pad_to_multiple(x, 32))[:, :, :12, :40])
        with pytest.raises(RuntimeError):
            net.forward_padded(torch.rand(1, 3, 16, 16))  # 1x1 at the bottleneck: reflection padding fails


@pytest.mark.parametrize('cls', VARIANTS)
def test_gradients_reach_every_parameter(cls):
    torch.manual_seed(0)
    net = cls(**SMALL)
    # signed input: a PReLU slope gets a gradient only where its input is negative
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    net(x).square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0


def test_encoder_dff_back_projection():
    """iter2 fusion: for each higher-resolution memory feature (highest first), project the running fusion
    up to it, subtract it, project the error back down and add it."""
    torch.manual_seed(0)
    block = EncoderMDCBlock(8, 3)
    up, down = block.up_convs, block.down_convs
    assert [tuple(m.deconv.weight.shape) for m in up] == [(8, 4, 4, 4), (4, 2, 4, 4)]
    assert [tuple(m.conv.weight.shape) for m in down] == [(8, 4, 4, 4), (4, 2, 4, 4)]
    ft_l, h0, h1 = torch.randn(1, 8, 4, 4), torch.randn(1, 2, 16, 16), torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        fusion = ft_l + down[0](down[1](up[1](up[0](ft_l)) - h0))
        fusion = fusion + down[0](up[0](fusion) - h1)
        assert torch.allclose(block(ft_l, [h0, h1]), fusion, atol=1e-6)
        assert torch.allclose(block(ft_l, [h1.new_zeros(1, 2, 16, 16)]),
                              ft_l + down[0](down[1](up[1](up[0](ft_l)))), atol=1e-6)


def test_decoder_dff_back_projection():
    torch.manual_seed(0)
    block = DecoderMDCBlock(2, 3)
    up, down = block.up_convs, block.down_convs
    assert [tuple(m.conv.weight.shape) for m in down] == [(4, 2, 4, 4), (8, 4, 4, 4)]
    assert [tuple(m.deconv.weight.shape) for m in up] == [(4, 2, 4, 4), (8, 4, 4, 4)]
    ft_h, l0, l1 = torch.randn(1, 2, 16, 16), torch.randn(1, 8, 4, 4), torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        fusion = ft_h + up[0](up[1](down[1](down[0](ft_h)) - l0))
        fusion = fusion + up[0](down[0](fusion) - l1)
        assert torch.allclose(block(ft_h, [l0, l1]), fusion, atol=1e-6)


def test_residual_dense_block():
    torch.manual_seed(0)
    rdb = RDB(4, 3, 2)
    assert [tuple(layer.conv.weight.shape) for layer in rdb.dense_layers] == [(2, 4, 3, 3), (2, 6, 3, 3), (2, 8, 3, 3)]
    x = torch.randn(1, 4, 5, 6)
    with torch.no_grad():
        dense = x
        for layer in rdb.dense_layers:
            dense = torch.cat((dense, torch.relu(layer.conv(dense))), 1)
        assert torch.allclose(rdb(x), x + rdb.conv_1x1(dense), atol=1e-6)
        rdb.conv_1x1.weight.zero_()
        assert torch.equal(rdb(x), x)


def test_invalid_arguments():
    with pytest.raises(ValueError, match='num_feat must be even'):
        MSBDNRDFF(num_feat=5)
    with pytest.raises(ValueError, match='res_blocks'):
        MSBDNDFF(num_feat=4, res_blocks=-1)
    assert num_params(MSBDNDFF(num_feat=5, res_blocks=0)) > 0  # odd widths are fine without the split
