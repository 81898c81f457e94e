"""Tests of the MPRNet architecture (uniremoval/archs/uniremoval_arch.py), CPU only."""
import pytest
import torch
from torch.nn import functional as F

import uniremoval  # noqa: F401,I001  (must come first: torchvision shim + registration)
from basicsr.archs import build_network
from basicsr.utils.registry import ARCH_REGISTRY
from uniremoval.archs.uniremoval_arch import FEATURE_LAYERS, MPRNet

SMALL = dict(n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4, num_cab=2)


@pytest.fixture(scope='module')
def small_model():
    torch.manual_seed(0)
    return MPRNet(**SMALL).eval()


def num_params(model):
    return sum(p.numel() for p in model.parameters())


def test_registry_round_trip():
    assert ARCH_REGISTRY.get('MPRNet') is MPRNet
    net = build_network({'type': 'MPRNet', **SMALL})
    assert isinstance(net, MPRNet)
    assert net.shallow_feat1[0].weight.shape == (8, 3, 3, 3)
    assert len(net.stage3_orsnet.orb1.body) == SMALL['num_cab'] + 1


@pytest.mark.parametrize('config, expected', [
    ((40, 20, 16), 3_637_249),   # deraining (defaults)
    ((96, 48, 32), 20_127_073),  # deblurring
    ((80, 48, 32), 15_741_025),  # denoising
])
def test_official_parameter_counts(config, expected):
    n_feat, scale_unetfeats, scale_orsnetfeats = config
    model = MPRNet(n_feat=n_feat, scale_unetfeats=scale_unetfeats, scale_orsnetfeats=scale_orsnetfeats)
    assert num_params(model) == expected


def test_defaults_are_deraining_config():
    assert num_params(MPRNet()) == 3_637_249


def test_prelu_is_shared_like_official():
    model = MPRNet(**SMALL)
    prelus = {m for m in model.modules() if isinstance(m, torch.nn.PReLU)}
    assert len(prelus) == 1
    prelu_weight = prelus.pop().weight
    prelu_keys = [k for k, v in model.state_dict(keep_vars=True).items() if v is prelu_weight]
    assert len(prelu_keys) > 1  # one parameter, one key per CAB
    assert 'shallow_feat1.1.body.1.weight' in prelu_keys
    assert 'stage3_orsnet.orb1.body.0.body.1.weight' in prelu_keys


def test_official_key_names_and_shapes():
    state = MPRNet().state_dict()  # deraining config: n_feat=40, unet +20, orsnet +16
    expected = {
        'shallow_feat1.0.weight': (40, 3, 3, 3),
        'shallow_feat3.1.CA.conv_du.0.weight': (10, 40, 1, 1),
        'shallow_feat3.1.body.2.weight': (40, 40, 3, 3),
        'stage1_encoder.down12.down.1.weight': (60, 40, 1, 1),
        'stage1_encoder.encoder_level3.1.body.0.weight': (80, 80, 3, 3),
        'stage1_decoder.up32.up.1.weight': (60, 80, 1, 1),
        'stage1_decoder.skip_attn2.CA.conv_du.2.weight': (60, 15, 1, 1),
        'stage2_encoder.csff_enc1.weight': (40, 40, 1, 1),
        'stage2_encoder.csff_dec3.weight': (80, 80, 1, 1),
        'stage3_orsnet.orb1.body.8.weight': (56, 56, 3, 3),
        'stage3_orsnet.up_enc2.1.up.1.weight': (40, 60, 1, 1),
        'stage3_orsnet.conv_dec3.weight': (56, 40, 1, 1),
        'sam12.conv2.weight': (3, 40, 1, 1),
        'sam23.conv3.weight': (40, 3, 1, 1),
        'concat12.weight': (40, 80, 3, 3),
        'concat23.weight': (56, 80, 3, 3),
        'tail.weight': (3, 56, 3, 3),
    }
    for key, shape in expected.items():
        assert tuple(state[key].shape) == shape, key
    assert not any(k.startswith('stage1_encoder.csff') for k in state)  # CSFF only in stage 2
    assert not any(k.endswith('.bias') for k in state)  # bias=False everywhere by default
    assert len(state) == 316


def test_official_checkpoint_layout_loads_strict(tmp_path, small_model):
    # Official checkpoints: {'state_dict': ...}, keys prefixed with 'module.' by nn.DataParallel.
    path = tmp_path / 'model_deraining.pth'
    torch.save({'state_dict': {'module.' + k: v for k, v in small_model.state_dict().items()}}, path)

    checkpoint = torch.load(path, map_location='cpu')
    state = {k.removeprefix('module.'): v for k, v in checkpoint['state_dict'].items()}
    torch.manual_seed(1)
    loaded = MPRNet(**SMALL).eval()
    loaded.load_state_dict(state, strict=True)

    x = torch.rand(1, 3, 16, 24)
    with torch.no_grad():
        for a, b in zip(small_model(x), loaded(x)):
            assert torch.equal(a, b)


def test_outputs_of_multiple_of_8_input(small_model):
    x = torch.rand(2, 3, 32, 24)
    with torch.no_grad():
        outputs = small_model(x)
    assert isinstance(outputs, list) and len(outputs) == 3
    for out in outputs:
        assert out.shape == x.shape


