"""Supervised training of MPRNet, used for Uni-Removal's teachers (arXiv 2307.05075, §III-B, §IV-A).

Each teacher is an MPRNet trained on one synthetic degradation (OTS haze, Rain1400 rain, GoPro blur)
with MPRNet's own objective (Zamir et al., CVPR 2021, Eq. 2), summed over the three stage outputs:

    L = sum_{S=1..3} pixel_opt(X_S, Y) + edge_opt(X_S, Y)

with ``pixel_opt`` = BasicSR ``CharbonnierLoss`` (eps 1.0e-6, i.e. MPRNet's 1e-3 inside the root) and
``edge_opt`` = :class:`~uniremoval.losses.mprnet_loss.EdgeLoss` with ``loss_weight: 0.05``.

Pixel range (root option ``pixel_range``): BasicSR's datasets give images in [0, 1]. With the default
``[0, 1]`` the network sees them unchanged, as in the official MPRNet code (so official checkpoints
work). ``[-1, 1]`` maps input and output linearly, as the Uni-Removal paper normalises patches
(§IV-A1). Losses and metrics are always computed in [0, 1], so loss values and ``eps`` mean the same
in both settings.
"""
from collections import OrderedDict

import torch

from basicsr.losses import build_loss
from basicsr.models.sr_model import SRModel
from basicsr.utils.registry import MODEL_REGISTRY
from uniremoval.models.model_mixins import SafeCheckpointMixin, perceptual_terms

SUPPORTED_PIXEL_RANGES = ((0.0, 1.0), (-1.0, 1.0))


def parse_pixel_range(opt):
    """Read and validate the root option ``pixel_range`` (default ``[0, 1]``)."""
    value = opt.get('pixel_range', [0, 1])
    try:
        value = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        value = None
    if value not in SUPPORTED_PIXEL_RANGES:
        raise ValueError(f"Option 'pixel_range' must be [0, 1] or [-1, 1], got {opt.get('pixel_range')!r}")
    return value


class StagedRestorationMixin:
    """Runs a multi-stage restoration network (outputs final first) in its pixel range.

    Maps [0, 1] data to the network's ``pixel_range`` and back (see module docstring); ``test()``
    keeps the final stage's output as ``self.output``.
    """

    def _init_pixel_range(self):
        self.pixel_range = parse_pixel_range(self.opt)
        # intermediate features compared by Uni-Removal's feature-grained losses (see MPRNet.forward)
        self.feat_layers = tuple(self.opt.get('feat_layers') or ('orsnet',))

    def to_network_range(self, img):
        return img if self.pixel_range == (0.0, 1.0) else img * 2 - 1

    def from_network_range(self, img):
        return img if self.pixel_range == (0.0, 1.0) else (img + 1) / 2

    def _stage_outputs(self, net, lq):
        """All stage outputs of ``net`` for [0, 1] input ``lq``, in [0, 1]."""
        outputs = net(self.to_network_range(lq))
        if isinstance(outputs, torch.Tensor):
            outputs = [outputs]
        return [self.from_network_range(o) for o in outputs]

    def restore_with_feats(self, net, img):
        """Final restored image of ``net`` for [0, 1] input ``img`` (in [0, 1]) and its ``feat_layers`` features."""
        outputs, feats = net(self.to_network_range(img), return_feats=True, feat_layers=self.feat_layers)
        return self.from_network_range(outputs[0]), feats

    def test(self):
        net = self.net_g_ema if hasattr(self, 'net_g_ema') else self.net_g
        was_training = net.training
        net.eval()
        with torch.no_grad():
            self.output = self._stage_outputs(net, self.lq)[0]
        net.train(was_training)


@MODEL_REGISTRY.register()
class MPRNetModel(StagedRestorationMixin, SafeCheckpointMixin, SRModel):
    """BasicSR model training a multi-stage network (MPRNet) with a loss on every stage output.

    Options beyond ``SRModel``'s: ``train.edge_opt`` (optional edge loss, any registered loss) and
    the root ``pixel_range``. The network's forward must return the stage outputs, final first.
    """

    def __init__(self, opt):
        self.opt = opt
        self._init_pixel_range()
        super().__init__(opt)

    def init_training_settings(self):
        edge_opt = self.opt['train'].get('edge_opt')
        self.cri_edge = build_loss(edge_opt).to(self.device) if edge_opt else None
        super().init_training_settings()

    def feed_data(self, data):
        self.lq = data['lq'].to(self.device)
        if 'gt' in data:
            self.gt = data['gt'].to(self.device)

    def optimize_parameters(self, current_iter):
        self.optimizer_g.zero_grad()
        stage_outputs = self._stage_outputs(self.net_g, self.lq)
        self.output = stage_outputs[0]

        loss_dict = OrderedDict()
        l_total = 0
        if self.cri_pix:
            l_pix = sum(self.cri_pix(out, self.gt) for out in stage_outputs)
            l_total = l_total + l_pix
            loss_dict['l_pix'] = l_pix
        if self.cri_edge:
            l_edge = sum(self.cri_edge(out, self.gt) for out in stage_outputs)
            l_total = l_total + l_edge
            loss_dict['l_edge'] = l_edge
        for name, value in perceptual_terms(self.cri_perceptual, self.output, self.gt).items():
            loss_dict[name] = value
            l_total = l_total + value
        l_total.backward()
        self.optimizer_g.step()
        self.log_dict = self.reduce_loss_dict(loss_dict)
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)
