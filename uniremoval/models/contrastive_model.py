"""Contrastive regularisation for any BasicSR restoration network, from YAML alone.

``ContrastiveRestorationModel`` is BasicSR's ``SRModel`` plus an optional ``train.contrastive_opt``:
the restored image is the anchor, the ground truth its positive, and the batch's degraded inputs
(the sample's own included) its negatives, i.e. Uni-Removal's image-grained contrastive loss
(arXiv 2307.05075, Eq. 2 and 4) with the ground truth in place of a teacher. Any registered loss
with the ``forward(anchor, positive, negatives)`` signature works, typically
``ImageContrastiveLoss`` (VGG-19 space) or ``ContrastiveLoss`` (pixel space)::

    model_type: ContrastiveRestorationModel
    network_g: {type: RRDBNet, ...}          # any registered arch
    train:
      pixel_opt: {type: L1Loss, loss_weight: 1.0}
      contrastive_opt: {type: ImageContrastiveLoss, loss_weight: 0.1, temperature: 0.1}

For networks that return several outputs (MPRNet's stages), the first is the restored image
(:func:`~uniremoval.utils.pixel_range.final_output`).
"""
from collections import OrderedDict

from basicsr.models.sr_model import SRModel
from basicsr.utils.registry import MODEL_REGISTRY
from uniremoval.models.model_mixins import SafeCheckpointMixin, build_optional_loss, perceptual_terms, step_generator
from uniremoval.utils.pixel_range import final_output


@MODEL_REGISTRY.register()
class ContrastiveRestorationModel(SafeCheckpointMixin, SRModel):
    """``SRModel`` with an optional contrastive term (see module docstring); the ``l_contrast`` term is logged."""

    def init_training_settings(self):
        self.cri_contrastive = build_optional_loss(self.opt['train'], 'contrastive_opt', self.device)
        super().init_training_settings()

    def optimize_parameters(self, current_iter):
        self.optimizer_g.zero_grad()
        self.output = final_output(self.net_g(self.lq))
        l_total = 0
        loss_dict = OrderedDict()
        if self.cri_pix:
            loss_dict['l_pix'] = self.cri_pix(self.output, self.gt)
            l_total = l_total + loss_dict['l_pix']
        for name, value in perceptual_terms(self.cri_perceptual, self.output, self.gt).items():
            loss_dict[name] = value
            l_total = l_total + value
        if self.cri_contrastive:
            if self.lq.shape != self.output.shape:
                raise ValueError(f'train:contrastive_opt uses the inputs as negatives and needs outputs of the input '
                                 f'size (restoration, scale 1); got lq {tuple(self.lq.shape)}, '
                                 f'output {tuple(self.output.shape)}')
            negatives = self.lq.unsqueeze(0).expand(self.lq.size(0), *self.lq.shape)
            loss_dict['l_contrast'] = self.cri_contrastive(self.output, self.gt, negatives)
            l_total = l_total + loss_dict['l_contrast']
        step_generator(self, loss_dict, l_total, current_iter)

    def test(self):
        super().test()
        self.output = final_output(self.output)
