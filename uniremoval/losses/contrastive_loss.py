"""Contrastive losses of Uni-Removal (arXiv:2307.05075, Sec. III-B to III-D).

Four losses, registered in BasicSR's ``LOSS_REGISTRY`` so any BasicSR model can build them
with ``basicsr.losses.build_loss({'type': ..., ...})``:

* :class:`ContrastiveLoss`: the common contrastive loss of Eq. 2 on raw tensors (one positive
  per anchor). With intermediate network features it is the feature-grained loss of Eq. 3.
* :class:`ExtendedContrastiveLoss`: the extended contrastive loss of Eq. 9 (a batch of weakly
  correlated positives per anchor); the feature-grained loss of Eq. 10.
* :class:`ImageContrastiveLoss` and :class:`ExtendedImageContrastiveLoss`: the same losses on
  VGG-19 feature maps of images (the ``G`` of Eq. 2), i.e. the image-grained losses of Eq. 4
  and Eq. 11. One weighted term per VGG layer.

Eq. 2, for an anchor ``a`` with positive ``p`` and negatives ``n_1..n_N``::

    L = -log( exp(s(a,p)/t) / (exp(s(a,p)/t) + sum_n exp(s(a,n_n)/t)) )

where ``s`` is the cosine similarity of the flattened, L2-normalised vectors and ``t`` the
temperature (the paper uses ``t = 1e-6``).

Eq. 9 (its symbols are lost from the paper's text; the prose says it "replaces the strongly
correlated positive with a batch of weakly correlated positives"). We use the form with every
positive in the numerator::

    L = -log( sum_p exp(s(a,p)/t) / (sum_p exp(s(a,p)/t) + sum_n exp(s(a,n_n)/t)) )

Why this form rather than the per-positive-averaged SupCon form
``-1/P sum_p log(exp(s_ap/t) / (sum_p' exp(s_ap'/t) + sum_n exp(s_an/t)))``:

* For ``P = 1`` it is exactly Eq. 2, so the extended loss is a strict generalisation and both
  losses share one code path (and masks mean the same thing in both).
* The positives are *weakly* correlated: unpaired real clear images with other content. The
  aim is to pull the anchor towards the clear *domain*, not onto every clear image. Our form
  treats the positives as one set: the loss is ``>= 0`` and goes to 0 as soon as the positive
  set outweighs the negatives; the positives never compete with each other. In the averaged
  form every positive sits in the denominator of every other positive's term, so the loss
  is bounded below by ``log P`` and is minimal only when the anchor is *equally* similar to all
  positives; at ``t = 1e-6`` its gradient even pushes the anchor away from its most similar
  clear image towards the others, i.e. towards a contradictory target.
* It is one log-sum-exp ratio, as stable as Eq. 2 at ``t = 1e-6``. (It equals SupCon's
  "L_in" variant minus the constant ``log P``.)

Numerics: the log ratio is computed as ``logsumexp(all logits) - logsumexp(positive logits)``
with the logits shifted by the (detached) largest positive cosine *before* dividing by ``t``,
so ``t = 1e-6`` gives finite losses and gradients even for identical or opposite vectors;
norms are clamped with ``eps``; similarities are batched matrix products (no Python loops over
pairs or batch elements) and are computed in float32 at least (autocast is disabled inside).
Inputs whose batch dimension is an ``expand()``-ed view (stride 0, the same positives or
negatives for every anchor) are normalised, and sent through VGG, once instead of ``B`` times.

Masks: ``neg_mask`` (bool ``(B, N)``) and ``pos_mask`` (bool ``(B, P)``), False = excluded.
A row without valid negatives has the loss ``-log(1) = 0``. A row without valid positives has
no defined loss: it contributes 0, gets no gradient and is left out of the ``'mean'``
reduction (the mean is over the rows that have at least one valid positive, 0 if none has).

Gradients flow to every input that requires them; detach the positives (teacher outputs) or
negatives yourself where they must stay fixed.
"""
import math
import os
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from basicsr.utils import get_root_logger
from basicsr.utils.registry import LOSS_REGISTRY

__all__ = [
    'ContrastiveLoss', 'ExtendedContrastiveLoss', 'ImageContrastiveLoss', 'ExtendedImageContrastiveLoss',
    'contrastive_loss_terms', 'build_vgg_feature_extractor', 'default_vgg_weights_path', 'DEFAULT_LAYER_WEIGHTS'
]

_REDUCTIONS = ('none', 'mean', 'sum')

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


