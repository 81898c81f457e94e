"""Tests of CNN-ADS's adaptive convolution (uniremoval/ads/adaptive_conv.py), CPU only.

Known answers: c = 0 gives the UM exactly; one-hot and soft c give the network whose weights are
explicitly merged (theta_um + sum_d c_d theta_d M_d); a batch with a different c per sample equals a
naive per-sample weight merge, for dense, depthwise, strided/dilated/reflect-padded and bias-free
convolutions; the extra convolution only ever sees the selected filters.
"""
import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import uniremoval  # noqa: F401,I001  (must come first: torchvision shim + registration)
from uniremoval.ads import adaptive_conv as adaptive_conv_module
from uniremoval.ads.adaptive_conv import (AdaptiveConv2d, adaptive_condition, convert_to_adaptive, is_maskable_conv,
                                          merged_weight, split_adaptive_state_dict)
from uniremoval.ads.selection import maskable_convs

K = 3


class TinyNet(nn.Module):
    """Dense, depthwise, strided/dilated/reflect-padded convs plus layers ADS does not mask."""

    def __init__(self):
        super().__init__()
        self.head = nn.Conv2d(3, 8, 3, padding=1)
        self.body = nn.Sequential(
            nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU(), nn.Conv2d(8, 12, 1), nn.LeakyReLU(0.1))
        self.down = nn.Conv2d(12, 12, 3, stride=2, padding=2, dilation=2, bias=False, padding_mode='reflect')
        self.up = nn.ConvTranspose2d(12, 8, 2, 2)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.tail = nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x):
        return self.tail(self.grouped(self.up(self.down(self.body(self.head(x)))))) + x


MASKABLE = ['head', 'body.0', 'body.2', 'down', 'tail']


def random_masks(net, seed, fraction=0.4):
    """k random masks ({layer: sorted indices}) that overlap between degradations."""
    g = torch.Generator().manual_seed(seed)
    masks = []
    for _ in range(K):
        layer_masks = {}
        for name, conv in maskable_convs(net).items():
            n = max(1, int(fraction * conv.out_channels))
            layer_masks[name] = torch.sort(torch.randperm(conv.out_channels, generator=g)[:n]).values
        masks.append(layer_masks)
    return masks


def make_ads(seed=0):
    torch.manual_seed(seed)
    um = TinyNet().eval()
    ads = copy.deepcopy(um)
    convert_to_adaptive(ads, random_masks(um, seed), K)
    with torch.no_grad():
        for conv in ads.modules():
            if isinstance(conv, AdaptiveConv2d):
                for p in conv.specific_parameters():
                    p.normal_(0, 0.3)
    return um, ads


def merged_copy(um, ads, c_single):
    """A plain network whose conv weights are explicitly merged for one condition vector."""
    merged = copy.deepcopy(um)
    adaptive = {n: m for n, m in ads.named_modules() if isinstance(m, AdaptiveConv2d)}
    with torch.no_grad():
        for name, conv in maskable_convs(merged).items():
            conv.weight.copy_(merged_weight(adaptive[name], c_single))
    return merged


def test_maskable_layers_and_keys_unchanged():
    um, ads = make_ads()
    assert list(maskable_convs(um)) == MASKABLE
    assert not is_maskable_conv(um.grouped) and not is_maskable_conv(um.up)
    assert all(isinstance(ads.get_submodule(n), AdaptiveConv2d) for n in MASKABLE)
    assert type(ads.grouped) is nn.Conv2d and type(ads.up) is nn.ConvTranspose2d
    um_part, specific = split_adaptive_state_dict(ads.state_dict(), ads)
    assert list(um_part) == list(um.state_dict())
    assert all(torch.equal(um_part[k], v) for k, v in um.state_dict().items())
    assert sorted(specific) == sorted(f'{n}.{kind}_{d}' for n in MASKABLE for kind in ('weight', 'index')
                                      for d in range(K))
    assert ads.down.weight_1.shape[1:] == (12, 3, 3) and ads.body[0].weight_0.shape[1:] == (1, 3, 3)


def test_zero_condition_equals_um_exactly():
    um, ads = make_ads()
    x = torch.rand(2, 3, 14, 10)
    with adaptive_condition(ads, torch.zeros(2, K)):
        out = ads(x)
    assert torch.equal(out, um(x))


