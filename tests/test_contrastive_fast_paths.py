"""The fast paths of the KT step (issue [10] item 4) give the reference computation's values.

* Image-grained losses (Eq. 4, Eq. 11): the images that need no gradient (teacher outputs, degraded
  inputs, restored clear images) go through VGG in a ``no_grad`` call of their own, the anchor in a
  second call. Reference: all images in one call of a copy of the same VGG with autograd on, then
  Eq. 2 / Eq. 9 per layer written out here. Tolerance: rtol 1e-5, atol 1e-6 on the loss and on the
  anchor's gradient (the two paths differ only in the convolutions' batch size, hence their
  summation order).
* Teachers: each runs without autograd, on the samples of its own type only (one call per teacher
  with exactly those samples), and the routed targets equal each teacher run on each sample alone.
"""
import copy
import math
from os import path as osp

import pytest
import torch
import torch.nn.functional as F

import uniremoval  # noqa: F401  (registers the losses, archs and models)
from basicsr.archs import build_network
from basicsr.models import build_model
from uniremoval.losses.contrastive_loss import ExtendedImageContrastiveLoss, ImageContrastiveLoss
from uniremoval.models.uniremoval_model import batch_as_set
from uniremoval.options import parse_options
from conftest import DEMO_CONFIGS

RTOL, ATOL = 1e-5, 1e-6
LAYERS = {'relu1_1': 0.25, 'relu2_1': 0.5, 'relu3_1': 1.0}


def vgg_copy(loss):
    """A copy of the loss's VGG (NCHW), taken before the loss runs."""
    return copy.deepcopy(loss.vgg)


def reference_image_loss(loss, vgg, anchor, positives, negatives, neg_mask=None):
    """Per-sample Eq. 9 on VGG maps, summed over layers; every image through ``vgg`` in ONE call.

    Written out with explicit cosines and log-sum-exp (no call into contrastive_loss_terms)."""
    batch, num_pos, num_neg = anchor.shape[0], positives.shape[1], negatives.shape[1]
    feats = vgg(torch.cat([anchor, positives.flatten(0, 1), negatives.flatten(0, 1)], dim=0))
    total = 0
    for name, weight in loss.layer_weights.items():
        f_a, f_p, f_n = torch.split(feats[name].flatten(1), [batch, batch * num_pos, batch * num_neg])
        a = F.normalize(f_a, dim=1)
        s_pos = torch.stack([F.normalize(f_p[b * num_pos:(b + 1) * num_pos], dim=1) @ a[b] for b in range(batch)])
        s_neg = torch.stack([F.normalize(f_n[b * num_neg:(b + 1) * num_neg], dim=1) @ a[b] for b in range(batch)])
        t = loss.temperature
        logit_neg = s_neg / t if neg_mask is None else (s_neg / t).masked_fill(~neg_mask, -math.inf)
        per = torch.logsumexp(torch.cat([s_pos / t, logit_neg], 1), 1) - torch.logsumexp(s_pos / t, 1)
        total = total + weight * per
    return total


def _images(*shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, 3, 24, 24, generator=g)