def contrastive_loss_terms(anchor, positives, negatives, temperature, pos_mask=None, neg_mask=None, eps=1e-8):
    """Per-sample extended contrastive loss (Eq. 9; Eq. 2 when P = 1), without reduction.

    ``L_b = logsumexp_{j in P_b u N_b}(s_bj / t) - logsumexp_{j in P_b}(s_bj / t)``, i.e.
    ``-log(sum_p exp(s_bp/t) / (sum_p exp(s_bp/t) + sum_n exp(s_bn/t)))`` with ``s`` the cosine
    similarity of the flattened vectors.

    Args:
        anchor (Tensor): (B, ...).
        positives (Tensor): (B, P, ...), trailing dims as the anchor's, P >= 1.
        negatives (Tensor): (B, N, ...), trailing dims as the anchor's, N >= 0.
        temperature (float): t > 0.
        pos_mask (Tensor | None): bool (B, P); False entries are left out.
        neg_mask (Tensor | None): bool (B, N); False entries are left out of the denominator.
        eps (float): lower bound of the norms in the L2 normalisation.

    Returns:
        tuple[Tensor, Tensor]: ``loss`` (B,) (0 for rows without a valid positive) and ``valid``
        (B,) bool, True for the rows with at least one valid positive.
    """
    _check_shapes(anchor, positives, negatives)
    batch, num_pos, num_neg = anchor.shape[0], positives.shape[1], negatives.shape[1]
    pos_mask = _check_mask(pos_mask, (batch, num_pos), 'pos_mask')
    neg_mask = _check_mask(neg_mask, (batch, num_neg), 'neg_mask')

    with torch.autocast(device_type=anchor.device.type, enabled=False):
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


# ----------------------------------------------------------------------------------------------
# losses on tensors (feature-grained)
# ----------------------------------------------------------------------------------------------
class _ContrastiveBase(nn.Module):
    """Options and reduction shared by all the contrastive losses."""

    def __init__(self, loss_weight=1.0, temperature=1e-6, reduction='mean'):
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f'Unsupported reduction mode: {reduction}. Supported ones are: {_REDUCTIONS}')
        if not temperature > 0:
            raise ValueError(f'temperature must be > 0, got {temperature}')
        self.loss_weight = loss_weight
        self.temperature = float(temperature)
        self.reduction = reduction

    def _terms(self, anchor, positives, negatives, pos_mask, neg_mask):
        return contrastive_loss_terms(anchor, positives, negatives, self.temperature, pos_mask, neg_mask)

    def _reduce(self, loss, valid):
        if self.reduction == 'mean':
            loss = loss.sum() / valid.sum().clamp_min(1)
        elif self.reduction == 'sum':
            loss = loss.sum()
        return self.loss_weight * loss

    def extra_repr(self):
        return f'loss_weight={self.loss_weight}, temperature={self.temperature}, reduction={self.reduction!r}'


@LOSS_REGISTRY.register()
class ContrastiveLoss(_ContrastiveBase):
    """Common contrastive loss, Eq. 2 (feature-grained loss of Eq. 3 on network features).

    ``-log(exp(s(a,p)/t) / (exp(s(a,p)/t) + sum_n exp(s(a,n)/t)))`` with ``s`` the cosine
    similarity of the flattened, L2-normalised tensors, reduced over the batch and multiplied
    by ``loss_weight``.

    Args:
        loss_weight (float): weight of the loss. Default: 1.0.
        temperature (float): temperature t. Default: 1e-6 (the paper's).
        reduction (str): 'none' (per sample, (B,)), 'mean' or 'sum' over the batch. Default: 'mean'.
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

    With P = 1 this is exactly :class:`ContrastiveLoss`. See the module docstring for why this
    form is used rather than the per-positive-averaged (SupCon) one.

    Args:
        loss_weight (float): weight of the loss. Default: 1.0.
        temperature (float): temperature t. Default: 1e-6 (the paper's).
        reduction (str): 'none' (per sample, (B,)), 'mean' or 'sum' over the batch. Default: 'mean'.
            'mean' averages over the rows with at least one valid positive.
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
# VGG feature extractor without downloads
# ----------------------------------------------------------------------------------------------
_VGG_CFG_KEYS = {'vgg11': 'A', 'vgg13': 'B', 'vgg16': 'D', 'vgg19': 'E'}


class _FeaturesOnlyVGG(nn.Module):
    """Randomly initialised torchvision VGG ``features`` (no classifier, nothing downloaded)."""

    def __init__(self, vgg_type):
        super().__init__()
        from torchvision.models import vgg as tv_vgg

        base = vgg_type.replace('_bn', '')
        if hasattr(tv_vgg, 'make_layers') and hasattr(tv_vgg, 'cfgs'):
            self.features = tv_vgg.make_layers(tv_vgg.cfgs[_VGG_CFG_KEYS[base]], batch_norm='_bn' in vgg_type)
            for m in self.features.modules():  # torchvision's VGG initialisation
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
                    nn.init.zeros_(m.bias)
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)
        else:  # torchvision without these helpers: build the whole (untrained) model
            self.features = getattr(tv_vgg, vgg_type)(weights=None).features


class _NoDownloadVGGModule:
    """Stands in for ``torchvision.models.vgg`` inside BasicSR's vgg_arch while we build."""

    def __getattr__(self, vgg_type):
        return lambda *args, **kwargs: _FeaturesOnlyVGG(vgg_type)


