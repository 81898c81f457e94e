"""Tests of the contrastive losses (Eq. 2, 9 and their VGG image-grained variants).

Expected values are computed here with ``math`` from hand-picked 2-D vectors whose cosines
are known, never by calling the implementation. No test downloads anything.
"""
import logging
import math
import os

import pytest
import torch

import uniremoval  # noqa: F401  (registers the losses)
from basicsr.losses import build_loss
from basicsr.utils.registry import LOSS_REGISTRY
from uniremoval.losses import contrastive_loss as cl_module
from uniremoval.losses.contrastive_loss import (DEFAULT_LAYER_WEIGHTS, EMBEDDINGS, ContrastiveLoss,
                                                ExtendedContrastiveLoss, ExtendedImageContrastiveLoss,
                                                ImageContrastiveLoss, contrastive_loss_terms, embed_feature_maps)
from uniremoval.losses.vgg_features import default_vgg_weights_path

R2 = math.sqrt(2.0)


def neg_log_ratio(pos_cos, neg_cos, t):
    """-log(sum_p e^{s_p/t} / (sum_p e^{s_p/t} + sum_n e^{s_n/t})) in plain math."""
    num = sum(math.exp(s / t) for s in pos_cos)
    return -math.log(num / (num + sum(math.exp(s / t) for s in neg_cos)))


# ---------------------------------------------------------------------------------------------
# known answers
# ---------------------------------------------------------------------------------------------
def test_contrastive_known_answer():
    t = 0.5
    # row 0: a=(1,0); p=(3,3) -> cos 1/sqrt2; n=(0,5) -> 0, (-2,0) -> -1 (magnitudes must not matter)
    # row 1: a=(0,2); p=(0,1) -> 1;          n=(1,1) -> 1/sqrt2, (1,-1) -> -1/sqrt2
    anchor = torch.tensor([[1., 0.], [0., 2.]])
    positive = torch.tensor([[3., 3.], [0., 1.]])
    negatives = torch.tensor([[[0., 5.], [-2., 0.]], [[1., 1.], [1., -1.]]])
    expected = [neg_log_ratio([1 / R2], [0.0, -1.0], t), neg_log_ratio([1.0], [1 / R2, -1 / R2], t)]

    per_sample = ContrastiveLoss(temperature=t, reduction='none')(anchor, positive, negatives)
    assert per_sample.shape == (2, )
    assert per_sample.tolist() == pytest.approx(expected, rel=1e-5)
    mean = ContrastiveLoss(temperature=t)(anchor, positive, negatives)
    assert mean.item() == pytest.approx(sum(expected) / 2, rel=1e-5)


def test_extended_known_answer():
    t = 1.0
    # a=(1,1): positives (1,0), (0,3) -> 1/sqrt2 each, (1,1) -> 1; negatives (-1,-1) -> -1, (2,0) -> 1/sqrt2
    anchor = torch.tensor([[1., 1.]])
    positives = torch.tensor([[[1., 0.], [0., 3.], [1., 1.]]])
    negatives = torch.tensor([[[-1., -1.], [2., 0.]]])
    expected = neg_log_ratio([1 / R2, 1 / R2, 1.0], [-1.0, 1 / R2], t)
    value = ExtendedContrastiveLoss(temperature=t)(anchor, positives, negatives)
    assert value.item() == pytest.approx(expected, rel=1e-5)


def test_paper_temperature_known_answers():
    t = 1e-6
    anchor = torch.tensor([[1., 0.], [1., 0.]])
    positive = torch.tensor([[0., 1.], [1., 0.]])  # cos 0 ; cos 1
    negatives = torch.tensor([[[1., 0.]], [[0., 1.]]])  # cos 1 ; cos 0
    loss = ContrastiveLoss(temperature=t, reduction='none')(anchor, positive, negatives)
    # row 0: log(1 + e^{1e6}) = 1e6 (+ e^{-1e6}); row 1: log(1 + e^{-1e6}) = 0 in any float
    assert loss[0].item() == pytest.approx(1e6, rel=1e-6)
    assert loss[1].item() == pytest.approx(0.0, abs=1e-6)


