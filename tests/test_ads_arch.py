"""Tests of the CNN-ADS network ``ADSNet`` (uniremoval/archs/ads_arch.py), CPU only.

Known answers on NAFNet and MPRNet backbones: c = 0 equals the UM exactly; one-hot c equals the
backbone with explicitly merged weights; the classifier's softmax is the default condition; the
full state dict (UM + specific weights + masks + classifier) round-trips with strict=True, also into
a network built without a mask file; only the specific weights get gradients after freeze_um.
"""
import copy

import pytest
import torch
from torch.nn import functional as F

import uniremoval  # noqa: F401,I001  (must come first: torchvision shim + registration)
from basicsr.archs import build_network
from uniremoval.ads.adaptive_conv import AdaptiveConv2d, merged_weight
from uniremoval.ads.selection import maskable_convs, random_scores, save_masks, select_top_q
from uniremoval.archs.ads_arch import ADSNet
from uniremoval.archs.nafnet_arch import NAFNet

NAFNET = dict(type='NAFNet', width=8, enc_blk_nums=[1, 1], middle_blk_num=1, dec_blk_nums=[1, 1])
MPRNET = dict(type='MPRNet', n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4, num_cab=1)
CLASSIFIER = dict(type='DegradationClassifier', num_feat=4, num_blocks=2)
DEGS = ['rain', 'blur', 'noise']


def write_masks(path, backbone_opt, q=25):
    opt = dict(backbone_opt)
    net = build_network(opt)
    scores = {d: random_scores(net, i) for i, d in enumerate(DEGS)}
    save_masks(path, {d: select_top_q(s, q) for d, s in scores.items()}, scores, {'q': q, 'method': 'random'})
    return path


def randomise_specific(net, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.specific_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)


@pytest.fixture(scope='module')
def nafnet_masks(tmp_path_factory):
    return write_masks(str(tmp_path_factory.mktemp('ads') / 'masks.pth'), NAFNET)


def make(masks, backbone=NAFNET, classifier=CLASSIFIER, seed=0):
    torch.manual_seed(seed)
    net = build_network(dict(type='ADSNet', backbone=backbone, num_degradations=3, masks=masks,
                             classifier=classifier))
    randomise_specific(net, seed)
    return net.eval()


def plain_um(net, backbone=NAFNET):
    opt = dict(backbone)
    um = build_network(opt).eval()
    um.load_state_dict(net.um_state_dict(), strict=True)
    return um


def merged_backbone(net, c_single, backbone=NAFNET):
    um = plain_um(net, backbone)
    layers = net.adaptive_layers()
    with torch.no_grad():
        for name, conv in maskable_convs(um).items():
            conv.weight.copy_(merged_weight(layers[name], c_single))
    return um


def test_build_and_masks(nafnet_masks):
    net = make(nafnet_masks)
    assert isinstance(net, ADSNet) and isinstance(net.backbone, NAFNet)
    assert net.degradations == DEGS and net.mask_info['q'] == 25.0 and net.mask_info['method'] == 'random'
    layers = net.adaptive_layers()
    assert list(layers) == list(maskable_convs(NAFNet(**{k: v for k, v in NAFNET.items() if k != 'type'})))
    assert all(isinstance(m, AdaptiveConv2d) for m in layers.values())
    intro = layers['intro']  # 8 filters: 25% -> 2 per degradation
    assert [intro.selected_index(d).numel() for d in range(3)] == [2, 2, 2]
    masks = net.masks()
    assert list(masks) == DEGS and masks['rain']['intro'].tolist() == intro.index_0.tolist()


def test_zero_condition_equals_um_exactly(nafnet_masks):
    net = make(nafnet_masks)
    x = torch.rand(2, 3, 10, 13)
    assert torch.equal(net(x, condition=torch.zeros(2, 3)), plain_um(net)(x))


@pytest.mark.parametrize('backbone', [NAFNET, MPRNET])
def test_one_hot_and_soft_condition_equal_merged_weights(tmp_path, backbone):
    net = make(write_masks(str(tmp_path / 'm.pth'), backbone), backbone=backbone)
    x = torch.rand(2, 3, 16, 16)
    for c_single in ([0., 1., 0.], [0.2, 0.3, 0.5]):
        out = net(x, condition=torch.tensor([c_single, c_single]))
        expected = merged_backbone(net, c_single, backbone)(x)
        # float32 sums in another order through a whole network (MPRNet: 3 stages): 1e-4
        if isinstance(out, list):  # MPRNet: three stage outputs
            for o, e in zip(out, expected):
                torch.testing.assert_close(o, e, rtol=1e-4, atol=1e-4)
        else:
            torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    um_out = plain_um(net, backbone)(x)
    um_out = um_out[0] if isinstance(um_out, list) else um_out
    final = out[0] if isinstance(out, list) else out
    assert (final - um_out).abs().max() > 1e-4


def test_condition_forms(nafnet_masks):
    net = make(nafnet_masks)
    x = torch.rand(3, 3, 8, 8)
    labels = torch.tensor([2, 0, 1])
    one_hot = F.one_hot(labels, 3).float()
    assert torch.equal(net(x, condition=labels), net(x, condition=one_hot))
    assert torch.equal(net(x, condition=torch.tensor([0., 1., 0.])), net(x, condition=torch.tensor([[0., 1., 0.]] * 3)))
    c = F.softmax(net.classifier(x), dim=1)
    torch.testing.assert_close(net.predict_condition(x), c)
    assert torch.equal(net(x), net(x, condition=c))
    with pytest.raises(ValueError, match=r'\[B, k\] = \[3, 3\]'):
        net(x, condition=torch.zeros(2, 3))
    with pytest.raises(ValueError, match='type labels'):
        net(x, condition=torch.tensor([0, 3, 1]))


