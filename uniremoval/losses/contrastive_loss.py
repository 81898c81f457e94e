"""Contrastive losses of Uni-Removal (arXiv:2307.05075, Sec. III-B to III-D), in ``LOSS_REGISTRY``.

* :class:`ContrastiveLoss`: Eq. 2 on tensors (one positive per anchor); on network features, Eq. 3.
* :class:`ExtendedContrastiveLoss`: Eq. 9 (a batch of weakly correlated positives per anchor); Eq. 10.
* :class:`ImageContrastiveLoss`, :class:`ExtendedImageContrastiveLoss`: the same on VGG-19 feature
  maps of images (the ``G`` of Eq. 2; :mod:`uniremoval.losses.vgg_features`), one weighted term per
  layer: the image-grained losses of Eq. 4 and Eq. 11.

Eq. 2, anchor ``a``, positive ``p``, negatives ``n``, cosine similarity ``s``, temperature ``t``
(the paper's ``1e-6``)::

    L = -log( exp(s(a,p)/t) / (exp(s(a,p)/t) + sum_n exp(s(a,n)/t)) )

Eq. 9 (its symbols are lost from the paper's text), with every positive in the numerator, so that
``P = 1`` is exactly Eq. 2 (why not the SupCon average: docs/design.md, "Extended contrastive loss")::

    L = -log( sum_p exp(s(a,p)/t) / (sum_p exp(s(a,p)/t) + sum_n exp(s(a,n)/t)) )

computed as ``logsumexp(all) - logsumexp(positives)`` of logits shifted by the detached largest
positive cosine, in float32 at least, so ``t = 1e-6`` stays finite. ``embedding`` turns each map into
the vector ``s`` compares: ``'flatten'`` (default, the paper's reading), or the content-independent
``'pooled'``, ``'stats'`` and ``'gram'`` (:func:`embed_feature_maps`; docs/design.md,
"Contrastive embeddings"). Masks ``neg_mask`` (B, N) and ``pos_mask`` (B, P) are bool, False =
excluded; a row without valid negatives has loss 0, a row without valid positives contributes 0 and
is left out of the ``'mean'``. Gradients reach every input that requires them: detach fixed targets.

``formulation: ratio`` is the other reading of the lost Eq. 2 body: TSKL's (Chen et al., CVPR 2022)
multi-contrastive regularisation, an L1 ratio ``d(a,p) / (d(a,n) + eps)`` with ``d`` the mean absolute
difference. With several positives and negatives (the k types give several) this module defines it as
``mean_p d(a,p) / (mean_n d(a,n) + t)``: the ``temperature`` value is read as the ratio's epsilon (the
paper's ``1e-6``). TSKL's released code (models/MCR.py, HCRLoss) takes the mean L1 over all
anchor-negative pairs as ``d(a,n)``, as here, but one ratio of batch means with eps 1e-7 and detached
negatives; here each sample has its own ratio, averaged by ``reduction``. ``detach_negatives: true``
stops the gradient through the negatives (network outputs in the FCL and EFCL; the paper does not say;
default False; the positives are detached by the models).
"""
import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from basicsr.utils.registry import LOSS_REGISTRY
from uniremoval.losses.vgg_features import build_vgg_feature_extractor

__all__ = [
    'ContrastiveLoss', 'ExtendedContrastiveLoss', 'ImageContrastiveLoss', 'ExtendedImageContrastiveLoss',
    'contrastive_loss_terms', 'ratio_loss_terms', 'embed_feature_maps', 'DEFAULT_LAYER_WEIGHTS', 'EMBEDDINGS',
    'FORMULATIONS'
]

_REDUCTIONS = ('none', 'mean', 'sum')
# how each feature map becomes the vector of the cosine similarity (see embed_feature_maps)
EMBEDDINGS = ('flatten', 'pooled', 'stats', 'gram')
# the two readings of Eq. 2: cosine InfoNCE (default) or TSKL's L1 ratio (see the module docstring)
FORMULATIONS = ('infonce', 'ratio')
_STD_EPS = 1e-8  # 'stats': std = sqrt(var + eps), finite gradient for constant maps

# Weights of the VGG-19 layers in the image-grained losses, as in the common contrastive
# regularisation practice for restoration (deeper, more semantic layers weigh more).
DEFAULT_LAYER_WEIGHTS = OrderedDict([('relu1_1', 1 / 32), ('relu2_1', 1 / 16), ('relu3_1', 1 / 8),
                                     ('relu4_1', 1 / 4), ('relu5_1', 1.0)])


