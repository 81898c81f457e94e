"""Tests of ADS's degradation classifier (uniremoval/archs/degradation_classifier_arch.py), CPU only."""
import pytest
import torch
from torch.nn import functional as F

import uniremoval  # noqa: F401,I001  (must come first: torchvision shim + registration)
from basicsr.archs import build_network
from basicsr.utils.registry import ARCH_REGISTRY
from uniremoval.archs.degradation_classifier_arch import DegradationClassifier


def test_registered_and_default_parameter_count():
    assert ARCH_REGISTRY.get('DegradationClassifier') is DegradationClassifier
    net = build_network({'type': 'DegradationClassifier'})
    # conv 3->32; blocks 32->64, 64->128, 128->128, 128->128 (two 3x3 convs each); linear 128->3
    expected = (3 * 32 * 9 + 32) + (32 * 64 * 9 + 64) + (64 * 64 * 9 + 64) + (64 * 128 * 9 + 128) \
        + 5 * (128 * 128 * 9 + 128) + (128 * 3 + 3)
    assert sum(p.numel() for p in net.parameters()) == expected == 868_483
    assert net.fc.out_features == 3


@pytest.mark.parametrize('size', [(1, 1), (7, 5), (33, 64), (100, 3)])
def test_any_input_size(size):
    net = DegradationClassifier(num_in_ch=1, num_degradations=5, num_feat=4, num_blocks=3).eval()
    x = torch.rand(2, 1, *size)
    logits = net(x)
    assert logits.shape == (2, 5)
    # no batch statistics: a sample's logits do not depend on the rest of the batch
    torch.testing.assert_close(net(x[1:]), logits[1:], rtol=1e-5, atol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match='num_degradations >= 1'):
        DegradationClassifier(num_degradations=0)


def test_learns_to_separate_noise_from_blur():
    torch.manual_seed(0)
    net = DegradationClassifier(num_degradations=2, num_feat=8, num_blocks=2)
    g = torch.Generator().manual_seed(1)
    clean = F.interpolate(torch.rand(8, 3, 4, 4, generator=g), size=16, mode='bilinear', align_corners=False)
    noisy = clean + 0.2 * torch.randn(clean.shape, generator=g)
    blurred = F.avg_pool2d(clean, 3, 1, 1)
    x, y = torch.cat([noisy, blurred]), torch.tensor([0] * 8 + [1] * 8)
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-3)
    first = None
    for _ in range(60):
        loss = F.cross_entropy(net(x), y)
        first = loss.item() if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.5 * first
    assert (net(x).argmax(1) == y).all()
