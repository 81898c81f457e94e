"""CNN-ADS: a backbone with adaptive discriminative filters plus the degradation classifier.

Registered in BasicSR's ``ARCH_REGISTRY`` as ``ADSNet``. ADS (Park et al., "All-in-one Image
Restoration for Unknown Degradations Using Adaptive Discriminative Filters for Specific
Degradations", CVPR 2023; slides "Method: Step 4") runs the unified model (UM) with every masked
convolution's weight replaced by::

    theta_ads = theta_um + sum_d c_hat_d * theta_d * M_d

``c_hat = softmax(classifier(x))`` per image (step 3), the masks ``M_d`` come from FAIG-SD (step 2,
a mask file of :func:`uniremoval.ads.selection.save_masks`). The unit is the output filter and the
implementation (one extra small convolution over all selected filters, cost proportional to the
selected weights) is :class:`uniremoval.ads.adaptive_conv.AdaptiveConv2d`.

State dict: ``backbone.*`` holds the UM with the plain backbone's keys, plus ``weight_{d}`` (specific
weights) and ``index_{d}`` (the masks, buffers) of each maskable convolution, ``d`` in the order of
``degradations``; ``classifier.*`` the classifier. A checkpoint therefore carries its masks:
:meth:`ADSNet.load_state_dict` first resizes the specific weights to the checkpoint's masks, so an
``ADSNet`` built without a mask file loads any checkpoint of the same backbone with ``strict=True``
(build optimizers after loading: resizing replaces the specific-weight parameters).
"""
from collections import OrderedDict
from copy import deepcopy

import torch
from torch import nn
from torch.nn import functional as F

from basicsr.archs import build_network
from basicsr.utils.registry import ARCH_REGISTRY
from uniremoval.ads.adaptive_conv import (adaptive_condition, adaptive_convs, convert_to_adaptive, resize_to_state_dict,
                                          split_adaptive_state_dict)
from uniremoval.ads.selection import check_masks, load_masks, um_parameter_count, unwrap_state_dict