# ----------------------------------------------------------------------------------------------
# core: per-sample contrastive terms
# ----------------------------------------------------------------------------------------------
def _is_shared(x):
    """True if ``x`` (B, K, ...) is one (K, ...) block expanded over the batch (stride 0)."""
    return x.dim() >= 2 and x.shape[0] > 1 and x.stride(0) == 0


def _as_float(x):
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _unit_rows(x, eps):
    """L2-normalise (in float32 at least) the last dim of (B, K, D); a shared x is normalised once."""
    if _is_shared(x):
        return F.normalize(_as_float(x[0]), dim=-1, eps=eps).expand(x.shape)
    return F.normalize(_as_float(x), dim=-1, eps=eps)


def _cosines(a, x):
    """Cosines (B, K) between unit anchors a (B, D) and unit rows x (B, K, D)."""
    if _is_shared(x):
        return a @ x[0].transpose(0, 1)
    return torch.einsum('bd,bkd->bk', a, x)


def _check_mask(mask, shape, name):
    if mask is None:
        return None
    if mask.dtype != torch.bool:
        raise TypeError(f'{name} must be a bool tensor, got {mask.dtype}')
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f'{name} must have shape {tuple(shape)}, got {tuple(mask.shape)}')
    return mask


def _check_shapes(anchor, positives, negatives):
    if anchor.dim() < 2:
        raise ValueError(f'anchor must be (B, ...) with at least one feature dim, got {tuple(anchor.shape)}')
    batch, item = anchor.shape[0], tuple(anchor.shape[1:])
    for name, x in (('positives', positives), ('negatives', negatives)):
        if x.dim() != anchor.dim() + 1 or x.shape[0] != batch or tuple(x.shape[2:]) != item:
            raise ValueError(f'{name} must have shape (B, K, *anchor.shape[1:]) = ({batch}, K, '
                             f'{", ".join(map(str, item))}), got {tuple(x.shape)}')
    if positives.shape[1] == 0:
        raise ValueError('at least one positive per anchor is needed')


def _check_embedding(embedding):
    if embedding not in EMBEDDINGS:
        raise ValueError(f'Unsupported embedding: {embedding!r}. Supported ones are: {EMBEDDINGS}')
    return embedding


def embed_feature_maps(x, embedding):
    """Embed feature maps (N, C, H, W) (or (N, C, *spatial)) into vectors (N, D), in float32 at least.

    The vector whose cosine similarity is the ``s`` of Eq. 2 and Eq. 9:

    * 'flatten': the whole map, D = C*H*W (the paper's reading).
    * 'pooled': per-channel mean over the spatial positions, D = C.
    * 'stats': per-channel mean, then per-channel population std (``unbiased=False``, as
      ``sqrt(var + 1e-8)``) over the spatial positions, D = 2C (AdaIN statistics).
    * 'gram': Gram matrix ``F F^T / (H W)`` of ``F = x.reshape(C, H*W)``, flattened, D = C*C (Gatys et al.).

    Args:
        x (Tensor): (N, C, ...); at least 4-D for 'pooled', 'stats' and 'gram'.
        embedding (str): one of ``EMBEDDINGS``.

    Returns:
        Tensor: (N, D).
    """
    _check_embedding(embedding)
    x = _as_float(x)
    if embedding == 'flatten':
        return x.flatten(1)
    if x.dim() < 4:
        raise ValueError(f'embedding {embedding!r} needs feature maps (N, C, H, W) with at least 4 dims, '
                         f'got shape {tuple(x.shape)}')
    num, channels = x.shape[0], x.shape[1]
    f = x.flatten(2)  # (N, C, HW)
    if embedding == 'pooled':
        return f.mean(dim=2)
    if embedding == 'stats':
        mean = f.mean(dim=2, keepdim=True)
        std = ((f - mean).square().mean(dim=2) + _STD_EPS).sqrt()
        return torch.cat([mean.squeeze(2), std], dim=1)
    gram = torch.bmm(f, f.transpose(1, 2)) / f.shape[2]  # 'gram'
    return gram.reshape(num, channels * channels)