# ---------------------------------------------------------------------------------------------
# relations between the losses
# ---------------------------------------------------------------------------------------------
def test_extended_with_one_positive_equals_plain():
    torch.manual_seed(0)
    anchor, positive, negatives = torch.randn(4, 3, 5), torch.randn(4, 3, 5), torch.randn(4, 6, 3, 5)
    neg_mask = torch.rand(4, 6) > 0.3
    for t in (1e-6, 0.07, 1.0):
        plain = ContrastiveLoss(temperature=t, reduction='none')(anchor, positive, negatives, neg_mask=neg_mask)
        ext = ExtendedContrastiveLoss(temperature=t, reduction='none')(
            anchor, positive.unsqueeze(1), negatives, neg_mask=neg_mask)
        torch.testing.assert_close(ext, plain)


def test_invariant_to_order_of_negatives_and_positives():
    torch.manual_seed(1)
    anchor, positives, negatives = torch.randn(3, 8), torch.randn(3, 4, 8), torch.randn(3, 7, 8)
    neg_mask = torch.rand(3, 7) > 0.4
    pos_mask = torch.rand(3, 4) > 0.3
    pos_mask[:, 0] = True
    loss = ExtendedContrastiveLoss(temperature=0.1, reduction='none')
    ref = loss(anchor, positives, negatives, pos_mask=pos_mask, neg_mask=neg_mask)
    perm_n, perm_p = torch.randperm(7), torch.randperm(4)
    out = loss(anchor, positives[:, perm_p], negatives[:, perm_n], pos_mask=pos_mask[:, perm_p],
               neg_mask=neg_mask[:, perm_n])
    torch.testing.assert_close(out, ref)
    plain = ContrastiveLoss(temperature=0.1, reduction='none')
    torch.testing.assert_close(
        plain(anchor, positives[:, 0], negatives[:, perm_n]), plain(anchor, positives[:, 0], negatives))


# ---------------------------------------------------------------------------------------------
# masks
# ---------------------------------------------------------------------------------------------
def test_neg_mask_equals_removing_those_negatives():
    torch.manual_seed(2)
    anchor, positive, negatives = torch.randn(3, 6), torch.randn(3, 6), torch.randn(3, 5, 6)
    neg_mask = torch.tensor([[True, False, True, True, False], [False] * 4 + [True], [True] * 5])
    loss = ContrastiveLoss(temperature=0.2, reduction='none')
    masked = loss(anchor, positive, negatives, neg_mask=neg_mask)
    for b in range(3):
        kept = negatives[b:b + 1, neg_mask[b]]
        torch.testing.assert_close(masked[b:b + 1], loss(anchor[b:b + 1], positive[b:b + 1], kept))


def test_row_without_valid_negatives_is_zero_with_finite_gradient():
    torch.manual_seed(3)
    anchor = torch.randn(2, 4, requires_grad=True)
    positive, negatives = torch.randn(2, 4), torch.randn(2, 3, 4)
    neg_mask = torch.tensor([[False, False, False], [True, False, True]])
    out = ContrastiveLoss(temperature=1e-6, reduction='none')(anchor, positive, negatives, neg_mask=neg_mask)
    assert out[0].item() == 0.0
    out.sum().backward()
    assert torch.isfinite(anchor.grad).all()
    # no negatives at all (N = 0) is the same: -log(1) = 0
    empty = ContrastiveLoss(reduction='none')(anchor, positive, torch.randn(2, 0, 4))
    assert empty.tolist() == [0.0, 0.0]


def test_pos_mask_equals_removing_those_positives_and_empty_rows_leave_the_mean():
    torch.manual_seed(4)
    anchor, positives, negatives = torch.randn(3, 6), torch.randn(3, 4, 6), torch.randn(3, 5, 6)
    pos_mask = torch.tensor([[True, False, True, False], [False, False, False, True], [False] * 4])
    loss = ExtendedContrastiveLoss(temperature=0.3, reduction='none')
    masked = loss(anchor, positives, negatives, pos_mask=pos_mask)
    for b in range(2):
        kept = positives[b:b + 1, pos_mask[b]]
        torch.testing.assert_close(masked[b:b + 1], loss(anchor[b:b + 1], kept, negatives[b:b + 1]))
    assert masked[2].item() == 0.0  # no valid positive: no loss ...
    mean = ExtendedContrastiveLoss(temperature=0.3)(anchor, positives, negatives, pos_mask=pos_mask)
    assert mean.item() == pytest.approx(masked[:2].mean().item(), rel=1e-6)  # ... and not in the mean
    anchor.requires_grad_(True)
    ExtendedContrastiveLoss(temperature=1e-6)(anchor, positives, negatives, pos_mask=pos_mask).backward()
    assert torch.isfinite(anchor.grad).all() and anchor.grad[2].abs().sum() == 0