@pytest.mark.parametrize('c_single', [[1., 0., 0.], [0., 1., 0.], [0., 0., 1.], [0.2, 0.5, 0.3], [0.7, -0.4, 1.5]])
def test_condition_equals_explicitly_merged_network(c_single):
    um, ads = make_ads(1)
    x = torch.rand(3, 3, 12, 14)
    c = torch.tensor([c_single] * 3)
    with adaptive_condition(ads, c):
        out = ads(x)
    expected = merged_copy(um, ads, c_single)(x)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert (out - um(x)).abs().max() > 1e-3  # the specific weights do act


def naive_conv(conv, x, c):
    """Per-sample merge of the full weight (what the efficient forward avoids)."""
    outs = []
    for b in range(x.shape[0]):
        weight = merged_weight(conv, c[b])
        xb = x[b:b + 1]
        padding = conv.padding
        if conv.padding_mode != 'zeros':
            xb = F.pad(xb, conv._reversed_padding_repeated_twice, mode=conv.padding_mode)
            padding = 0
        outs.append(F.conv2d(xb, weight, conv.bias, conv.stride, padding, conv.dilation, conv.groups))
    return torch.cat(outs)


@pytest.mark.parametrize('layer', MASKABLE)
def test_per_sample_condition_equals_naive_merge(layer):
    _, ads = make_ads(2)
    conv = ads.get_submodule(layer)
    x = torch.randn(4, conv.in_channels, 10, 9)
    c = torch.tensor([[1., 0., 0.], [0., 0., 1.], [0.3, 0.3, 0.4], [0., 0., 0.]])
    conv.condition = c
    out = conv(x)
    expected = naive_conv(conv, x, c)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    # gradients of the specific weights agree too
    grads = torch.autograd.grad(out.square().sum(), conv.specific_parameters())
    conv.condition = c
    naive_grads = torch.autograd.grad(naive_conv(conv, x, c).square().sum(), conv.specific_parameters())
    for g, ng in zip(grads, naive_grads):  # float32 sums in another order: tolerance relative to the largest
        torch.testing.assert_close(g, ng, rtol=1e-4, atol=1e-5 * max(1.0, float(ng.abs().max())))
    conv.condition = None


def test_whole_network_per_sample_equals_merged_networks():
    um, ads = make_ads(3)
    x = torch.rand(3, 3, 16, 16)
    c = torch.tensor([[0., 1., 0.], [0.5, 0.25, 0.25], [0., 0., 1.]])
    with adaptive_condition(ads, c):
        out = ads(x)
    for b in range(3):
        torch.testing.assert_close(out[b:b + 1], merged_copy(um, ads, c[b])(x[b:b + 1]), rtol=1e-5, atol=1e-5)


def test_extra_convolution_sees_only_selected_filters(monkeypatch):
    _, ads = make_ads(4)
    calls = []
    real_conv2d = F.conv2d

    def recording_conv2d(x, weight, *args, **kwargs):
        calls.append((tuple(x.shape), tuple(weight.shape)))
        return real_conv2d(x, weight, *args, **kwargs)

    monkeypatch.setattr(adaptive_conv_module.F, 'conv2d', recording_conv2d)
    for layer in ('body.2', 'body.0'):
        conv = ads.get_submodule(layer)
        calls.clear()
        conv.condition = torch.rand(2, K)
        conv(torch.rand(2, conv.in_channels, 8, 8))
        conv.condition = None
        selected = conv.num_selected
        assert calls[-1][1] == (selected, ) + tuple(conv.weight.shape[1:])  # one conv over the selected filters
        if conv.groups > 1:  # depthwise: only the selected filters' input channels are gathered
            assert calls[-1][0] == (2, selected, 8, 8)
        assert all(w[0] in (conv.out_channels, selected) for _, w in calls)


def test_depthwise_overlapping_selection():
    conv = AdaptiveConv2d(nn.Conv2d(6, 6, 3, padding=1, groups=6), 2)
    conv.set_selection(0, [4, 1], torch.arange(18.).reshape(2, 1, 3, 3))  # unsorted input gets sorted with weights
    conv.set_selection(1, [1], torch.ones(1, 1, 3, 3))
    assert conv.index_0.tolist() == [1, 4]
    assert torch.equal(conv.weight_0[1], torch.arange(9.).reshape(1, 3, 3))
    x, c = torch.randn(2, 6, 7, 7), torch.tensor([[0.5, 2.0], [1.0, -1.0]])
    conv.condition = c
    torch.testing.assert_close(conv(x), naive_conv(conv, x, c), rtol=1e-5, atol=1e-5)


