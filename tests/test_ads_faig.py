"""Tests of FAIG-SD (uniremoval/ads/faig.py), CPU only.

Known answers: when only one kernel differs between theta_um and theta_d, only that kernel (and its
filter) scores non-zero; the scores equal a literal re-implementation of the official FAIG loop
(TencentARC/FAIG ``faig.py``: a fresh interpolated network per step, MSE-sum to the ground truth,
``sum |grad_sum * diff / N|`` per kernel); with the target's own output as reference and N = 1 the
path has only the target point, whose loss is 0: every score is 0.
"""
import copy

import pytest
import torch
from torch import nn

import uniremoval  # noqa: F401,I001  (must come first: torchvision shim + registration)
from uniremoval.ads.faig import faig_scores
from uniremoval.archs.uniremoval_arch import MPRNet


class SmallNet(nn.Module):

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.dw = nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.conv2 = nn.Conv2d(4, 3, 3, padding=1)
        self.up = nn.ConvTranspose2d(3, 3, 1)  # not maskable: never scored

    def forward(self, x):
        return self.up(self.conv2(torch.tanh(self.dw(torch.tanh(self.conv1(x)))))) + x


def pair(seed=0):
    torch.manual_seed(seed)
    um = SmallNet()
    target = copy.deepcopy(um)
    return um, target


def data(seed=0, n=3):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 8, 8, generator=g), torch.rand(n, 3, 8, 8, generator=g)


def reference_faig(um, target, lq, gt, steps):
    """The official FAIG loop for one degradation, image by image, kernel scores per layer."""
    names = ['conv1', 'dw', 'conv2']
    um_state, target_state = um.state_dict(), target.state_dict()
    total = {n: 0 for n in names}
    for b in range(lq.shape[0]):
        grad_sum = {n: 0 for n in names}
        for step in range(steps):
            alpha = step / steps
            net = SmallNet()
            net.load_state_dict({k: alpha * um_state[k] + (1 - alpha) * target_state[k] for k in um_state})
            net.eval()
            net.zero_grad()
            loss = torch.nn.MSELoss(reduction='sum')(gt[b:b + 1], net(lq[b:b + 1]))
            loss.backward()
            for n in names:
                grad_sum[n] = grad_sum[n] + getattr(net, n).weight.grad
        for n in names:
            diff = getattr(um, n).weight.detach() - getattr(target, n).weight.detach()
            total[n] = total[n] + torch.sum(torch.sum(abs(grad_sum[n] * diff / steps), dim=3), dim=2)
    return {n: total[n] / lq.shape[0] for n in names}


def test_only_the_changed_kernel_scores():
    um, target = pair()
    with torch.no_grad():
        target.conv1.weight[2, 1] += 0.3 * torch.randn(3, 3)
    lq, gt = data()
    kernel = faig_scores(um, target, [(lq, gt)], steps=10, per_kernel=True)
    assert list(kernel) == ['conv1', 'dw', 'conv2']
    assert kernel['conv1'].shape == (4, 3) and kernel['dw'].shape == (4, 1) and kernel['conv2'].shape == (3, 4)
    assert kernel['conv1'][2, 1] > 1e-4
    nonzero = (kernel['conv1'] != 0).nonzero().tolist()
    assert nonzero == [[2, 1]]
    assert all((kernel[n] == 0).all() for n in ('dw', 'conv2'))
    filters = faig_scores(um, target, [(lq, gt)], steps=10)
    assert (filters['conv1'] != 0).nonzero().flatten().tolist() == [2]
    torch.testing.assert_close(filters['conv1'], kernel['conv1'].sum(1))


def test_only_changed_depthwise_filter_scores():
    um, target = pair(1)
    with torch.no_grad():
        target.dw.weight[3] += 0.2
    lq, gt = data(1)
    scores = faig_scores(um, target, [(lq, gt)], steps=5)
    assert (scores['dw'] != 0).nonzero().flatten().tolist() == [3]
    assert (scores['conv1'] == 0).all() and (scores['conv2'] == 0).all()


def test_matches_official_faig_loop():
    um, target = pair(2)
    with torch.no_grad():
        for p in target.parameters():
            p.add_(0.1 * torch.randn_like(p))
    lq, gt = data(2)
    expected = reference_faig(um, target, lq, gt, steps=7)
    # two batches (2 + 1 images): the average is over images, not batches
    scores = faig_scores(um, target, [(lq[:2], gt[:2]), (lq[2:], gt[2:])], steps=7, per_kernel=True)
    for n in expected:
        torch.testing.assert_close(scores[n], expected[n], rtol=1e-4, atol=1e-7)
    l1 = faig_scores(um, target, [(lq, gt)], steps=7, loss='l1', reduction='mean')
    assert not torch.allclose(l1['conv1'], scores['conv1'].sum(1))


def test_target_output_as_reference():
    um, target = pair(3)
    with torch.no_grad():
        target.conv2.weight.add_(0.2)
    lq, _ = data(3)
    zero = faig_scores(um, target, [lq], steps=1)  # only alpha = 0: the target itself, loss 0
    assert all((s == 0).all() for s in zero.values())
    scores = faig_scores(um, target, [{'lq': lq}], steps=4)
    assert (scores['conv2'] > 0).all() and (scores['conv1'] == 0).all()


def test_networks_left_untouched():
    um, target = pair(4)
    with torch.no_grad():
        target.conv1.weight.mul_(1.1)
    before = {k: v.clone() for k, v in um.state_dict().items()}
    um.train()
    target.train()
    faig_scores(um, target, [data(4)], steps=3)
    assert um.training and target.training
    assert all(torch.equal(v, before[k]) for k, v in um.state_dict().items())
    assert all(p.grad is None for p in list(um.parameters()) + list(target.parameters()))


def test_errors():
    um, _ = pair()
    other = nn.Sequential(nn.Conv2d(3, 3, 3))
    with pytest.raises(ValueError, match='differ'):
        faig_scores(um, other, [data()], steps=2)
    with pytest.raises(ValueError, match='loss'):
        faig_scores(um, um, [data()], loss='ssim')
    with pytest.raises(ValueError, match='no image'):
        faig_scores(um, um, [], steps=2)


def test_mprnet_only_changed_filter_scores():
    torch.manual_seed(0)
    um = MPRNet(n_feat=8, scale_unetfeats=4, scale_orsnetfeats=4, num_cab=1)
    target = copy.deepcopy(um)
    with torch.no_grad():
        target.stage2_encoder.encoder_level1[0].body[0].weight[5] += 0.05
    lq, gt = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    scores = faig_scores(um, target, [(lq, gt)], steps=2)
    changed = {n: (s != 0).nonzero().flatten().tolist() for n, s in scores.items() if (s != 0).any()}
    assert changed == {'stage2_encoder.encoder_level1.0.body.0': [5]}
    assert len(scores) == sum(1 for m in um.modules() if type(m) is nn.Conv2d)  # MPRNet: only plain convs