def _extractor_without_download(layer_name_list, vgg_type, use_input_norm, range_norm):
    """Build BasicSR's VGGFeatureExtractor with random weights, never touching the network.

    BasicSR 1.4.2's constructor has no ``pretrained`` switch: it loads
    ``experiments/pretrained_models/vgg19-dcbb9e9d.pth`` (relative to the working directory)
    if it exists, else calls ``torchvision.models.<vgg_type>(pretrained=True)``, which
    downloads. For the duration of the constructor we point both at no-download stand-ins.
    """
    from basicsr.archs import vgg_arch

    saved = vgg_arch.vgg, vgg_arch.VGG_PRETRAIN_PATH
    vgg_arch.vgg, vgg_arch.VGG_PRETRAIN_PATH = _NoDownloadVGGModule(), ''
    try:
        return vgg_arch.VGGFeatureExtractor(
            layer_name_list=list(layer_name_list),
            vgg_type=vgg_type,
            use_input_norm=use_input_norm,
            range_norm=range_norm,
            requires_grad=False)
    finally:
        vgg_arch.vgg, vgg_arch.VGG_PRETRAIN_PATH = saved


def _weights_file_name(vgg_type):
    """File name of torchvision's ImageNet weights, e.g. ``vgg19-dcbb9e9d.pth`` (no download)."""
    from torchvision.models import get_model_weights

    return os.path.basename(get_model_weights(vgg_type).IMAGENET1K_V1.url)


def _weights_enum_name(vgg_type):
    from torchvision.models import get_model_weights

    return get_model_weights(vgg_type).__name__


def default_vgg_weights_path(vgg_type='vgg19'):
    """Where torchvision caches the ImageNet weights: ``torch.hub.get_dir()/checkpoints/<file>``."""
    return os.path.join(torch.hub.get_dir(), 'checkpoints', _weights_file_name(vgg_type))


def _load_torchvision_features(extractor, path, vgg_type):
    """Load torchvision-layout VGG weights (``features.<index>.<param>``) into the extractor.

    The extractor names its layers (``vgg_net.conv1_1``, ...) in the order of torchvision's
    ``features`` Sequential, so index ``i`` maps to ``extractor.names[i]``.
    """
    state = torch.load(path, map_location='cpu', weights_only=True)
    if isinstance(state, dict) and 'state_dict' in state and isinstance(state['state_dict'], dict):
        state = state['state_dict']
    if not isinstance(state, dict):
        raise ValueError(f'{path} does not hold a state dict (got {type(state).__name__})')
    target = extractor.vgg_net.state_dict()
    mapped = {}
    for key, value in state.items():
        parts = key.split('.')
        if len(parts) != 3 or parts[0] != 'features' or not parts[1].isdigit():
            continue  # classifier.* etc.
        index = int(parts[1])
        if index < len(extractor.names):
            new_key = f'{extractor.names[index]}.{parts[2]}'
            if new_key in target:
                mapped[new_key] = value
    missing = sorted(set(target) - set(mapped))
    if missing:
        raise ValueError(f'{path} is not a torchvision {vgg_type} state dict (keys "features.<index>.weight"): '
                         f'no weights for {missing}')
    extractor.vgg_net.load_state_dict(mapped, strict=True)