# ---------------------------------------------------------------------------------------------
# numerics at the paper's temperature
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize('case', ['near_identical', 'opposite', 'mixed', 'zero_anchor'])
def test_finite_loss_and_gradient_at_temperature_1e_6(case):
    torch.manual_seed(5)
    base = torch.randn(2, 16)
    if case == 'near_identical':
        anchor, positive, negatives = base, base + 1e-7, torch.stack([base * (1 + 1e-6), base - 1e-7], 1)
    elif case == 'opposite':
        anchor, positive, negatives = base, -base, torch.stack([-base, -2 * base], 1)
    elif case == 'mixed':
        anchor, positive, negatives = base, -base, torch.stack([base + 1e-7, base], 1)
    else:
        anchor, positive, negatives = torch.zeros(2, 16), base, torch.stack([-base, base], 1)
    anchor = anchor.clone().requires_grad_(True)
    positive = positive.clone().requires_grad_(True)
    negatives = negatives.clone().requires_grad_(True)
    plain = ContrastiveLoss(temperature=1e-6)(anchor, positive, negatives)
    ext = ExtendedContrastiveLoss(temperature=1e-6)(anchor, torch.stack([positive, -positive], 1), negatives)
    (plain + ext).backward()
    assert torch.isfinite(plain) and torch.isfinite(ext)
    for x in (anchor, positive, negatives):
        assert torch.isfinite(x.grad).all()
    assert plain.item() >= 0 and ext.item() >= 0


def test_low_precision_inputs_are_computed_in_float32():
    torch.manual_seed(6)
    anchor, positive, negatives = torch.randn(2, 8), torch.randn(2, 8), torch.randn(2, 3, 8)
    loss = ContrastiveLoss(temperature=0.5)
    ref = loss(anchor, positive, negatives)
    low = loss(anchor.bfloat16(), positive.bfloat16(), negatives.bfloat16())
    assert low.dtype == torch.float32
    assert low.item() == pytest.approx(ref.item(), rel=2e-2)


def test_shared_expanded_inputs_give_the_same_result():
    torch.manual_seed(7)
    anchor, clear, degraded = torch.randn(3, 2, 4), torch.randn(5, 2, 4), torch.randn(4, 2, 4)
    pos, neg = clear.unsqueeze(0).expand(3, -1, -1, -1), degraded.unsqueeze(0).expand(3, -1, -1, -1)
    assert pos.stride(0) == 0
    loss = ExtendedContrastiveLoss(temperature=0.1, reduction='none')
    torch.testing.assert_close(loss(anchor, pos, neg), loss(anchor, pos.contiguous(), neg.contiguous()))


# ---------------------------------------------------------------------------------------------
# options, reduction, registry
# ---------------------------------------------------------------------------------------------
def test_reductions_and_loss_weight():
    torch.manual_seed(8)
    anchor, positives, negatives = torch.randn(4, 5), torch.randn(4, 2, 5), torch.randn(4, 3, 5)
    for cls, pos in ((ContrastiveLoss, positives[:, 0]), (ExtendedContrastiveLoss, positives)):
        none = cls(temperature=0.5, reduction='none')(anchor, pos, negatives)
        assert none.shape == (4, )
        assert cls(temperature=0.5, reduction='mean')(anchor, pos, negatives).item() == pytest.approx(
            none.mean().item(), rel=1e-6)
        assert cls(temperature=0.5, reduction='sum')(anchor, pos, negatives).item() == pytest.approx(
            none.sum().item(), rel=1e-6)
        weighted = cls(loss_weight=0.25, temperature=0.5, reduction='none')(anchor, pos, negatives)
        torch.testing.assert_close(weighted, 0.25 * none)
    with pytest.raises(ValueError, match='reduction'):
        ContrastiveLoss(reduction='max')
    with pytest.raises(ValueError, match='temperature'):
        ContrastiveLoss(temperature=0)