def _embed_set(x, embedding):
    """Embed a set (B, K, C, ...) into (B, K, D); a shared (expanded) set is embedded once."""
    if _is_shared(x):
        e = embed_feature_maps(x[0], embedding)
        return e.unsqueeze(0).expand(x.shape[0], *e.shape)
    e = embed_feature_maps(x.reshape(x.shape[0] * x.shape[1], *x.shape[2:]), embedding)
    return e.reshape(x.shape[0], x.shape[1], e.shape[1])


def _check_inputs(anchor, positives, negatives, pos_mask, neg_mask, embedding):
    """The checks both forms of Eq. 2 share: (batch, num_pos, num_neg, pos_mask, neg_mask), masks checked."""
    _check_shapes(anchor, positives, negatives)
    batch, num_pos, num_neg = anchor.shape[0], positives.shape[1], negatives.shape[1]
    pos_mask = _check_mask(pos_mask, (batch, num_pos), 'pos_mask')
    neg_mask = _check_mask(neg_mask, (batch, num_neg), 'neg_mask')
    _check_embedding(embedding)
    return batch, num_pos, num_neg, pos_mask, neg_mask


def contrastive_loss_terms(anchor,
                           positives,
                           negatives,
                           temperature,
                           pos_mask=None,
                           neg_mask=None,
                           eps=1e-8,
                           embedding='flatten'):
    """Per-sample extended contrastive loss (Eq. 9; Eq. 2 when P = 1), without reduction.

    ``L_b = logsumexp_{j in P_b u N_b}(s_bj / t) - logsumexp_{j in P_b}(s_bj / t)``, i.e.
    ``-log(sum_p exp(s_bp/t) / (sum_p exp(s_bp/t) + sum_n exp(s_bn/t)))`` with ``s`` the cosine
    similarity of the embedded (by default: flattened) tensors.

    Args:
        anchor (Tensor): (B, ...).
        positives (Tensor): (B, P, ...), trailing dims as the anchor's, P >= 1.
        negatives (Tensor): (B, N, ...), trailing dims as the anchor's, N >= 0.
        temperature (float): t > 0.
        pos_mask (Tensor | None): bool (B, P); False entries are left out.
        neg_mask (Tensor | None): bool (B, N); False entries are left out of the denominator.
        eps (float): lower bound of the norms in the L2 normalisation.
        embedding (str): 'flatten' (default), 'pooled', 'stats' or 'gram', applied to the anchor,
            positives and negatives before the cosine (see :func:`embed_feature_maps`); all but
            'flatten' need maps, i.e. an anchor (B, C, H, W) with at least 4 dims.

    Returns:
        tuple[Tensor, Tensor]: ``loss`` (B,) (0 for rows without a valid positive) and ``valid``
        (B,) bool, True for the rows with at least one valid positive.
    """
    batch, num_pos, num_neg, pos_mask, neg_mask = _check_inputs(anchor, positives, negatives, pos_mask, neg_mask,
                                                                embedding)

    with torch.autocast(device_type=anchor.device.type, enabled=False):
        if embedding != 'flatten':  # 'flatten' is the reshape below (bit for bit the paper's reading)
            anchor = embed_feature_maps(anchor, embedding)
            positives, negatives = _embed_set(positives, embedding), _embed_set(negatives, embedding)
        dim = math.prod(anchor.shape[1:])
        a = F.normalize(_as_float(anchor).reshape(batch, dim), dim=1, eps=eps)
        p = _unit_rows(positives.reshape(batch, num_pos, dim), eps).to(a.dtype)
        n = _unit_rows(negatives.reshape(batch, num_neg, dim), eps).to(a.dtype)
        s_pos = _cosines(a, p)  # (B, P)
        s_neg = _cosines(a, n)  # (B, N)

        if pos_mask is None:
            valid = torch.ones(batch, dtype=torch.bool, device=a.device)
        else:
            valid = pos_mask.any(dim=1)
            # rows without a valid positive: compute with all positives (finite), zeroed below
            pos_mask = pos_mask | ~valid[:, None]
        # Shift by the largest valid positive cosine before dividing by t: the log ratio is
        # unchanged, but the logits stay small, so t = 1e-6 adds no rounding of huge numbers.
        s_pos_valid = s_pos if pos_mask is None else s_pos.masked_fill(~pos_mask, float('-inf'))
        shift = s_pos_valid.amax(dim=1, keepdim=True).detach()
        logit_pos = (s_pos_valid - shift) / temperature
        logit_neg = (s_neg - shift) / temperature
        if neg_mask is not None:
            logit_neg = logit_neg.masked_fill(~neg_mask, float('-inf'))
        loss = torch.logsumexp(torch.cat([logit_pos, logit_neg], dim=1), dim=1) - torch.logsumexp(logit_pos, dim=1)
        loss = torch.where(valid, loss, torch.zeros_like(loss))
    return loss, valid