def test_init_from_targets_reproduces_target_with_one_hot():
    torch.manual_seed(5)
    um = TinyNet().eval()
    targets = [copy.deepcopy(um) for _ in range(K)]
    with torch.no_grad():
        for t in targets:
            for conv in maskable_convs(t).values():
                conv.weight.add_(torch.randn_like(conv.weight) * 0.1)
    full = [{n: torch.arange(c.out_channels) for n, c in maskable_convs(um).items()} for _ in range(K)]
    ads = copy.deepcopy(um)
    convert_to_adaptive(ads, full, K, init=targets)
    x = torch.rand(2, 3, 12, 12)
    for d in range(K):
        with adaptive_condition(ads, F.one_hot(torch.tensor([d, d]), K).float()):
            torch.testing.assert_close(ads(x), targets[d](x), rtol=1e-5, atol=1e-5)
    # partial masks: merged weights equal the target's on the selected filters, the UM's elsewhere
    ads = copy.deepcopy(um)
    masks = random_masks(um, 6)
    convert_to_adaptive(ads, masks, K, init=[t.state_dict() for t in targets])
    for name in MASKABLE:
        merged = merged_weight(ads.get_submodule(name), [0., 1., 0.])
        selected = masks[1][name]
        rest = torch.ones(merged.shape[0], dtype=torch.bool)
        rest[selected] = False
        torch.testing.assert_close(merged[selected], targets[1].get_submodule(name).weight[selected])
        assert torch.equal(merged[rest], um.get_submodule(name).weight[rest])


def test_condition_errors_and_zero_selection():
    _, ads = make_ads()
    with pytest.raises(RuntimeError, match='no condition'):
        ads(torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match=r'\[B, k\]'):
        with adaptive_condition(ads, torch.zeros(2, K)):
            ads(torch.rand(1, 3, 8, 8))
    empty = AdaptiveConv2d(nn.Conv2d(3, 4, 3), K)  # nothing selected: no condition needed
    x = torch.rand(1, 3, 6, 6)
    assert torch.equal(empty(x), F.conv2d(x, empty.weight, empty.bias))
    with pytest.raises(ValueError, match=r'\[0, 4\)'):
        empty.set_selection(0, [4])
    with pytest.raises(TypeError, match='maskable'):
        AdaptiveConv2d(nn.Conv2d(4, 4, 3, groups=2), K)
    with pytest.raises(KeyError, match='not a maskable convolution'):
        convert_to_adaptive(TinyNet(), [{'grouped': torch.tensor([0])}, {}, {}], K)
    with pytest.raises(ValueError, match='already'):
        convert_to_adaptive(ads, None, K)


def test_condition_context_restores_previous_value():
    _, ads = make_ads()
    c1, c2 = torch.zeros(1, K), torch.ones(1, K)
    with adaptive_condition(ads, c1):
        with adaptive_condition(ads, c2):
            assert ads.head.condition is c2
        assert ads.head.condition is c1
    assert ads.head.condition is None


def test_shared_module_replaced_everywhere():
    shared = nn.Conv2d(3, 3, 3, padding=1)
    net = nn.Sequential(shared, nn.ReLU(), shared)
    convert_to_adaptive(net, [{'0': torch.tensor([1])}], 1)
    assert net[0] is net[2] and isinstance(net[0], AdaptiveConv2d)


def test_new_selection_after_forward_is_used():
    """The cached index tables follow set_selection and load_state_dict (in-place buffer copies)."""
    _, ads = make_ads(7)
    conv = ads.body[2]
    x, c = torch.randn(2, 8, 6, 6), torch.tensor([[1., 0., 0.], [0.2, 0.3, 0.5]])
    conv.condition = c
    conv(x)
    conv.set_selection(0, [0, 11], torch.randn(2, 8, 1, 1))
    torch.testing.assert_close(conv(x), naive_conv(conv, x, c), rtol=1e-5, atol=1e-5)
    state = conv.state_dict()
    new_index = torch.arange(12)[-state['index_1'].numel():]  # the last filters
    assert not torch.equal(new_index, state['index_1'])
    state['index_1'] = new_index
    conv.load_state_dict(state)
    assert torch.equal(conv.index_1, state['index_1'])
    torch.testing.assert_close(conv(x), naive_conv(conv, x, c), rtol=1e-5, atol=1e-5)
    conv.condition = None
