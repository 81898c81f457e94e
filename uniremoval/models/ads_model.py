"""Step 4 of ADS (Park et al., CVPR 2023, slides "Method: Step 4 - CNN with adaptive discriminative filters").

CNN-ADS replaces every masked convolution of the unified model (UM) by

    theta_ads = theta_um + sum_d c_d * theta_d * M_d

(:class:`~uniremoval.archs.ads_arch.ADSNet`). :class:`ADSModel` trains only ``theta_d`` (at the masks
``M_d`` FAIG-SD chose in step 2); the UM and the degradation classifier (step 3) stay frozen, the UM
weights bit-identical to the loaded ones. At inference ``c`` is the classifier's softmax.

Options beyond BasicSR's ``SRModel`` (a full example: docs/design.md, "ADSModel options"):
``network_g`` of type ``ADSNet`` (``backbone``, ``num_degradations``, ``masks``, ``classifier``,
``degradations``); ``path.pretrain_network_um`` / ``param_key_um`` (required unless
``pretrain_network_g``, a whole ADS checkpoint, is set), ``pretrain_network_classifier`` /
``param_key_classifier``, optional ``pretrain_network_targets`` (``theta_d`` starts at
``(theta_target_d - theta_um) * M_d``); ``train.condition`` and ``val.condition``.

``train.condition``: ``true_type`` (default) feeds the one-hot of each sample's type label as ``c``, so
each sample updates only its own ``theta_d``, as the target model was fine-tuned on d alone in step 2;
``classifier`` trains through the frozen classifier's softmax, as at test time. ``val.condition``:
``classifier`` (default) or ``true_type`` (oracle).

Checkpoints (``net_g_<iter>.pth``, key ``params``) hold the whole ADSNet state dict (UM weights, specific
weights, masks and classifier), so ``uniremoval-restore`` and ``python -m uniremoval.evaluate`` load them
like any other network.
"""

import torch
from torch.nn import functional as F

from basicsr.archs import build_network
from basicsr.models.base_model import BaseModel
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY
from uniremoval.ads.adaptive_conv import resize_to_state_dict
from uniremoval.models.model_mixins import (PerTypeValidationMixin, SafeCheckpointMixin, StagedRestorationMixin,
                                            stage_supervision_losses, step_generator)
from uniremoval.utils.checkpoint import load_state_dict_file

CONDITIONS = ('true_type', 'classifier')


def _condition_option(opt, section, default):
    value = (opt.get(section) or {}).get('condition', default)
    if value not in CONDITIONS:
        raise ValueError(f'ADSModel: {section}:condition must be one of {CONDITIONS}, got {value!r}')
    return value