def test_shape_errors():
    loss = ExtendedContrastiveLoss()
    with pytest.raises(ValueError, match='negatives'):
        loss(torch.randn(2, 4), torch.randn(2, 1, 4), torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match='positives'):
        loss(torch.randn(2, 4), torch.randn(3, 1, 4), torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match='neg_mask'):
        loss(torch.randn(2, 4), torch.randn(2, 1, 4), torch.randn(2, 3, 4), neg_mask=torch.ones(2, 2, dtype=bool))
    with pytest.raises(TypeError, match='bool'):
        loss(torch.randn(2, 4), torch.randn(2, 1, 4), torch.randn(2, 3, 4), neg_mask=torch.ones(2, 3))


def test_registry_round_trip():
    for name in ('ContrastiveLoss', 'ExtendedContrastiveLoss', 'ImageContrastiveLoss', 'ExtendedImageContrastiveLoss'):
        assert name in LOSS_REGISTRY
    loss = build_loss({'type': 'ContrastiveLoss', 'loss_weight': 0.1, 'temperature': 0.5, 'reduction': 'sum'})
    assert isinstance(loss, ContrastiveLoss)
    assert (loss.loss_weight, loss.temperature, loss.reduction) == (0.1, 0.5, 'sum')
    ext = build_loss({'type': 'ExtendedContrastiveLoss', 'temperature': 1e-6})
    assert isinstance(ext, ExtendedContrastiveLoss) and ext.temperature == 1e-6
    anchor = torch.tensor([[1., 0.]])
    value = loss(anchor, torch.tensor([[1., 1.]]), torch.tensor([[[0., 1.]]]))
    assert value.item() == pytest.approx(0.1 * neg_log_ratio([1 / R2], [0.0], 0.5), rel=1e-5)


# ---------------------------------------------------------------------------------------------
# embeddings of the feature maps (option `embedding`)
# ---------------------------------------------------------------------------------------------
CONTENT_FREE = ('pooled', 'stats', 'gram')


def test_embedding_known_answers():
    # one 1x2x2x2 map: channel 0 = [[1, 2], [3, 4]], channel 1 = [[0, 0], [2, 2]]
    x = torch.tensor([[[[1., 2.], [3., 4.]], [[0., 0.], [2., 2.]]]])
    assert embed_feature_maps(x, 'flatten').tolist() == [[1., 2., 3., 4., 0., 0., 2., 2.]]
    assert embed_feature_maps(x, 'pooled').tolist() == [[2.5, 1.0]]
    # stats: means, then POPULATION stds (unbiased=False): var0 = (2.25+.25+.25+2.25)/4 = 1.25, var1 = 1
    stats = embed_feature_maps(x, 'stats')
    assert stats.shape == (1, 4)
    assert stats[0].tolist() == pytest.approx([2.5, 1.0, math.sqrt(1.25), 1.0], abs=1e-6)
    # gram: F F^T / HW with F = [[1,2,3,4],[0,0,2,2]]: [[30, 14], [14, 8]] / 4
    assert embed_feature_maps(x, 'gram').tolist() == [[7.5, 3.5, 3.5, 2.0]]
    # a batch is embedded row by row; low precision is embedded in float32
    two = torch.cat([x, 2 * x])
    torch.testing.assert_close(embed_feature_maps(two, 'gram')[1], 4 * embed_feature_maps(x, 'gram')[0])
    assert embed_feature_maps(x.bfloat16(), 'stats').dtype == torch.float32


def test_default_embedding_is_todays_flattened_cosine_exactly():
    torch.manual_seed(10)
    anchor, positives, negatives = torch.randn(3, 4, 5, 6), torch.randn(3, 2, 4, 5, 6), torch.randn(3, 5, 4, 5, 6)
    neg_mask = torch.rand(3, 5) > 0.3
    for t in (1e-6, 0.1):
        ref, _ = contrastive_loss_terms(anchor.flatten(1), positives.flatten(2), negatives.flatten(2), t,
                                        neg_mask=neg_mask)
        for kwargs in ({}, {'embedding': 'flatten'}):
            ext = ExtendedContrastiveLoss(temperature=t, reduction='none', **kwargs)
            assert torch.equal(ext(anchor, positives, negatives, neg_mask=neg_mask), ref)
            plain = ContrastiveLoss(temperature=t, reduction='none', **kwargs)
            ref1, _ = contrastive_loss_terms(anchor.flatten(1), positives[:, :1].flatten(2), negatives.flatten(2), t,
                                             neg_mask=neg_mask)
            assert torch.equal(plain(anchor, positives[:, 0], negatives, neg_mask=neg_mask), ref1)
    assert ContrastiveLoss().embedding == 'flatten' and untrained(ImageContrastiveLoss).embedding == 'flatten'


