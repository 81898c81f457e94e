"""Tests of CycleGAN's 70x70 PatchGAN discriminator (uniremoval/archs/patchgan_arch.py), CPU only."""
import pytest
import torch
from torch import nn

import uniremoval  # noqa: F401  (torchvision shim + registration before BasicSR is used)
from basicsr.archs import build_network
from basicsr.losses.gan_loss import GANLoss
from basicsr.utils.registry import ARCH_REGISTRY
from uniremoval.archs.patchgan_arch import PatchGANDiscriminator


def num_params(model):
    return sum(p.numel() for p in model.parameters())


def test_registry_round_trip():
    assert ARCH_REGISTRY.get('PatchGANDiscriminator') is PatchGANDiscriminator
    net = build_network({'type': 'PatchGANDiscriminator', 'num_feat': 8, 'num_layers': 2})
    assert isinstance(net, PatchGANDiscriminator)
    assert net.model[0].weight.shape == (8, 3, 4, 4)


def test_official_state_dict_keys_and_parameter_count():
    net = PatchGANDiscriminator()
    keys = list(net.state_dict())
    # the official NLayerDiscriminator: conv(+bias) at 0, 2, 5, 8, 11; InstanceNorm2d(affine=False) at 3, 6, 9
    assert keys == [f'model.{i}.{p}' for i in (0, 2, 5, 8, 11) for p in ('weight', 'bias')]
    assert isinstance(net.model[3], nn.InstanceNorm2d) and not list(net.model[3].parameters())
    assert [net.model[i].stride for i in (0, 2, 5, 8, 11)] == [(2, 2)] * 3 + [(1, 1)] * 2
    # C64-C128-C256-C512 + the 1-channel conv, 4x4 kernels, weights + biases
    layers = ((3, 64), (64, 128), (128, 256), (256, 512), (512, 1))
    by_hand = sum(4 * 4 * c_in * c_out + c_out for c_in, c_out in layers)
    assert by_hand == 2764737
    assert num_params(net) == 2764737


def test_batch_and_no_norm_layouts():
    bn = PatchGANDiscriminator(num_feat=8, norm_type='batch')
    assert isinstance(bn.model[3], nn.BatchNorm2d) and bn.model[3].affine
    assert bn.model[2].bias is None and bn.model[0].bias is not None and bn.model[11].bias is not None
    assert 'model.3.running_mean' in bn.state_dict()
    assert abs(bn.model[3].weight.mean().item() - 1.0) < 0.02 and bn.model[3].bias.abs().max() == 0
    plain = PatchGANDiscriminator(num_feat=8, norm_type='none')
    assert isinstance(plain.model[3], nn.Identity) and plain.model[2].bias is not None
    with pytest.raises(ValueError, match='norm_type'):
        PatchGANDiscriminator(norm_type='layer')


def test_cyclegan_weight_init():
    torch.manual_seed(0)
    net = PatchGANDiscriminator()
    weights = torch.cat([net.model[i].weight.flatten() for i in (2, 5, 8)])
    assert abs(weights.mean().item()) < 1e-3 and weights.std().item() == pytest.approx(0.02, rel=0.01)
    assert all(net.model[i].bias.abs().max() == 0 for i in (0, 2, 5, 8, 11))


@pytest.mark.parametrize('size, out', [((256, 256), (30, 30)), ((48, 40), (4, 3)), ((32, 32), (2, 2))])
def test_output_shape(size, out):
    net = PatchGANDiscriminator(num_feat=8)
    with torch.no_grad():
        y = net(torch.rand(2, 3, *size))
    assert y.shape == (2, 1, *out)


def test_too_small_input_gets_a_clear_error():
    with pytest.raises(ValueError, match='at least 24x24'):
        PatchGANDiscriminator(num_feat=8)(torch.rand(1, 3, 23, 64))


def test_receptive_field_is_70x70():
    torch.manual_seed(0)
    net = PatchGANDiscriminator(num_feat=8, norm_type='none').double()
    x = torch.rand(1, 3, 256, 256, dtype=torch.float64, requires_grad=True)
    y = net(x)
    assert y.shape == (1, 1, 30, 30)
    row, col = 15, 12
    y[0, 0, row, col].backward()
    nonzero = x.grad[0].abs().sum(0) != 0
    # output (i, j) sees input rows 8i-23 .. 8i+46 (stride 8, 4x4 kernels with padding 1)
    window = torch.zeros_like(nonzero)
    window[8 * row - 23:8 * row + 47, 8 * col - 23:8 * col + 47] = True
    assert nonzero.sum() == 70 * 70
    assert torch.equal(nonzero, window)


def test_lsgan_training_separates_real_from_fake():
    torch.manual_seed(0)
    net = PatchGANDiscriminator(num_feat=16)
    cri_gan = GANLoss('lsgan')
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-4, betas=(0.5, 0.999))
    real = torch.linspace(0, 1, 64).view(1, 1, 1, 64).expand(2, 3, 64, 64).contiguous()  # smooth ramps
    fake = torch.rand(2, 3, 64, 64)  # noise
    losses = []
    for _ in range(6):
        optimizer.zero_grad()
        loss = 0.5 * (cri_gan(net(real), True, is_disc=True) + cri_gan(net(fake), False, is_disc=True))
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.5 * losses[0]
    with torch.no_grad():
        assert net(real).mean() > net(fake).mean()