def ratio_loss_terms(anchor, positives, negatives, eps, pos_mask=None, neg_mask=None, embedding='flatten'):
    """Per-sample L1 ratio form of Eq. 2 / Eq. 9 (TSKL's multi-contrastive regularisation), no reduction.

    ``L_b = mean_{p valid} d(a_b, p) / (mean_{n valid} d(a_b, n) + eps)`` with ``d`` the mean absolute
    difference of the embedded (by default flattened) tensors. A row without a valid negative has
    denominator ``eps`` over nothing: its loss is 0 (as the InfoNCE form); a row without a valid positive
    has loss 0 and ``valid`` False.

    Args: as :func:`contrastive_loss_terms`; ``eps`` > 0 is the ratio's epsilon (the options' ``temperature``).

    Returns:
        tuple[Tensor, Tensor]: ``loss`` (B,) and ``valid`` (B,) bool.
    """
    batch, num_pos, num_neg, pos_mask, neg_mask = _check_inputs(anchor, positives, negatives, pos_mask, neg_mask,
                                                                embedding)
    with torch.autocast(device_type=anchor.device.type, enabled=False):
        if embedding != 'flatten':
            anchor = embed_feature_maps(anchor, embedding)
            positives, negatives = _embed_set(positives, embedding), _embed_set(negatives, embedding)
        a = _as_float(anchor).reshape(batch, 1, -1)
        d_pos = (a - _as_float(positives).reshape(batch, num_pos, -1)).abs().mean(dim=2)  # (B, P)
        d_neg = (a - _as_float(negatives).reshape(batch, num_neg, -1)).abs().mean(dim=2)  # (B, N)
        pos_w = torch.ones_like(d_pos) if pos_mask is None else pos_mask.to(d_pos.dtype)
        neg_w = torch.ones_like(d_neg) if neg_mask is None else neg_mask.to(d_neg.dtype)
        valid = pos_w.sum(dim=1) > 0
        has_neg = neg_w.sum(dim=1) > 0
        num = (d_pos * pos_w).sum(dim=1) / pos_w.sum(dim=1).clamp_min(1)
        den = (d_neg * neg_w).sum(dim=1) / neg_w.sum(dim=1).clamp_min(1) + eps
        loss = torch.where(valid & has_neg, num / den, torch.zeros_like(num))
    return loss, valid


# ----------------------------------------------------------------------------------------------
# losses on tensors (feature-grained)
# ----------------------------------------------------------------------------------------------
class _ContrastiveBase(nn.Module):
    """Options and reduction shared by all the contrastive losses."""

    def __init__(self, loss_weight=1.0, temperature=1e-6, reduction='mean', embedding='flatten',
                 formulation='infonce', detach_negatives=False):
        super().__init__()
        if formulation not in FORMULATIONS:
            raise ValueError(f'Unsupported formulation: {formulation!r}. Supported ones are: {FORMULATIONS}')
        self.formulation = formulation
        self.detach_negatives = bool(detach_negatives)
        if reduction not in _REDUCTIONS:
            raise ValueError(f'Unsupported reduction mode: {reduction}. Supported ones are: {_REDUCTIONS}')
        if not temperature > 0:
            raise ValueError(f'temperature must be > 0, got {temperature}')
        self.loss_weight = loss_weight
        self.temperature = float(temperature)
        self.reduction = reduction
        self.embedding = _check_embedding(embedding)

    def _layer_terms(self, anchor, positives, negatives, pos_mask, neg_mask):
        """The per-sample terms of the configured formulation on tensors."""
        if self.detach_negatives:
            negatives = negatives.detach()
        if self.formulation == 'ratio':
            return ratio_loss_terms(anchor, positives, negatives, self.temperature, pos_mask, neg_mask,
                                    embedding=self.embedding)
        return contrastive_loss_terms(
            anchor, positives, negatives, self.temperature, pos_mask, neg_mask, embedding=self.embedding)

    def _terms(self, anchor, positives, negatives, pos_mask, neg_mask):
        return self._layer_terms(anchor, positives, negatives, pos_mask, neg_mask)

    def _reduce(self, loss, valid):
        if self.reduction == 'mean':
            loss = loss.sum() / valid.sum().clamp_min(1)
        elif self.reduction == 'sum':
            loss = loss.sum()
        return self.loss_weight * loss

    def extra_repr(self):
        return (f'loss_weight={self.loss_weight}, temperature={self.temperature}, reduction={self.reduction!r}, '
                f'embedding={self.embedding!r}, formulation={self.formulation!r}, '
                f'detach_negatives={self.detach_negatives}')