@pytest.mark.parametrize('embedding', CONTENT_FREE)
def test_content_free_embedding_equals_the_loss_on_the_hand_made_statistics(embedding):
    torch.manual_seed(11)
    anchor, positives, negatives = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 3, 4, 5), torch.randn(2, 2, 3, 4, 5)

    def hand(x):  # (..., C, H, W) -> (..., D) written out independently of the implementation
        f = x.flatten(-2)
        mean = f.mean(-1)
        if embedding == 'pooled':
            return mean
        if embedding == 'stats':
            return torch.cat([mean, f.var(-1, unbiased=False).sqrt()], dim=-1)
        return (f @ f.transpose(-1, -2) / f.shape[-1]).flatten(-2)

    loss = ExtendedContrastiveLoss(temperature=0.2, reduction='none', embedding=embedding)
    value = loss(anchor, positives, negatives)
    reference = ExtendedContrastiveLoss(temperature=0.2, reduction='none')
    expected = reference(hand(anchor), hand(positives), hand(negatives))
    torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-6)


def permute_positions(x, generator):
    """Shuffle the H*W positions of every map of x (..., C, H, W) with one random permutation."""
    perm = torch.randperm(x.shape[-2] * x.shape[-1], generator=generator)
    return x.flatten(-2)[..., perm].reshape(x.shape)


@pytest.mark.parametrize('embedding', EMBEDDINGS)
def test_content_free_embeddings_ignore_where_things_are(embedding):
    torch.manual_seed(12)
    anchor, positives, negatives = torch.randn(3, 4, 5, 5), torch.randn(3, 2, 4, 5, 5), torch.randn(3, 3, 4, 5, 5)
    gen = torch.Generator().manual_seed(0)
    moved = [permute_positions(x, gen) for x in (anchor, positives, negatives)]  # each its own permutation
    for loss, pos, moved_pos in ((ContrastiveLoss, positives[:, 0], moved[1][:, 0]),
                                 (ExtendedContrastiveLoss, positives, moved[1])):
        fn = loss(temperature=0.5, reduction='none', embedding=embedding)
        ref, out = fn(anchor, pos, negatives), fn(moved[0], moved_pos, moved[2])
        if embedding == 'flatten':
            assert (out - ref).abs().max() > 1e-2  # the paper's reading compares content position by position
        else:
            torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('embedding', EMBEDDINGS)
def test_shared_sets_are_embedded_once(embedding, monkeypatch):
    torch.manual_seed(13)
    anchor, clear, degraded = torch.randn(3, 2, 4, 4), torch.randn(5, 2, 4, 4), torch.randn(4, 2, 4, 4)
    pos, neg = clear.unsqueeze(0).expand(3, -1, -1, -1, -1), degraded.unsqueeze(0).expand(3, -1, -1, -1, -1)
    loss = ExtendedContrastiveLoss(temperature=0.1, reduction='none', embedding=embedding)
    seen = []
    real = cl_module.embed_feature_maps

    def counting(x, emb):
        seen.append(x.shape[0])
        return real(x, emb)

    monkeypatch.setattr(cl_module, 'embed_feature_maps', counting)
    shared = loss(anchor, pos, neg)
    if embedding != 'flatten':
        assert seen == [3, 5, 4]  # the anchors, then the 5 clear and 4 degraded maps once each, not 3x
        seen.clear()
        materialised = loss(anchor, pos.contiguous(), neg.contiguous())
        assert seen == [3, 15, 12]
    else:
        materialised = loss(anchor, pos.contiguous(), neg.contiguous())
    torch.testing.assert_close(shared, materialised)