@MODEL_REGISTRY.register()
class ADSModel(PerTypeValidationMixin, StagedRestorationMixin, SafeCheckpointMixin, SRModel):
    """Trains the degradation-specific weights of an ``ADSNet`` with the UM and the classifier frozen."""

    def __init__(self, opt):
        self.opt = opt
        self.init_pixel_range()
        BaseModel.__init__(self, opt)
        if opt['network_g'].get('type') != 'ADSNet':
            raise ValueError(f"ADSModel: network_g:type must be ADSNet, got {opt['network_g'].get('type')!r}")
        self.net_g = self.model_to_device(build_network(opt['network_g']))
        self.print_network(self.net_g)
        self.train_condition = _condition_option(opt, 'train', 'true_type')
        self.val_condition = _condition_option(opt, 'val', 'classifier')
        self.load_pretrained()
        if self.is_train:
            self.init_training_settings()

    # ------------------------------------------------------------------ weights
    @property
    def ads_net(self):
        return self.get_bare_model(self.net_g)

    def load_pretrained(self):
        """Load ``path.pretrain_network_g`` (a whole ADS checkpoint) or else the UM, classifier and targets."""
        path_opt = self.opt['path']
        logger = get_root_logger()
        if path_opt.get('pretrain_network_g'):
            # the checkpoint carries its own masks: size the specific weights to them first, so that the
            # shape checks of load_network compare like with like (ADSNet.load_state_dict would do it too)
            file, key = path_opt['pretrain_network_g'], path_opt.get('param_key_g', 'params')
            resize_to_state_dict(self.ads_net.backbone, load_state_dict_file(file, key), prefix='backbone.')
            self.load_network(self.net_g, file, path_opt.get('strict_load_g', True), key)
            return
        um_path = path_opt.get('pretrain_network_um')
        if um_path:
            um_state = load_state_dict_file(um_path, path_opt.get('param_key_um', 'params'))
            try:
                self.ads_net.load_um_state_dict(um_state)
            except (KeyError, RuntimeError) as e:
                raise RuntimeError(f'ADSModel: path:pretrain_network_um {um_path} does not match '
                                   f"network_g:backbone {self.opt['network_g'].get('backbone')}: {e}") from e
            logger.info(f'ADSModel: unified model loaded from {um_path}')
        elif self.is_train:
            raise ValueError('ADSModel: set path:pretrain_network_um (the unified model of step 1) or '
                             'path:pretrain_network_g (a whole ADS checkpoint); ADS trains only the '
                             'degradation-specific weights on top of a trained UM')
        cls_path = path_opt.get('pretrain_network_classifier')
        classifier = getattr(self.ads_net, 'classifier', None)
        if cls_path:
            if classifier is None:
                raise ValueError('ADSModel: path:pretrain_network_classifier is set but network_g has no '
                                 'classifier (set network_g:classifier)')
            state = load_state_dict_file(cls_path, path_opt.get('param_key_classifier', 'params'))
            try:
                classifier.load_state_dict(state, strict=True)
            except RuntimeError as e:
                raise RuntimeError(f'ADSModel: path:pretrain_network_classifier {cls_path} does not match '
                                   f"network_g:classifier {self.opt['network_g'].get('classifier')}: {e}") from e
            logger.info(f'ADSModel: degradation classifier loaded from {cls_path}')
        elif classifier is not None:
            logger.warning('ADSModel: path:pretrain_network_classifier is not set: the classifier that weights '
                           'the specific filters at inference is untrained')
        targets = path_opt.get('pretrain_network_targets')
        if targets:
            self.init_specific_from_targets(targets, path_opt.get('param_key_targets', 'params'))

    def init_specific_from_targets(self, targets, param_key='params'):
        """Start each ``theta_d`` at ``(theta_target_d - theta_um) * M_d`` from the fine-tuned target models
        of step 2 (``targets``: {degradation name: checkpoint}), so that with ``c`` one-hot on d every masked
        filter equals the target model's."""
        names = list(self.ads_net.degradations)
        unknown = sorted(set(targets) - set(names))
        if unknown:
            raise ValueError(f'ADSModel: path:pretrain_network_targets names {unknown}, which are not in '
                             f'network_g:degradations {names}')
        for name, file in targets.items():
            d = names.index(name)
            state = load_state_dict_file(file, param_key)
            for layer, conv in self.ads_net.adaptive_layers().items():
                index = conv.selected_index(d)
                if index.numel() == 0:
                    continue
                key = f'{layer}.weight'
                if key not in state or state[key].shape != conv.weight.shape:
                    raise ValueError(f'ADSModel: target checkpoint {file} ({name}) has no {key!r} of shape '
                                     f'{tuple(conv.weight.shape)}; it must be the UM backbone fine-tuned on {name}')
                delta = state[key].to(conv.weight.device, conv.weight.dtype) - conv.weight.detach()
                conv.set_selection(d, index, delta.index_select(0, index))
        get_root_logger().info(f'ADSModel: specific weights initialised from the target models of {sorted(targets)}')

    # ------------------------------------------------------------------ training
    def init_training_settings(self):
        self.ads_net.freeze_um()
        self.ads_net.freeze_classifier()
        super().init_training_settings()
        self._frozen_modes()

    def _frozen_modes(self):
        """The frozen classifier stays in eval mode (its normalisation statistics must not move)."""
        classifier = getattr(self.ads_net, 'classifier', None)
        if classifier is not None:
            classifier.eval()

    def setup_optimizers(self):
        train_opt = self.opt['train']
        params = list(self.ads_net.specific_parameters())
        if not params:
            raise ValueError('ADSModel: the network has no degradation-specific parameters (empty masks?)')
        optim_opt = dict(train_opt['optim_g'])
        optim_type = optim_opt.pop('type')
        self.optimizer_g = self.get_optimizer(optim_type, params, **optim_opt)
        self.optimizers.append(self.optimizer_g)
        get_root_logger().info(f'ADSModel: optimising {sum(p.numel() for p in params):,} degradation-specific '
                               'weights; UM and classifier frozen')

    def feed_data(self, data):
        self.lq = data['lq'].to(self.device)
        if 'gt' in data:
            self.gt = data['gt'].to(self.device)
        self.type_index = self._type_indices(data) if ('label' in data or 'degradation' in data) else None

    def _type_indices(self, data):
        """Indices into ``network_g:degradations`` of the batch's samples (by name when the dataset gives one)."""
        names = list(getattr(self.ads_net, 'degradations', None) or [])
        k = self.ads_net.num_degradations
        if names and 'degradation' in data:
            try:
                idx = [names.index(n) for n in data['degradation']]
            except ValueError:
                raise ValueError(f"ADSModel: sample degradation(s) {sorted(set(data['degradation']) - set(names))} "
                                 f'are not in network_g:degradations {names}') from None
            return torch.tensor(idx, dtype=torch.long, device=self.device)
        label = torch.as_tensor(data['label'], dtype=torch.long)
        if int(label.min()) < 0 or int(label.max()) >= k:
            raise ValueError(f'ADSModel: sample labels {label.unique().tolist()} outside [0, {k}) '
                             '(network_g:num_degradations)')
        return label.to(self.device)

    def condition(self, mode):
        """``c`` for the current batch: one-hot of the true types, or ``None`` (the classifier's softmax)."""
        if mode == 'classifier':
            return None
        if self.type_index is None:
            raise ValueError('ADSModel: condition true_type needs samples with a `label` or `degradation` '
                             '(MultiDegradationDataset gives both)')
        return F.one_hot(self.type_index, self.ads_net.num_degradations).to(self.lq.dtype)

    def run(self, net, lq, mode):
        """All outputs of ``net`` for [0, 1] ``lq`` under condition ``mode``, in [0, 1] (final first)."""
        return self._stages_in_data_range(net(self.to_network_range(lq), self.condition(mode)))

    def optimize_parameters(self, current_iter):
        self._frozen_modes()
        self.optimizer_g.zero_grad()
        outputs = self.run(self.net_g, self.lq, self.train_condition)
        self.output = outputs[0]
        loss_dict = stage_supervision_losses(outputs, self.gt, self.cri_pix, cri_perceptual=self.cri_perceptual)
        l_total = sum(loss_dict.values())
        step_generator(self, loss_dict, l_total, current_iter)

    def test(self):
        net = self.net_g_ema if hasattr(self, 'net_g_ema') else self.net_g
        was_training = net.training
        net.eval()
        with torch.no_grad():
            self.output = self.run(net, self.lq, self.val_condition)[0]
        net.train(was_training)
        if was_training:
            self._frozen_modes()