def build_vgg_feature_extractor(layer_name_list,
                                vgg_type='vgg19',
                                use_input_norm=True,
                                range_norm=False,
                                pretrained=True,
                                vgg_weights_path=None):
    """Frozen BasicSR ``VGGFeatureExtractor`` whose weights never come from the network.

    Args:
        layer_name_list (list[str]): layers to return, e.g. ``['relu1_1', 'relu5_1']``.
        vgg_type (str): 'vgg19' (default), 'vgg16', 'vgg13', 'vgg11' or a '_bn' variant.
        use_input_norm (bool): normalise [0, 1] inputs with the ImageNet mean and std.
        range_norm (bool): map [-1, 1] inputs to [0, 1] first.
        pretrained (bool): load ImageNet weights from ``vgg_weights_path`` or, if that is None,
            from :func:`default_vgg_weights_path`; FileNotFoundError if the file is missing.
            False: random weights (seed the RNG yourself) and a warning.
        vgg_weights_path (str | None): torchvision-layout weights file.

    Returns:
        VGGFeatureExtractor: in eval mode, every parameter with ``requires_grad=False``.
    """
    logger = get_root_logger()
    if pretrained:
        path = vgg_weights_path if vgg_weights_path is not None else default_vgg_weights_path(vgg_type)
        path = os.path.expanduser(str(path))
        if not os.path.isfile(path):
            file_name = _weights_file_name(vgg_type)
            enum_name = _weights_enum_name(vgg_type)
            given = f'vgg_weights_path={vgg_weights_path!r} does not exist. ' if vgg_weights_path is not None else ''
            raise FileNotFoundError(
                f'ImageNet {vgg_type} weights not found (nothing is downloaded). {given}'
                f'Put torchvision\'s {enum_name}.IMAGENET1K_V1 file "{file_name}" '
                f'(https://download.pytorch.org/models/{file_name}) either at the path given by the loss option '
                f'vgg_weights_path or in the torch hub cache at {default_vgg_weights_path(vgg_type)}. '
                f'Set "pretrained: false" to use an untrained VGG instead (offline tests and demos only).')
    extractor = _extractor_without_download(layer_name_list, vgg_type, use_input_norm, range_norm)
    if pretrained:
        _load_torchvision_features(extractor, path, vgg_type)
        logger.info(f'Contrastive loss: loaded ImageNet {vgg_type} weights from {path}.')
    else:
        logger.warning(f'Contrastive loss: pretrained=False, the image-grained contrastive loss uses an UNTRAINED '
                       f'(randomly initialised) {vgg_type}. Use this only for offline runs (tests, the demo); '
                       f'set pretrained: true with ImageNet weights for real training.')
    extractor.eval()
    for param in extractor.parameters():
        param.requires_grad_(False)
    return extractor


# ----------------------------------------------------------------------------------------------
# losses on VGG features of images (image-grained)
# ----------------------------------------------------------------------------------------------
class _VGGFeatureSpace:
    """Mixin: compute the contrastive terms on VGG feature maps, one term per layer.

    ``loss_b = sum_l w_l * L_b(G_l(anchor), G_l(positives), G_l(negatives))``; the anchor,
    positive and negative images go through VGG in one batched call.
    """

    def _init_vgg(self, layer_weights, vgg_type, use_input_norm, range_norm, pretrained, vgg_weights_path):
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
        sizes = [batch, pos_images.shape[0], neg_images.shape[0]]
        feats = self.vgg(torch.cat([anchor, pos_images, neg_images], dim=0))

        def per_anchor(f, shared, count):
            return f.unsqueeze(0).expand(batch, *f.shape) if shared else f.reshape(batch, count, *f.shape[1:])

        total, valid = 0, None
        for name, weight in self.layer_weights.items():
            f_anchor, f_pos, f_neg = torch.split(feats[name], sizes, dim=0)
            loss, valid = contrastive_loss_terms(f_anchor, per_anchor(f_pos, pos_shared, positives.shape[1]),
                                                 per_anchor(f_neg, neg_shared, negatives.shape[1]),
                                                 self.temperature, pos_mask, neg_mask)
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

    Shapes: ``forward(anchor (B, C, H, W), positive (B, C, H, W), negatives (B, N, C, H, W),
    neg_mask=None)``.
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
                 vgg_weights_path=None):
        super().__init__(loss_weight, temperature, reduction)
        self._init_vgg(layer_weights, vgg_type, use_input_norm, range_norm, pretrained, vgg_weights_path)


@LOSS_REGISTRY.register()
class ExtendedImageContrastiveLoss(_VGGFeatureSpace, ExtendedContrastiveLoss):
    """Extended image-grained contrastive loss, Eq. 11: Eq. 9 on VGG feature maps, summed over layers.

    ``sum_l w_l * L_Eq9(G_l(anchor), G_l(positives), G_l(negatives))``, e.g. anchor = restored
    real degraded image, positives = restored real clear images, negatives = real degraded
    images of other degradation types.

    Args: as :class:`ImageContrastiveLoss`.

    Shapes: ``forward(anchor (B, C, H, W), positives (B, P, C, H, W), negatives (B, N, C, H, W),
    pos_mask=None, neg_mask=None)``.
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
                 vgg_weights_path=None):
        super().__init__(loss_weight, temperature, reduction)
        self._init_vgg(layer_weights, vgg_type, use_input_norm, range_norm, pretrained, vgg_weights_path)