@pytest.mark.parametrize('embedding', CONTENT_FREE)
def test_content_free_embeddings_finite_at_temperature_1e_6_even_for_constant_maps(embedding):
    torch.manual_seed(14)
    anchor = torch.randn(2, 3, 4, 4)
    anchor[0] = 1.5  # constant maps: std 0 (stats) must still have a finite gradient
    anchor = anchor.requires_grad_(True)
    positives = torch.randn(2, 2, 3, 4, 4).requires_grad_(True)
    negatives = torch.randn(2, 3, 3, 4, 4).requires_grad_(True)
    value = ExtendedContrastiveLoss(temperature=1e-6, embedding=embedding)(anchor, positives, negatives)
    value.backward()
    assert torch.isfinite(value) and value.item() >= 0
    for x in (anchor, positives, negatives):
        assert torch.isfinite(x.grad).all()


def test_bad_embedding_values_and_shapes_raise():
    for cls in (ContrastiveLoss, ExtendedContrastiveLoss):
        with pytest.raises(ValueError, match="'flatten', 'pooled', 'stats', 'gram'"):
            cls(embedding='mean')
    with pytest.raises(ValueError, match='Unsupported embedding'):
        untrained(ExtendedImageContrastiveLoss, embedding='Gram')
    with pytest.raises(ValueError, match='Unsupported embedding'):
        build_loss({'type': 'ExtendedContrastiveLoss', 'embedding': None})
    with pytest.raises(ValueError, match='Unsupported embedding'):
        contrastive_loss_terms(torch.randn(2, 4), torch.randn(2, 1, 4), torch.randn(2, 3, 4), 0.1, embedding='avg')
    for embedding in CONTENT_FREE:  # vectors have no spatial positions to summarise
        with pytest.raises(ValueError, match=rf"'{embedding}'.*\(2, 4\)"):
            ContrastiveLoss(embedding=embedding)(torch.randn(2, 4), torch.randn(2, 4), torch.randn(2, 3, 4))
        with pytest.raises(ValueError, match=rf"'{embedding}'.*\(2, 4, 5\)"):
            ExtendedContrastiveLoss(embedding=embedding)(torch.randn(2, 4, 5), torch.randn(2, 1, 4, 5),
                                                         torch.randn(2, 3, 4, 5))
    # 'flatten' keeps accepting vectors
    assert torch.isfinite(ContrastiveLoss()(torch.randn(2, 4), torch.randn(2, 4), torch.randn(2, 3, 4)))


# ---------------------------------------------------------------------------------------------
# image-grained losses (VGG)
# ---------------------------------------------------------------------------------------------
# torchvision vgg19 `features` indices of the convolutions up to conv5_1
VGG19_CONV_INDEX = {'conv1_1': 0, 'conv1_2': 2, 'conv2_1': 5, 'conv2_2': 7, 'conv3_1': 10, 'conv3_2': 12,
                    'conv3_3': 14, 'conv3_4': 16, 'conv4_1': 19, 'conv4_2': 21, 'conv4_3': 23, 'conv4_4': 25,
                    'conv5_1': 28}


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError('a test tried to download')

    monkeypatch.setattr(torch.hub, 'load_state_dict_from_url', refuse)
    monkeypatch.setattr(torch.hub, 'download_url_to_file', refuse)


@pytest.fixture(scope='module')
def vgg19_weights_file(tmp_path_factory):
    """A random vgg19 state dict in torchvision's layout, saved like the ImageNet file."""
    import torchvision

    torch.manual_seed(123)
    state = torchvision.models.vgg19(weights=None).state_dict()
    path = tmp_path_factory.mktemp('vgg') / 'vgg19-random.pth'
    torch.save(state, str(path))
    return path, {k: v for k, v in state.items() if k.startswith('features.')}


def untrained(cls, **kwargs):
    torch.manual_seed(0)
    return cls(pretrained=False, **kwargs)


def images(*shape):
    return torch.rand(*shape, 3, 16, 16)


def test_default_layer_weights():
    loss = untrained(ImageContrastiveLoss)
    assert dict(loss.layer_weights) == dict(DEFAULT_LAYER_WEIGHTS)
    assert list(loss.layer_weights) == ['relu1_1', 'relu2_1', 'relu3_1', 'relu4_1', 'relu5_1']
    assert list(loss.layer_weights.values()) == [1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0]