def test_state_dict_round_trip_carries_masks(nafnet_masks):
    net = make(nafnet_masks, seed=1)
    state = net.state_dict()
    assert 'backbone.intro.weight_0' in state and 'backbone.intro.index_2' in state
    assert 'classifier.fc.weight' in state
    fresh = build_network(dict(type='ADSNet', backbone=NAFNET, num_degradations=3, masks=None,
                               classifier=CLASSIFIER, degradations=DEGS)).eval()
    assert all(m.num_selected == 0 for m in fresh.adaptive_layers().values())
    fresh.load_state_dict(state, strict=True)
    x = torch.rand(2, 3, 12, 12)
    assert torch.equal(fresh(x), net(x))
    assert all(torch.equal(v, state[k]) for k, v in fresh.state_dict().items())
    assert list(fresh.state_dict()) == list(state)
    bad = dict(state)
    bad['backbone.intro.index_0'] = torch.tensor([0, 99])
    with pytest.raises(ValueError, match=r"mask of 'rain'.*\[0, 8\)"):
        fresh.load_state_dict(bad, strict=True)


def test_um_state_dict_round_trip(nafnet_masks):
    net = make(nafnet_masks)
    plain = NAFNet(**{k: v for k, v in NAFNET.items() if k != 'type'})
    assert list(net.um_state_dict()) == list(plain.state_dict())
    specific_before = [p.clone() for p in net.specific_parameters()]
    net.load_um_state_dict({'params': plain.state_dict()})
    assert all(torch.equal(v, plain.state_dict()[k]) for k, v in net.um_state_dict().items())
    assert all(torch.equal(a, b) for a, b in zip(specific_before, net.specific_parameters()))
    x = torch.rand(1, 3, 8, 8)
    assert torch.equal(net(x, condition=torch.zeros(1, 3)), plain(x))
    partial = dict(plain.state_dict())
    partial.pop('intro.bias')
    with pytest.raises(RuntimeError, match='intro.bias'):
        net.load_um_state_dict(partial)
    net.load_um_state_dict(partial, strict=False)


def test_freeze_um_gradients_reach_only_specific_weights(nafnet_masks):
    net = make(nafnet_masks).train()
    with torch.no_grad():  # NAFNet starts with zero layer scales (beta, gamma): blocks would pass no gradient
        for name, p in net.backbone.named_parameters():
            if name.endswith(('beta', 'gamma')):
                p.uniform_(0.5, 1.0)
    net.freeze_um().freeze_classifier()
    specific = {id(p) for p in net.specific_parameters()}
    assert len(specific) == 3 * len(net.adaptive_layers())
    net(torch.rand(2, 3, 8, 8)).square().mean().backward()  # classifier in the loop
    for name, p in net.named_parameters():
        if id(p) in specific:
            assert p.requires_grad
            if p.numel():
                assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert not p.requires_grad and p.grad is None, name


def test_no_masks_equals_um_and_errors(tmp_path, nafnet_masks):
    net = make(None, classifier=None)
    assert net.degradations == ['0', '1', '2'] and net.specific_parameters()
    assert all(p.numel() == 0 for p in net.specific_parameters())
    x = torch.rand(1, 3, 8, 8)
    assert torch.equal(net(x, condition=torch.tensor([[0.2, 0.3, 0.5]])), plain_um(net)(x))
    with pytest.raises(RuntimeError, match='no classifier'):
        net(x)
    with pytest.raises(ValueError, match='differ from those of the mask file'):
        ADSNet(NAFNET, 3, nafnet_masks, degradations=['rain', 'snow', 'haze'])
    with pytest.raises(ValueError, match='num_degradations=2'):
        ADSNet(NAFNET, 2, nafnet_masks)
    with pytest.raises(ValueError, match='do not fit the backbone MPRNet'):
        ADSNet(MPRNET, 3, nafnet_masks)
    with pytest.raises(ValueError, match='classifier num_degradations=4'):
        ADSNet(NAFNET, 3, None, classifier=dict(CLASSIFIER, num_degradations=4))
    order = ADSNet(NAFNET, 3, nafnet_masks, degradations=['noise', 'rain', 'blur'])
    reference = ADSNet(NAFNET, 3, nafnet_masks)
    assert torch.equal(order.backbone.intro.index_0, reference.backbone.intro.index_2)  # 'noise' first


def test_parameters_and_overhead(nafnet_masks):
    net = make(nafnet_masks)
    plain = NAFNet(**{k: v for k, v in NAFNET.items() if k != 'type'})
    n_um = sum(p.numel() for p in plain.parameters())
    assert net.um_parameter_count() == n_um
    n_specific = sum(p.numel() for p in net.specific_parameters())
    n_classifier = sum(p.numel() for p in net.classifier.parameters())
    assert sum(p.numel() for p in net.parameters()) == n_um + n_specific + n_classifier
    expected = sum(len(idx) * plain.get_submodule(layer).weight[0].numel()
                   for layer_masks in net.masks().values() for layer, idx in layer_masks.items())
    assert n_specific == expected > 0
    assert copy.deepcopy(net).um_parameter_count() == n_um