@LOSS_REGISTRY.register()
class ContrastiveLoss(_ContrastiveBase):
    """Common contrastive loss, Eq. 2 (feature-grained loss of Eq. 3 on network features).

    ``-log(exp(s(a,p)/t) / (exp(s(a,p)/t) + sum_n exp(s(a,n)/t)))`` with ``s`` the cosine
    similarity of the embedded (by default flattened), L2-normalised tensors, reduced over the
    batch and multiplied by ``loss_weight``.

    Args:
        loss_weight (float): weight of the loss. Default: 1.0.
        temperature (float): temperature t. Default: 1e-6 (the paper's).
        reduction (str): 'none' (per sample, (B,)), 'mean' or 'sum' over the batch. Default: 'mean'.
        formulation (str): 'infonce' (default, cosine InfoNCE) or 'ratio' (TSKL's L1 ratio
            ``mean_p d(a,p) / (mean_n d(a,n) + temperature)``, see :func:`ratio_loss_terms`).
        detach_negatives (bool): no gradient through the negatives. Default: False.
        embedding (str): the vector ``s`` compares, computed from each (B, C, H, W) map:
            'flatten' (default, the paper's reading): the whole map, i.e. its spatial content;
            'pooled': per-channel spatial means (C,);
            'stats': per-channel spatial means then population stds (2C,) (AdaIN statistics);
            'gram': the Gram matrix F F^T / (H W) (C*C,) (Gatys et al.).
            The last three ignore where things are in the map (invariant to permuting the
            spatial positions), so they fit positives with other content (docs/design.md,
            "Contrastive embeddings"); they need inputs with at least 4 dims.
    """

    def forward(self, anchor, positive, negatives, neg_mask=None):
        """
        Args:
            anchor (Tensor): (B, ...), e.g. student features (B, C, H, W).
            positive (Tensor): (B, ...), same shape as the anchor (e.g. teacher features).
            negatives (Tensor): (B, N, ...).
            neg_mask (Tensor | None): bool (B, N); False entries are excluded from the
                denominator (e.g. to keep only negatives of *other* degradation types).
                A row without any valid negative gives -log(1) = 0.

        Returns:
            Tensor: scalar, or (B,) with reduction 'none'.
        """
        if positive.shape != anchor.shape:
            raise ValueError(f'positive must have the anchor shape {tuple(anchor.shape)}, got {tuple(positive.shape)}')
        return self._reduce(*self._terms(anchor, positive.unsqueeze(1), negatives, None, neg_mask))


@LOSS_REGISTRY.register()
class ExtendedContrastiveLoss(_ContrastiveBase):
    """Extended contrastive loss, Eq. 9 (feature-grained loss of Eq. 10 on network features).

    A batch of weakly correlated positives replaces the single positive of Eq. 2; all of them
    enter the numerator::

        -log(sum_p exp(s(a,p)/t) / (sum_p exp(s(a,p)/t) + sum_n exp(s(a,n)/t)))

    With P = 1 this is exactly :class:`ContrastiveLoss`. Why this form rather than the
    per-positive-averaged (SupCon) one: docs/design.md, "Extended contrastive loss".

    Args:
        loss_weight (float): weight of the loss. Default: 1.0.
        temperature (float): temperature t. Default: 1e-6 (the paper's).
        reduction (str): 'none' (per sample, (B,)), 'mean' or 'sum' over the batch. Default: 'mean'.
            'mean' averages over the rows with at least one valid positive.
        embedding (str): 'flatten' (default), 'pooled', 'stats' or 'gram', as in
            :class:`ContrastiveLoss`. Here the positives are weakly correlated (other images
            with other content): 'flatten' compares the anchor's content position by position
            with theirs and pulls it towards that other content; 'pooled', 'stats' and 'gram'
            compare content-independent statistics, i.e. the domain, which is what Eq. 9 targets.
    """

    def forward(self, anchor, positives, negatives, pos_mask=None, neg_mask=None):
        """
        Args:
            anchor (Tensor): (B, ...).
            positives (Tensor): (B, P, ...), e.g. features of a batch of real clear images
                (``x.unsqueeze(0).expand(B, -1, ...)`` to share one batch with every anchor).
            negatives (Tensor): (B, N, ...).
            pos_mask (Tensor | None): bool (B, P); False entries are left out. A row without any
                valid positive contributes 0 and is left out of the 'mean'.
            neg_mask (Tensor | None): bool (B, N); False entries are left out of the denominator.

        Returns:
            Tensor: scalar, or (B,) with reduction 'none'.
        """
        return self._reduce(*self._terms(anchor, positives, negatives, pos_mask, neg_mask))