def test_odd_size_is_reflect_padded_and_cropped(small_model):
    x = torch.rand(1, 3, 37, 50)
    padded = F.pad(x, (0, 6, 0, 3), mode='reflect')  # to 40 x 56, as the official demo.py
    with torch.no_grad():
        outputs = small_model(x)
        reference = small_model(padded)
    for out, ref in zip(outputs, reference):
        assert out.shape == x.shape
        torch.testing.assert_close(out, ref[..., :37, :50], rtol=0, atol=0)


def test_tiny_input_falls_back_to_replicate_padding(small_model):
    x = torch.rand(1, 3, 3, 5)  # too small to reflect-pad to 8 x 8
    with torch.no_grad():
        outputs = small_model(x)
    assert all(out.shape == x.shape for out in outputs)


def test_return_feats_default_is_orsnet_output(small_model):
    x = torch.rand(1, 3, 16, 24)
    with torch.no_grad():
        outputs, feats = small_model(x, return_feats=True)
        plain = small_model(x)
    assert small_model.feat_layers == ('orsnet',)
    assert len(feats) == 1
    orsnet_channels = SMALL['n_feat'] + SMALL['scale_orsnetfeats']
    assert feats[0].shape == (1, orsnet_channels, 16, 24)
    # the ORSNet output is what `tail` maps to the final residual
    torch.testing.assert_close(small_model.tail(feats[0]) + x, outputs[0])
    for a, b in zip(outputs, plain):
        assert torch.equal(a, b)


def test_return_feats_all_layers_odd_size_are_cropped(small_model):
    x = torch.rand(1, 3, 37, 50)
    padded = F.pad(x, (0, 6, 0, 3), mode='reflect')
    with torch.no_grad():
        _, feats = small_model(x, return_feats=True, feat_layers=FEATURE_LAYERS)
        _, padded_feats = small_model(padded, return_feats=True, feat_layers=FEATURE_LAYERS)
    channels = [SMALL['n_feat'] + SMALL['scale_orsnetfeats'], SMALL['n_feat'], SMALL['n_feat']]
    assert len(feats) == len(FEATURE_LAYERS)
    for feat, padded_feat, ch in zip(feats, padded_feats, channels):
        assert feat.shape == (1, ch, 37, 50)
        assert torch.equal(feat, padded_feat[..., :37, :50])  # no padded position is returned


def test_feat_layers_attribute_and_validation():
    model = MPRNet(**SMALL).eval()
    model.feat_layers = ('stage2_decoder', 'orsnet')
    with torch.no_grad():
        _, feats = model(torch.rand(1, 3, 8, 8), return_feats=True)
    assert [f.shape[1] for f in feats] == [8, 12]
    with pytest.raises(ValueError):
        model(torch.rand(1, 3, 8, 8), return_feats=True, feat_layers=('nope',))
    with pytest.raises(ValueError):
        MPRNet(in_c=3, out_c=1)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = MPRNet(**SMALL).train()
    x = torch.rand(1, 3, 13, 17)
    outputs, feats = model(x, return_feats=True)
    loss = sum(out.abs().mean() for out in outputs) + feats[0].pow(2).mean()
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
    assert model.tail.weight.grad.abs().sum() > 0
    assert model.shallow_feat1[1].body[1].weight.grad.abs().sum() > 0  # the shared PReLU


@pytest.mark.parametrize('padding_mode', ['replicate', 'reflect'])
def test_border_continuing_padding_maps_a_constant_image_to_a_constant_image(padding_mode):
    """Every stage output of a constant image is constant with a border that continues each patch's own
    content, while zero padding leaves a frame around the image and steps at the stage-1/2 patch borders."""
    torch.manual_seed(0)
    zeros = MPRNet(**SMALL).eval()
    continuing = MPRNet(**SMALL, padding_mode=padding_mode).eval()
    continuing.load_state_dict(zeros.state_dict(), strict=True)  # same keys: official checkpoints load
    x = torch.full((1, 3, 32, 48), 0.4)
    with torch.no_grad():
        for out_zeros, out in zip(zeros(x), continuing(x)):
            assert (out - out.mean(dim=(2, 3), keepdim=True)).abs().max() < 1e-5
            # the middle column of the stage-1 quarters: a step with zero padding
            step = (out_zeros[..., 24] - out_zeros[..., 23]).abs().mean()
            assert step > 1e-3


def test_padding_mode_reaches_every_spatial_convolution_and_is_validated():
    model = MPRNet(**SMALL, padding_mode='replicate')
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert {m.padding_mode for m in convs if m.kernel_size != (1, 1)} == {'replicate'}
    assert {m.padding_mode for m in convs if m.kernel_size == (1, 1)} == {'zeros'}  # nothing to pad
    official = [m.padding_mode for m in MPRNet(**SMALL).modules() if isinstance(m, torch.nn.Conv2d)]
    assert official == ['zeros'] * len(convs)
    with pytest.raises(ValueError, match=r"padding_mode must be one of .* got 'circular'"):
        MPRNet(**SMALL, padding_mode='circular')
