"""Supervised training of MPRNet, used for Uni-Removal's teachers (arXiv 2307.05075, §III-B, §IV-A).

Each teacher is an MPRNet trained on one synthetic degradation (OTS haze, Rain1400 rain, GoPro blur)
with MPRNet's own objective (Zamir et al., CVPR 2021, Eq. 2), summed over the three stage outputs:

    L = sum_{S=1..3} pixel_opt(X_S, Y) + edge_opt(X_S, Y)

with ``pixel_opt`` = BasicSR ``CharbonnierLoss`` (eps 1.0e-6, i.e. MPRNet's 1e-3 inside the root) and
``edge_opt`` = :class:`~uniremoval.losses.mprnet_loss.EdgeLoss` with ``loss_weight: 0.05``.

Pixel range (root option ``pixel_range``, :mod:`uniremoval.utils.pixel_range`): BasicSR's datasets
give images in [0, 1]. With the default ``[0, 1]`` the network sees them unchanged, as in the official
MPRNet code (so official checkpoints work). ``[-1, 1]`` maps input and output linearly, as the
Uni-Removal paper normalises patches (§IV-A1). Losses and metrics are always computed in [0, 1], so
loss values and ``eps`` mean the same in both settings.
"""

from basicsr.models.sr_model import SRModel
from basicsr.utils.registry import MODEL_REGISTRY
from uniremoval.models.model_mixins import (SafeCheckpointMixin, StagedRestorationMixin, build_optional_loss,
                                            stage_supervision_losses, step_generator)


@MODEL_REGISTRY.register()
class MPRNetModel(StagedRestorationMixin, SafeCheckpointMixin, SRModel):
    """BasicSR model training a multi-stage network (MPRNet) with a loss on every stage output.

    Options beyond ``SRModel``'s: ``train.edge_opt`` (optional edge loss, any registered loss) and
    the root ``pixel_range``. The network's forward must return the stage outputs, final first.
    """

    def __init__(self, opt):
        self.opt = opt
        self.init_pixel_range()
        super().__init__(opt)

    def init_training_settings(self):
        self.cri_edge = build_optional_loss(self.opt['train'], 'edge_opt', self.device)
        super().init_training_settings()

    def feed_data(self, data):
        self.lq = data['lq'].to(self.device)
        if 'gt' in data:
            self.gt = data['gt'].to(self.device)

    def optimize_parameters(self, current_iter):
        self.optimizer_g.zero_grad()
        stage_outputs = self.stage_outputs(self.net_g, self.lq)
        self.output = stage_outputs[0]

        loss_dict = stage_supervision_losses(stage_outputs, self.gt, self.cri_pix, self.cri_edge, self.cri_perceptual)
        l_total = sum(loss_dict.values())
        step_generator(self, loss_dict, l_total, current_iter)
