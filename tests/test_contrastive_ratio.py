"""The ratio reading of Eq. 2 (``formulation: ratio``, TSKL's L1 ratio) and ``detach_negatives``.

Expected values are hand-computed from small tensors, never by calling the implementation.
"""
import pytest
import torch
from torch import nn

import uniremoval  # noqa: F401  (registers the losses)
from uniremoval.losses.contrastive_loss import (ContrastiveLoss, ExtendedContrastiveLoss, ImageContrastiveLoss,
                                                ratio_loss_terms)


def test_ratio_one_positive_two_negatives_known_answer():
    # a=(1,3); p=(1,1): |0|+|2| -> d=1; n1=(3,3): d=1, n2=(1,-1): d=2 -> mean 1.5; L = 1 / (1.5 + 0.5)
    anchor = torch.tensor([[1., 3.]])
    positive = torch.tensor([[1., 1.]])
    negatives = torch.tensor([[[3., 3.], [1., -1.]]])
    loss = ContrastiveLoss(temperature=0.5, formulation='ratio', reduction='none')(anchor, positive, negatives)
    assert loss.tolist() == pytest.approx([0.5])


def test_ratio_masks_and_several_positives_known_answer():
    # a=(0,0); positives (2,0) d=1, (0,4) d=2 -> mean 1.5 (the second masked out in row 1: 1.0)
    # negatives (4,4) d=4, (2,2) d=2; neg_mask keeps only the second in both rows
    anchor = torch.zeros(2, 2)
    positives = torch.tensor([[[2., 0.], [0., 4.]]] * 2)
    negatives = torch.tensor([[[4., 4.], [2., 2.]]] * 2)
    pos_mask = torch.tensor([[True, True], [True, False]])
    neg_mask = torch.tensor([[False, True], [False, True]])
    loss, valid = ratio_loss_terms(anchor, positives, negatives, 1e-6, pos_mask, neg_mask)
    assert loss.tolist() == pytest.approx([1.5 / (2 + 1e-6), 1.0 / (2 + 1e-6)])
    assert valid.tolist() == [True, True]
    mean = ExtendedContrastiveLoss(temperature=1e-6, formulation='ratio')(anchor, positives, negatives, pos_mask,
                                                                          neg_mask)
    assert mean.item() == pytest.approx((1.5 + 1.0) / 2 / (2 + 1e-6))


def test_ratio_row_without_negatives_is_zero():
    loss, _ = ratio_loss_terms(torch.zeros(1, 2), torch.ones(1, 1, 2), torch.ones(1, 1, 2), 1e-6,
                               neg_mask=torch.tensor([[False]]))
    assert loss.tolist() == [0.0]


class TwoLayers(nn.Module):
    """A stand-in for VGG: 'l1' is the image itself, 'l2' the image times 2 summed over channels."""

    def forward(self, x):
        return {'l1': x, 'l2': 2 * x.sum(dim=1, keepdim=True)}


def test_ratio_image_grained_two_layer_known_answer():
    # images 1x1 px, 2 channels: a=(1,0), p=(0,0), n=(3,0)
    # l1: d(a,p) = (1+0)/2 = 0.5, d(a,n) = (2+0)/2 = 1  -> 0.5 / (1 + 0.5) = 1/3
    # l2: a -> 2, p -> 0, n -> 6: d(a,p) = 2, d(a,n) = 4 -> 2 / (4 + 0.5) = 4/9
    # L = 0.25 * 1/3 + 1.0 * 4/9
    loss = ImageContrastiveLoss(temperature=0.5, formulation='ratio', pretrained=False,
                                layer_weights={'relu1_1': 0.25, 'relu2_1': 1.0})
    loss.vgg = TwoLayers()
    loss.layer_weights = {'l1': 0.25, 'l2': 1.0}
    a = torch.tensor([1., 0.]).view(1, 2, 1, 1)
    p = torch.zeros(1, 2, 1, 1)
    n = torch.tensor([3., 0.]).view(1, 1, 2, 1, 1)
    assert loss(a, p, n).item() == pytest.approx(0.25 / 3 + 4 / 9)


def test_infonce_stays_the_default():
    loss = ContrastiveLoss()
    assert (loss.formulation, loss.detach_negatives) == ('infonce', False)
    with pytest.raises(ValueError, match='formulation'):
        ContrastiveLoss(formulation='hinge')


@pytest.mark.parametrize('formulation', ['infonce', 'ratio'])
def test_detach_negatives_stops_their_gradient(formulation):
    anchor = torch.tensor([[1., 0.5]], requires_grad=True)
    negatives = torch.tensor([[[0.2, 1.], [1., -1.]]], requires_grad=True)
    positive = torch.tensor([[0.9, 0.4]])
    ContrastiveLoss(temperature=0.5, formulation=formulation)(anchor, positive, negatives).backward()
    assert negatives.grad.abs().sum() > 0  # default: the negatives get a gradient
    g_anchor = anchor.grad.clone()
    anchor.grad, negatives.grad = None, None
    detached = ContrastiveLoss(temperature=0.5, formulation=formulation, detach_negatives=True)
    detached(anchor, positive, negatives).backward()
    assert negatives.grad is None
    assert torch.equal(anchor.grad, g_anchor)  # same value and anchor gradient, only the negatives' is cut