def test_image_loss_gradient_reaches_anchor_not_vgg():
    loss = untrained(ExtendedImageContrastiveLoss, temperature=1e-6)
    loss.train()  # a training loop may do this: the VGG must stay frozen in eval mode
    assert not loss.vgg.training
    assert all(not p.requires_grad for p in loss.vgg.parameters())
    anchor = images(2).requires_grad_(True)
    value = loss(anchor, images(2, 3), images(2, 2))
    value.backward()
    assert torch.isfinite(value)
    assert anchor.grad is not None and torch.isfinite(anchor.grad).all() and anchor.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss.vgg.parameters())


@pytest.mark.parametrize('embedding', EMBEDDINGS)
def test_image_loss_is_the_weighted_sum_of_per_layer_losses(embedding):
    weights = {'relu1_1': 0.5, 'relu2_1': 2.0}
    loss = untrained(
        ExtendedImageContrastiveLoss, temperature=0.1, reduction='none', layer_weights=weights, embedding=embedding)
    anchor, positives, negatives = images(2), images(2, 3), images(2, 4)
    neg_mask = torch.tensor([[True, False, True, True], [False, True, True, False]])
    value = loss(anchor, positives, negatives, neg_mask=neg_mask)

    # the embedding is applied to every VGG layer's map separately
    per_layer = ExtendedContrastiveLoss(temperature=0.1, reduction='none', embedding=embedding)
    with torch.no_grad():
        fa, fp, fn = loss.vgg(anchor), loss.vgg(positives.flatten(0, 1)), loss.vgg(negatives.flatten(0, 1))
    expected = sum(
        w * per_layer(fa[k], fp[k].reshape(2, 3, *fp[k].shape[1:]), fn[k].reshape(2, 4, *fn[k].shape[1:]),
                      neg_mask=neg_mask) for k, w in weights.items())
    torch.testing.assert_close(value, expected, rtol=1e-4, atol=1e-5)


def test_extended_image_loss_with_one_positive_equals_image_loss():
    plain = untrained(ImageContrastiveLoss, temperature=0.05, layer_weights={'relu1_1': 1.0, 'relu3_1': 0.5})
    ext = untrained(ExtendedImageContrastiveLoss, temperature=0.05, layer_weights={'relu1_1': 1.0, 'relu3_1': 0.5})
    anchor, positive, negatives = images(2), images(2), images(2, 3)
    torch.testing.assert_close(ext(anchor, positive.unsqueeze(1), negatives), plain(anchor, positive, negatives))


def test_vgg_called_once_per_forward_with_all_images_batched():
    loss = untrained(ExtendedImageContrastiveLoss, temperature=1e-6)
    batch_sizes = []
    loss.vgg.register_forward_hook(lambda module, inputs, output: batch_sizes.append(inputs[0].shape[0]))
    loss(images(2), images(2, 3), images(2, 4))
    assert batch_sizes == [2 + 2 * 3 + 2 * 4]
    # a batch of clear images shared by every anchor (expand) goes through VGG once
    batch_sizes.clear()
    shared = images(3).unsqueeze(0).expand(2, -1, -1, -1, -1)
    negatives = images(2, 4)
    value = loss(images(2), shared, negatives)
    assert batch_sizes == [2 + 3 + 2 * 4] and torch.isfinite(value)
    plain = untrained(ImageContrastiveLoss)
    calls = []
    plain.vgg.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape[0]))
    plain(images(2), images(2), images(2, 3))
    assert calls == [2 + 2 + 2 * 3]