# ----------------------------------------------------------------------------------------------
# losses on VGG features of images (image-grained)
# ----------------------------------------------------------------------------------------------
class _VGGFeatureSpace:
    """Mixin: compute the contrastive terms on VGG feature maps, one term per layer.

    ``loss_b = sum_l w_l * L_b(G_l(anchor), G_l(positives), G_l(negatives))``; the anchor,
    positive and negative images go through VGG batched: one call for the images that need no gradient, one
    for those that do (see :meth:`_vgg_features`).

    Placed before a contrastive loss in the bases, it takes that loss's options
    (``loss_weight``, ``temperature``, ``reduction``, ``embedding``, passed on to it) and the VGG
    options (see :class:`ImageContrastiveLoss`). The embedding is applied to each layer's map
    ``G_l(.)`` separately; shared (expanded) images are embedded once per layer.
    """

    def __init__(self,
                 loss_weight=1.0,
                 temperature=1e-6,
                 reduction='mean',
                 layer_weights=None,
                 vgg_type='vgg19',
                 use_input_norm=True,
                 range_norm=False,
                 pretrained=True,
                 vgg_weights_path=None,
                 embedding='flatten',
                 formulation='infonce',
                 detach_negatives=False):
        super().__init__(loss_weight, temperature, reduction, embedding, formulation, detach_negatives)
        if layer_weights is None:
            layer_weights = DEFAULT_LAYER_WEIGHTS
        if not layer_weights:
            raise ValueError('layer_weights must name at least one VGG layer')
        self.layer_weights = OrderedDict((str(k), float(v)) for k, v in layer_weights.items())
        self.vgg = build_vgg_feature_extractor(
            list(self.layer_weights),
            vgg_type=vgg_type,
            use_input_norm=use_input_norm,
            range_norm=range_norm,
            pretrained=pretrained,
            vgg_weights_path=vgg_weights_path)

    def train(self, mode=True):
        """Keep the VGG in eval mode whatever the mode of the loss module."""
        super().train(mode)
        self.vgg.eval()
        return self

    def _vgg_features(self, parts):
        """VGG features of each image batch in ``parts``: ``[{layer: (n_i, C, H, W)}, ...]``.

        The batches that need no gradient (targets such as teacher outputs or degraded inputs, or
        all of them when autograd is off) go through VGG together under ``torch.no_grad()``, the
        ones that require grad (the anchor) in a second batched call: autograd then keeps the
        activations, and back-propagates through VGG, only for the images that need it (in the KT
        step: 1 image in 3; the loss's forward+backward took about half the time and the KT step a
        third of the memory, ``bench/bench_kt_step.py``). Same values as one call on all images, up
        to the convolutions' batch-size dependent summation order.
        """
        needs_grad = [torch.is_grad_enabled() and x.requires_grad for x in parts]
        feats = [None] * len(parts)
        for grad in (False, True):
            idx = [i for i, g in enumerate(needs_grad) if g == grad]
            if not idx:
                continue
            with torch.set_grad_enabled(grad):
                out = self.vgg(torch.cat([parts[i] for i in idx], dim=0))
            sizes = [parts[i].shape[0] for i in idx]
            split = {name: torch.split(f, sizes, dim=0) for name, f in out.items()}
            for j, i in enumerate(idx):
                feats[i] = {name: chunks[j] for name, chunks in split.items()}
        return feats

    def _terms(self, anchor, positives, negatives, pos_mask, neg_mask):
        if anchor.dim() != 4:
            raise ValueError(f'image-grained losses take images (B, C, H, W), got anchor {tuple(anchor.shape)}')
        _check_shapes(anchor, positives, negatives)
        batch = anchor.shape[0]

        # an expand()-ed (stride-0) input holds the same images for every anchor: send them once
        def images(x):
            return (x[0], True) if _is_shared(x) else (x.reshape(-1, *x.shape[2:]), False)

        pos_images, pos_shared = images(positives)
        neg_images, neg_shared = images(negatives)
        f_parts = self._vgg_features([anchor, pos_images, neg_images])

        def per_anchor(f, shared, count):
            return f.unsqueeze(0).expand(batch, *f.shape) if shared else f.reshape(batch, count, *f.shape[1:])

        total, valid = 0, None
        for name, weight in self.layer_weights.items():
            f_anchor, f_pos, f_neg = (part[name] for part in f_parts)
            loss, valid = self._layer_terms(f_anchor, per_anchor(f_pos, pos_shared, positives.shape[1]),
                                            per_anchor(f_neg, neg_shared, negatives.shape[1]), pos_mask, neg_mask)
            total = total + weight * loss
        return total, valid