@pytest.mark.parametrize('shared_negatives', [False, True])
def test_split_vgg_calls_equal_one_call_value_and_anchor_gradient(shared_negatives):
    torch.manual_seed(0)
    loss = ImageContrastiveLoss(pretrained=False, temperature=0.1, reduction='none', layer_weights=LAYERS)
    vgg = vgg_copy(loss)
    anchor, positive = _images(4, seed=1), _images(4, seed=2)
    lq = _images(4, seed=3)
    negatives = batch_as_set(lq) if shared_negatives else lq.unsqueeze(0).repeat(4, 1, 1, 1, 1)
    neg_mask = torch.tensor([[True, False, True, True]] * 2 + [[False, True, True, True]] * 2)

    a_fast = anchor.clone().requires_grad_(True)
    fast = loss(a_fast, positive, negatives, neg_mask=neg_mask)
    fast.sum().backward()
    a_ref = anchor.clone().requires_grad_(True)
    ref = reference_image_loss(loss, vgg, a_ref, positive.unsqueeze(1), negatives.contiguous(), neg_mask)
    ref.sum().backward()
    torch.testing.assert_close(fast, ref, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(a_fast.grad, a_ref.grad, rtol=RTOL, atol=ATOL)
    assert a_fast.grad.abs().sum() > 0


def test_only_the_anchor_goes_through_vgg_with_autograd():
    torch.manual_seed(0)
    loss = ExtendedImageContrastiveLoss(pretrained=False, temperature=0.1, layer_weights=LAYERS)
    calls = []
    loss.vgg.register_forward_hook(
        lambda module, inputs, output: calls.append((inputs[0].shape[0], torch.is_grad_enabled())))
    anchor = _images(2, seed=0).requires_grad_(True)
    clear = _images(3, seed=1)
    loss(anchor, batch_as_set(clear)[:2], _images(2, 4, seed=2)).backward()
    # targets (3 shared clear images + 2x4 negatives) without autograd, then the 2 anchors with it
    assert calls == [(3 + 2 * 4, False), (2, True)]
    assert anchor.grad is not None and anchor.grad.abs().sum() > 0

    calls.clear()  # a positive that requires grad is sent with the anchor
    positives = _images(2, 1, seed=4).requires_grad_(True)
    loss(anchor, positives, _images(2, 3, seed=5)).backward()
    assert calls == [(2 * 3, False), (2 + 2, True)]
    assert positives.grad is not None and positives.grad.abs().sum() > 0

    calls.clear()  # autograd off (validation): one call for everything
    with torch.no_grad():
        loss(anchor, positives, _images(2, 3, seed=5))
    assert calls == [(2 + 2 + 2 * 3, False)]


# ---------------------------------------------------------------------------------------------
# the KT model: teachers without autograd, each on its own samples
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def kt_model(tmp_path):
    opt, _ = parse_options(['-opt', osp.join(DEMO_CONFIGS, 'kt_tiny.yml')], root_path=str(tmp_path),
                           is_train=True, check_paths=False)  # the demo data need not exist
    for i, teacher in enumerate(opt['teachers']):
        torch.manual_seed(100 + i)
        teacher['pretrain_path'] = str(tmp_path / f'teacher_{i}.pth')
        torch.save({'params': build_network(dict(opt['network_g'])).state_dict()}, teacher['pretrain_path'])
    opt['train']['iters_per_epoch'] = 5
    torch.manual_seed(0)
    return build_model(opt)


def test_teachers_run_once_each_on_their_own_samples_without_autograd(kt_model):
    calls = []
    for t, net in enumerate(kt_model.net_teachers):
        net.register_forward_hook(
            lambda module, inputs, output, t=t: calls.append((t, inputs[0].shape[0], torch.is_grad_enabled())))
    labels = torch.tensor([2, 0, 2, 2, 0, 2])  # no sample of type 1: teacher 1 does not run
    g = torch.Generator().manual_seed(0)
    batch = {'lq': torch.rand(6, 3, 16, 16, generator=g), 'gt': torch.rand(6, 3, 16, 16, generator=g),
             'label': labels}
    kt_model.feed_data(batch)
    kt_model.optimize_parameters(1)
    assert calls == [(0, 2, False), (2, 4, False)]

    restored, feats = kt_model.teacher_targets(batch['lq'], labels)
    assert not restored.requires_grad and restored.grad_fn is None
    for i, label in enumerate(labels.tolist()):  # routing: each sample alone through its teacher
        with torch.no_grad():
            outs, f = kt_model.net_teachers[label](kt_model.to_network_range(batch['lq'][i:i + 1]),
                                                   return_feats=True, feat_layers=kt_model.feat_layers)
        torch.testing.assert_close(restored[i:i + 1], kt_model.from_network_range(outs[0]), rtol=RTOL, atol=ATOL)
        torch.testing.assert_close(feats[0][i:i + 1], f[0], rtol=RTOL, atol=ATOL)