@ARCH_REGISTRY.register()
class ADSNet(nn.Module):
    """A backbone converted to CNN-ADS, with its degradation classifier.

    Args:
        backbone (dict): BasicSR network options of the UM, e.g. ``{'type': 'NAFNet', 'width': 32, ...}``.
        num_degradations (int): k. Default: 3.
        masks (str | dict | None): path of a mask file (or its loaded dict). None: no filter selected,
            the network equals the UM (a checkpoint loaded later brings its own masks).
        classifier (dict | None): BasicSR options of the classifier, e.g. ``{'type': 'DegradationClassifier'}``;
            ``num_degradations`` is filled in when absent. None: ``forward`` needs an explicit condition.
        degradations (list[str] | None): degradation names in the order of ``c``; must be the mask
            file's names (any order). Default: the mask file's order, else ``['0', '1', ...]``.
    """

    def __init__(self, backbone, num_degradations=3, masks=None, classifier=None, degradations=None):
        super().__init__()
        k = int(num_degradations)
        if k < 1:
            raise ValueError(f'ADSNet: num_degradations must be >= 1, got {num_degradations}')
        if not isinstance(backbone, dict) or 'type' not in backbone:
            raise ValueError(f"ADSNet: backbone must be a network option dict with a 'type', got {backbone!r}")
        self.num_degradations = k
        self.backbone = build_network(deepcopy(dict(backbone)))

        mask_data, source = None, None
        if masks is not None:
            source = masks if isinstance(masks, str) else '<mask dict>'
            mask_data = load_masks(masks) if isinstance(masks, str) else masks
            file_degradations = list(mask_data['degradations'])
            if degradations is None:
                degradations = file_degradations
            elif sorted(map(str, degradations)) != sorted(file_degradations):
                raise ValueError(f'ADSNet: degradations {list(degradations)} differ from those of the mask file '
                                 f'{source}: {file_degradations}')
        if degradations is None:
            degradations = [str(d) for d in range(k)]
        self.degradations = [str(d) for d in degradations]
        if len(self.degradations) != k:
            raise ValueError(f'ADSNet: {len(self.degradations)} degradations {self.degradations} but '
                             f'num_degradations={k}' + (f' (mask file {source})' if source else ''))
        self.mask_info = {} if mask_data is None else {
            'path': source, 'q': mask_data['q'], 'method': mask_data['method']}
        try:
            convert_to_adaptive(self.backbone, None if mask_data is None else mask_data['masks'], k,
                                degradations=self.degradations)
        except (KeyError, ValueError) as err:
            raise ValueError(f'ADSNet: the masks of {source} do not fit the backbone {backbone.get("type")}: {err}') \
                from err

        self.classifier = None
        if classifier is not None:
            classifier = deepcopy(dict(classifier))
            classifier.setdefault('num_degradations', k)
            if int(classifier['num_degradations']) != k:
                raise ValueError(f'ADSNet: classifier num_degradations={classifier["num_degradations"]} but the '
                                 f'network has {k} degradations')
            self.classifier = build_network(classifier)

    # -------------------------------------------------------------------------------- condition
    def predict_condition(self, x):
        """``softmax(classifier(x))``, ``[B, k]``."""
        if self.classifier is None:
            raise RuntimeError('ADSNet: no classifier (classifier: None); pass condition= to forward')
        return F.softmax(self.classifier(x), dim=1)

    def condition_from(self, x, condition=None):
        """The ``[B, k]`` condition for input ``x``: predicted when ``condition`` is None; an integer
        tensor ``[B]`` of type labels becomes one-hot; a float ``[k]`` is used for every image; a
        float ``[B, k]`` (one-hot or soft) is used as given."""
        batch = x.shape[0]
        if condition is None:
            return self.predict_condition(x)
        condition = torch.as_tensor(condition, device=x.device)
        if not condition.is_floating_point():
            if condition.dim() != 1 or condition.shape[0] != batch:
                raise ValueError(f'ADSNet: integer condition must be [B]={batch} type labels, '
                                 f'got {tuple(condition.shape)}')
            if int(condition.min()) < 0 or int(condition.max()) >= self.num_degradations:
                raise ValueError(f'ADSNet: type labels must lie in [0, {self.num_degradations}), got '
                                 f'{condition.tolist()}')
            return F.one_hot(condition.long(), self.num_degradations).to(x.dtype)
        if condition.dim() == 1:
            condition = condition.unsqueeze(0).expand(batch, -1)
        if condition.shape != (batch, self.num_degradations):
            raise ValueError(f'ADSNet: condition must be [B, k] = [{batch}, {self.num_degradations}], got '
                             f'{tuple(condition.shape)}')
        return condition.to(x.dtype)

    def forward(self, x, condition=None):
        """Restore ``x`` with ``theta_ads``; ``condition`` None uses the classifier (see :meth:`condition_from`).
        Returns what the backbone returns."""
        c = self.condition_from(x, condition)
        with adaptive_condition(self.backbone, c):
            return self.backbone(x)

    # -------------------------------------------------------------------------------- parts
    def adaptive_layers(self):
        """``{backbone layer name: AdaptiveConv2d}``."""
        return adaptive_convs(self.backbone)

    def specific_parameters(self):
        """The degradation-specific weights ``theta_d`` of every adaptive layer."""
        return [p for conv in self.adaptive_layers().values() for p in conv.specific_parameters()]

    def um_parameters(self):
        specific = {id(p) for p in self.specific_parameters()}
        return [p for p in self.backbone.parameters() if id(p) not in specific]

    def freeze_um(self):
        """Freeze ``theta_um`` (every backbone parameter except the specific weights); the classifier is
        left as it is (:meth:`freeze_classifier`)."""
        for p in self.um_parameters():
            p.requires_grad_(False)
        for p in self.specific_parameters():
            p.requires_grad_(True)
        return self

    def freeze_classifier(self):
        if self.classifier is not None:
            for p in self.classifier.parameters():
                p.requires_grad_(False)
        return self

    def masks(self):
        """The masks held by the network: ``{degradation: {layer: LongTensor}}`` (CPU copies)."""
        layers = self.adaptive_layers()
        return {deg: {name: conv.selected_index(d).cpu().clone() for name, conv in layers.items()}
                for d, deg in enumerate(self.degradations)}

    def um_parameter_count(self):
        return um_parameter_count(self.backbone)

    # -------------------------------------------------------------------------------- state dicts
    def um_state_dict(self):
        """The UM's state dict with the plain backbone's keys (no ``backbone.`` prefix, no specific weights)."""
        um, _ = split_adaptive_state_dict(self.backbone.state_dict(), self.backbone)
        return OrderedDict(um)

    def load_um_state_dict(self, state_dict, strict=True):
        """Load a plain backbone checkpoint (raw, or BasicSR's ``{'params'|'params_ema': ...}``) into the UM
        part; the specific weights and masks are untouched. ``strict``: every UM key must match."""
        state_dict = unwrap_state_dict(state_dict)
        _, specific = split_adaptive_state_dict(self.backbone.state_dict(), self.backbone)
        bad = [k for k in state_dict if k in specific]
        if bad:
            raise KeyError(f'ADSNet.load_um_state_dict: the state dict holds specific weights/masks {bad[:3]}; '
                           'load a full ADSNet checkpoint with load_state_dict instead')
        result = self.backbone.load_state_dict(state_dict, strict=False)
        missing = [k for k in result.missing_keys if k not in specific]
        if strict and (missing or result.unexpected_keys):
            raise RuntimeError(f'ADSNet.load_um_state_dict: UM keys missing {missing[:10]}, unexpected '
                               f'{result.unexpected_keys[:10]} (backbone {type(self.backbone).__name__})')
        return result

    def load_state_dict(self, state_dict, strict=True, assign=False):
        """As ``nn.Module.load_state_dict``, after giving every adaptive layer the number of selected
        filters of ``state_dict`` (the checkpoint's masks); the loaded masks are validated."""
        resize_to_state_dict(self.backbone, state_dict, prefix='backbone.')
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        for d, layer_masks in enumerate(self.masks().values()):
            check_masks(layer_masks, self.backbone, what=f'ADSNet checkpoint mask of {self.degradations[d]!r}')
        return result