@LOSS_REGISTRY.register()
class ImageContrastiveLoss(_VGGFeatureSpace, ContrastiveLoss):
    """Image-grained contrastive loss, Eq. 4: Eq. 2 on VGG feature maps, summed over layers.

    ``sum_l w_l * L_Eq2(G_l(anchor), G_l(positive), G_l(negatives))``, e.g. anchor = student
    restored image, positive = teacher restored image, negatives = synthetic degraded images.

    Args:
        loss_weight, temperature, reduction: as in :class:`ContrastiveLoss`.
        layer_weights (dict | None): VGG layer name -> weight. Default (None):
            ``{'relu1_1': 1/32, 'relu2_1': 1/16, 'relu3_1': 1/8, 'relu4_1': 1/4, 'relu5_1': 1}``.
        vgg_type (str): Default: 'vgg19'.
        use_input_norm (bool): images in [0, 1] are normalised with the ImageNet mean/std. Default: True.
        range_norm (bool): images in [-1, 1] are first mapped to [0, 1]. Default: False.
        pretrained (bool): load ImageNet weights (from ``vgg_weights_path``, else the torch hub
            cache ``<torch.hub.get_dir()>/checkpoints/vgg19-dcbb9e9d.pth``); never downloads,
            raises FileNotFoundError if the file is missing. False: untrained VGG (warning).
        vgg_weights_path (str | None): torchvision-layout weights file. Default: None.
        embedding (str): how each VGG layer's map ``G_l(x)`` (C, H, W) becomes the vector of
            the cosine, as in :class:`ContrastiveLoss`: 'flatten' (default, the paper's Eq. 4:
            content compared position by position), 'pooled' (channel means), 'stats' (channel
            means and population stds, AdaIN) or 'gram' (Gram matrix / HW, Gatys et al.).

    Shapes: ``forward(anchor (B, C, H, W), positive (B, C, H, W), negatives (B, N, C, H, W),
    neg_mask=None)``.
    """


@LOSS_REGISTRY.register()
class ExtendedImageContrastiveLoss(_VGGFeatureSpace, ExtendedContrastiveLoss):
    """Extended image-grained contrastive loss, Eq. 11: Eq. 9 on VGG feature maps, summed over layers.

    ``sum_l w_l * L_Eq9(G_l(anchor), G_l(positives), G_l(negatives))``, e.g. anchor = restored
    real degraded image, positives = restored real clear images, negatives = real degraded
    images of other degradation types.

    Args: as :class:`ImageContrastiveLoss`. The positives are restored real clear images with
    *other* content: with ``embedding: flatten`` (the paper's reading) each output is pulled
    towards their VGG maps position by position, i.e. towards other images' content (colour
    casts, collapse); ``pooled``, ``stats`` or ``gram`` compare content-independent statistics
    of the maps (invariant to permuting spatial positions), i.e. the clear domain. Example:
    ``image_cl_opt: {type: ExtendedImageContrastiveLoss, embedding: stats, temperature: 1.0e-6}``.

    Shapes: ``forward(anchor (B, C, H, W), positives (B, P, C, H, W), negatives (B, N, C, H, W),
    pos_mask=None, neg_mask=None)``.
    """