def test_shared_positives_match_materialised_positives():
    loss = untrained(ExtendedImageContrastiveLoss, temperature=0.1, reduction='none')
    anchor, clear, negatives = images(2), images(3), images(2, 2)
    shared = clear.unsqueeze(0).expand(2, -1, -1, -1, -1)
    torch.testing.assert_close(
        loss(anchor, shared, negatives), loss(anchor, shared.contiguous(), negatives), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('embedding', EMBEDDINGS)
def test_image_losses_accept_every_embedding_finite_at_temperature_1e_6(embedding):
    # 16x16 images: relu5_1 is 1x1, a constant map (std 0 for 'stats')
    torch.manual_seed(0)  # fixes the untrained VGG weights
    ext = build_loss({'type': 'ExtendedImageContrastiveLoss', 'embedding': embedding, 'pretrained': False,
                      'temperature': 1e-6})
    plain = untrained(ImageContrastiveLoss, temperature=1e-6, embedding=embedding)
    assert ext.embedding == embedding and plain.embedding == embedding and f"embedding='{embedding}'" in repr(ext)
    anchor = images(2).requires_grad_(True)
    shared = images(3).unsqueeze(0).expand(2, -1, -1, -1, -1)
    value = ext(anchor, shared, images(2, 2)) + plain(anchor, images(2), images(2, 3))
    value.backward()
    assert torch.isfinite(value) and value.item() >= 0
    assert torch.isfinite(anchor.grad).all() and anchor.grad.abs().sum() > 0


def test_image_loss_flatten_embedding_is_the_default_exactly():
    anchor, positives, negatives = images(2), images(2, 2), images(2, 3)
    default = untrained(ExtendedImageContrastiveLoss, temperature=0.1, reduction='none')
    flatten = untrained(ExtendedImageContrastiveLoss, temperature=0.1, reduction='none', embedding='flatten')
    assert torch.equal(default(anchor, positives, negatives), flatten(anchor, positives, negatives))
    stats = untrained(ExtendedImageContrastiveLoss, temperature=0.1, reduction='none', embedding='stats')
    assert not torch.allclose(stats(anchor, positives, negatives), default(anchor, positives, negatives))


def test_untrained_vgg_logs_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger='basicsr'):
        untrained(ImageContrastiveLoss)
    assert any(r.levelno == logging.WARNING and 'UNTRAINED' in r.getMessage() for r in caplog.records)


def test_pretrained_without_weights_file_raises(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path / 'hub'))
    hub_file = os.path.join(str(tmp_path / 'hub'), 'checkpoints', 'vgg19-dcbb9e9d.pth')
    assert default_vgg_weights_path('vgg19') == hub_file
    with pytest.raises(FileNotFoundError) as err:
        ImageContrastiveLoss()
    message = str(err.value)
    assert hub_file in message and 'vgg19-dcbb9e9d.pth' in message and 'VGG19_Weights.IMAGENET1K_V1' in message
    assert 'vgg_weights_path' in message and 'pretrained: false' in message
    missing = str(tmp_path / 'nowhere' / 'vgg19.pth')
    with pytest.raises(FileNotFoundError, match='nowhere'):
        build_loss({'type': 'ExtendedImageContrastiveLoss', 'vgg_weights_path': missing})


def test_pretrained_loads_torchvision_layout_weights(vgg19_weights_file, monkeypatch, tmp_path):
    path, features = vgg19_weights_file
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path / 'empty_hub'))
    loss = build_loss({'type': 'ImageContrastiveLoss', 'vgg_weights_path': str(path)})
    net = loss.vgg.vgg_net
    for name, index in VGG19_CONV_INDEX.items():
        torch.testing.assert_close(getattr(net, name).weight, features[f'features.{index}.weight'], rtol=0, atol=0)
        torch.testing.assert_close(getattr(net, name).bias, features[f'features.{index}.bias'], rtol=0, atol=0)
    assert not hasattr(net, 'conv5_2')  # only the layers up to the deepest requested one
    assert not loss.vgg.training and all(not p.requires_grad for p in loss.vgg.parameters())


def test_pretrained_loads_from_the_torch_hub_cache(vgg19_weights_file, monkeypatch, tmp_path):
    path, features = vgg19_weights_file
    hub = tmp_path / 'hub'
    (hub / 'checkpoints').mkdir(parents=True)
    os.symlink(path, hub / 'checkpoints' / 'vgg19-dcbb9e9d.pth')
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(hub))
    loss = ExtendedImageContrastiveLoss(layer_weights={'relu2_1': 1.0})
    torch.testing.assert_close(loss.vgg.vgg_net.conv2_1.weight, features['features.5.weight'], rtol=0, atol=0)


def test_basicsr_relative_pretrain_path_is_ignored(monkeypatch, tmp_path):
    """BasicSR's extractor would torch.load experiments/pretrained_models/vgg19-dcbb9e9d.pth if present."""
    bogus = tmp_path / 'experiments' / 'pretrained_models'
    bogus.mkdir(parents=True)
    (bogus / 'vgg19-dcbb9e9d.pth').write_bytes(b'not a checkpoint')
    monkeypatch.chdir(tmp_path)
    loss = untrained(ImageContrastiveLoss, layer_weights={'relu1_1': 1.0})
    assert torch.isfinite(loss(images(1), images(1), images(1, 2)))
