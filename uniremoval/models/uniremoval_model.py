"""Uni-Removal's training stages as BasicSR models (arXiv 2307.05075, §III-B, §III-C, §III-D).

:class:`UniRemovalKTModel`, knowledge transfer: k frozen MPRNet teachers (one per degradation type, eval
mode, no autograd, never saved) distil into one student MPRNet with

    L_KT = L_pix + lambda_i * L_CL^img + lambda_f(epoch) * L_CL^feat          (Eqs. 1, 3-6)

* ``L_pix`` (Eq. 1, ``train.pixel_opt``): L1 to the restored image of the sample's own teacher.
* ``L_CL^img`` (Eq. 4, ``train.image_cl_opt``, VGG-19): anchor the student's output, positive the teacher's,
  negatives the batch's degraded inputs (all types, its own included).
* ``L_CL^feat`` (Eq. 3, ``train.feature_cl_opt``): anchor the student's features, positive the teacher's,
  negatives the student's features of the batch's samples of *other* types.

``lambda_i``, ``lambda_f``: the losses' ``loss_weight`` (paper: 0.5, 0.1); the paper's "small trade-off
weight ... gradually reduce[d]" is ``lambda_f * decay**epoch``, ``train.feature_cl_decay`` (0.99, §IV-A2).

:class:`UniRemovalDAModel`, domain adaptation (Eqs. 7-13), fine-tunes it against a discriminator with

    L_DA = lambda_adv * L_adv + lambda_idt * L_idt + lambda_i * L_EXCL^img + lambda_f(epoch) * L_EXCL^feat

on unpaired real degraded images (k labelled types) and real clear images: ``L_adv`` (Eq. 7,
``train.gan_opt``), ``L_idt`` (Eq. 8, ``train.identity_opt``: clear images stay unchanged),
``L_EXCL^img`` (Eq. 11, ``train.image_cl_opt``) and ``L_EXCL^feat`` (Eq. 10, ``train.feature_cl_opt``,
decaying as above): anchor a restored real degraded image (or its features), positives the batch's
restored clear images (detached targets), negatives the degraded inputs of other types.
"""
from collections import OrderedDict
from copy import deepcopy

import torch

from basicsr.archs import build_network
from basicsr.models.sr_model import SRModel
from basicsr.models.srgan_model import SRGANModel
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY
from uniremoval.models.model_mixins import (EpochSchedulerMixin, PerTypeValidationMixin, SafeCheckpointMixin,
                                            StagedRestorationMixin, build_optional_loss, check_finite_losses,
                                            step_generator)

SUPERVISED_STAGES = ('final', 'all')
IMAGE_CL_NEGATIVES = ('all', 'other_types')


def choice_option(train_opt, key, choices, default):
    """``train.<key>``, checked against ``choices`` (ValueError naming the key otherwise)."""
    value = train_opt.get(key, default)
    if value not in choices:
        raise ValueError(f'train:{key} must be one of {list(choices)}, got {value!r}')
    return value


def decayed_weight(base, decay, epoch):
    """``base * decay**epoch``: the per-epoch decay of the feature-grained weight (§III-B, §IV-A2)."""
    return base * decay**epoch


class FeatureDecayMixin:
    """Per-epoch decay of a feature-grained loss weight (§III-B, §III-C: lambda_f x 0.99 per epoch)."""

    def _init_feature_decay(self, train_opt):
        self.feature_cl_decay = float(train_opt.get('feature_cl_decay', 1.0))
        self.iters_per_epoch = train_opt.get('iters_per_epoch')
        if train_opt.get('feature_cl_opt') and self.feature_cl_decay != 1.0 and not self.iters_per_epoch:
            raise ValueError('train:feature_cl_decay needs train:iters_per_epoch (basicsr train sets it from the '
                             'train loader)')

    def epoch_of(self, current_iter):
        """0-based epoch of a 1-based iteration, from ``train.iters_per_epoch``."""
        return (current_iter - 1) // self.iters_per_epoch if self.iters_per_epoch else 0

    def feature_weight(self, current_iter):
        return decayed_weight(1.0, self.feature_cl_decay, self.epoch_of(current_iter))


def other_type_mask(labels):
    """(B, B) bool: entry (i, j) is True where sample j has another degradation type than sample i."""
    return labels.unsqueeze(1) != labels.unsqueeze(0)


def batch_as_set(x):
    """Expand (B, ...) to a (B, B, ...) view: every anchor sees the whole batch (no copy)."""
    return x.unsqueeze(0).expand(x.size(0), *x.shape)


@MODEL_REGISTRY.register()
class UniRemovalKTModel(FeatureDecayMixin, StagedRestorationMixin, PerTypeValidationMixin, SafeCheckpointMixin,
                        EpochSchedulerMixin, SRModel):
    """Knowledge-transfer stage of Uni-Removal (see module docstring).

    Options beyond ``SRModel``'s::

        teachers:                       # one per degradation type, in label order (label = index)
          - name: haze                  # must match the dataset's source names
            pretrain_path: experiments/teacher_haze/models/net_g_latest.pth
            param_key: params           # 'state_dict' for official MPRNet checkpoints
            network: ~                  # default: same as network_g (paper: same structure)
        train:
          pixel_opt: {type: L1Loss, loss_weight: 1.0}
          image_cl_opt: {type: ImageContrastiveLoss, loss_weight: 0.5, temperature: 1.0e-6}
          feature_cl_opt: {type: ContrastiveLoss, loss_weight: 0.1, temperature: 1.0e-6}
          feature_cl_decay: 0.99        # per epoch
          iters_per_epoch: ~            # default: batches per epoch of the train loader (set by basicsr train)
          supervised_stages: final      # 'all': Eq. 1 summed over MPRNet's three stage outputs
          scheduler: {type: EpochExponentialLR, gamma: 0.99}   # or any BasicSR scheduler
        feat_layers: [orsnet]           # student/teacher features compared by feature_cl_opt
    """

    def __init__(self, opt):
        self.opt = opt
        self.init_pixel_range()
        super().__init__(opt)
        if self.is_train:
            self._build_teachers()

    # ------------------------------------------------------------------ set-up
    def _build_teachers(self):
        teachers_opt = self.opt.get('teachers')
        if not teachers_opt:
            raise ValueError("UniRemovalKTModel needs a 'teachers' list (name, pretrain_path) in the option file")
        logger = get_root_logger()
        self.teacher_names, self.net_teachers = [], []
        for i, t_opt in enumerate(teachers_opt):
            for key in ('name', 'pretrain_path'):
                if not t_opt.get(key):
                    raise ValueError(f'teachers[{i}] lacks {key!r}')
            net = build_network(deepcopy(t_opt.get('network') or self.opt['network_g'])).to(self.device)
            self.load_network(net, t_opt['pretrain_path'], t_opt.get('strict_load', True),
                              t_opt.get('param_key', 'params'))
            net.eval()
            net.requires_grad_(False)
            self.teacher_names.append(t_opt['name'])
            self.net_teachers.append(net)
            logger.info(f"Teacher {i} ({t_opt['name']}) loaded from {t_opt['pretrain_path']}")

    def init_training_settings(self):
        train_opt = self.opt['train']
        self.cri_image_cl = build_optional_loss(train_opt, 'image_cl_opt', self.device)
        self.cri_feature_cl = build_optional_loss(train_opt, 'feature_cl_opt', self.device)
        self.supervised_stages = choice_option(train_opt, 'supervised_stages', SUPERVISED_STAGES, 'final')
        self._init_feature_decay(train_opt)
        super().init_training_settings()  # pixel_opt (Eq. 1), optimizers, schedulers

    # ------------------------------------------------------------------ training
    def feed_data(self, data):
        self.lq = data['lq'].to(self.device)
        if 'gt' in data:
            self.gt = data['gt'].to(self.device)
        self.labels = data['label'].to(self.device).long() if 'label' in data else None
        self.degradations = data.get('degradation')

    def _check_teacher_order(self):
        """Labels index ``teachers``: the dataset's source of label i must be teacher i's type."""
        if self.degradations is None:
            return
        for label, name in zip(self.labels.tolist(), self.degradations):
            if 0 <= label < len(self.teacher_names) and self.teacher_names[label] != name:
                raise ValueError(f'Sample of type {name!r} has label {label}, but teachers[{label}] is '
                                 f'{self.teacher_names[label]!r}: list `teachers` in the order of the '
                                 f'dataset `sources` ({self.teacher_names})')

    @torch.no_grad()
    def teacher_targets(self, lq, labels):
        """Route each sample to the teacher of its label; return its restored images and features."""
        if labels is None:
            raise ValueError('UniRemovalKTModel needs a label per sample (use MultiDegradationDataset)')
        if int(labels.min()) < 0 or int(labels.max()) >= len(self.net_teachers):
            raise ValueError(f'labels {labels.tolist()} out of range for {len(self.net_teachers)} teachers')
        restored, feats = None, None
        for t, teacher in enumerate(self.net_teachers):
            idx = (labels == t).nonzero(as_tuple=True)[0]
            if idx.numel() == 0:
                continue
            t_restored, t_feats = self.restore_with_feats(teacher, lq[idx])
            if restored is None:
                restored = lq.new_zeros((lq.size(0), ) + t_restored.shape[1:])
                feats = [f.new_zeros((lq.size(0), ) + f.shape[1:]) for f in t_feats]
            restored[idx] = t_restored
            for buf, f in zip(feats, t_feats):
                buf[idx] = f
        return restored, feats

    def compute_losses(self, current_iter):
        """All KT loss terms for the fed batch (Eqs. 1, 3-6); returns (total, OrderedDict of terms)."""
        stages, s_feats = self.restore_stages_with_feats(self.net_g, self.lq)
        output = self.output = stages[0]
        t_output, t_feats = self.teacher_targets(self.lq, self.labels)
        self._check_teacher_order()
        loss_dict = OrderedDict()
        l_total = 0
        if self.cri_pix:  # Eq. 1 on the final output, or on every stage output ('all', as MPRNet trains)
            supervised = stages if self.supervised_stages == 'all' else stages[:1]
            loss_dict['l_pix'] = sum(self.cri_pix(out, t_output) for out in supervised)
            l_total = l_total + loss_dict['l_pix']
        if self.cri_image_cl:
            loss_dict['l_cl_img'] = self.cri_image_cl(output, t_output, batch_as_set(self.lq))
            l_total = l_total + loss_dict['l_cl_img']
        if self.cri_feature_cl:
            weight = self.feature_weight(current_iter)
            other_type = other_type_mask(self.labels)
            l_feat = 0
            for s_f, t_f in zip(s_feats, t_feats):
                l_feat = l_feat + self.cri_feature_cl(s_f, t_f, batch_as_set(s_f), neg_mask=other_type)
            loss_dict['l_cl_feat'] = weight * l_feat
            # on the model's device: BasicSR's reduce_loss_dict stacks every logged value (multi-GPU runs)
            loss_dict['w_cl_feat'] = torch.tensor(weight * self.cri_feature_cl.loss_weight, device=self.device)
            l_total = l_total + loss_dict['l_cl_feat']
        return l_total, loss_dict

    def optimize_parameters(self, current_iter):
        self.optimizer_g.zero_grad()
        l_total, loss_dict = self.compute_losses(current_iter)
        loss_dict['l_total'] = l_total
        step_generator(self, loss_dict, l_total, current_iter)


@MODEL_REGISTRY.register()
class UniRemovalDAModel(FeatureDecayMixin, StagedRestorationMixin, PerTypeValidationMixin, SafeCheckpointMixin,
                        EpochSchedulerMixin, SRGANModel):
    """Domain-adaptation stage of Uni-Removal (see module docstring).

    BasicSR's ``SRGANModel`` provides the discriminator ``network_d``, ``optim_d``, ``gan_opt``,
    ``net_d_iters`` / ``net_d_init_iters`` and saving of both networks; the student starts from the
    KT checkpoint given as ``path.pretrain_network_g``. Options beyond those::

        feat_layers: [orsnet]
        train:
          identity_opt: {type: L1Loss, loss_weight: 0.1}
          image_cl_opt: {type: ExtendedImageContrastiveLoss, loss_weight: 0.5, temperature: 1.0e-6}
          feature_cl_opt: {type: ExtendedContrastiveLoss, loss_weight: 0.1, temperature: 1.0e-6}
          feature_cl_decay: 0.99
          supervised_stages: final      # 'all': the identity loss on every MPRNet stage output
          image_cl_negatives: all       # Eq. 11's negatives: 'all' degraded inputs of the batch (paper),
                                        # or 'other_types' (only inputs of another degradation type)

    Batches come from ``UnpairedDegradationDataset``: ``lq`` (real degraded), ``clear`` (real clear,
    independently drawn), ``label``; ``gt`` where the degraded set has ground truth (validation).
    """

    def __init__(self, opt):
        self.opt = opt
        self.init_pixel_range()
        super().__init__(opt)

    def init_training_settings(self):
        train_opt = self.opt['train']
        self.cri_identity = build_optional_loss(train_opt, 'identity_opt', self.device)
        self.cri_image_cl = build_optional_loss(train_opt, 'image_cl_opt', self.device)
        self.cri_feature_cl = build_optional_loss(train_opt, 'feature_cl_opt', self.device)
        self.supervised_stages = choice_option(train_opt, 'supervised_stages', SUPERVISED_STAGES, 'final')
        self.image_cl_negatives = choice_option(train_opt, 'image_cl_negatives', IMAGE_CL_NEGATIVES, 'all')
        self._init_feature_decay(train_opt)
        if not train_opt.get('gan_opt'):  # BasicSR's SRGANModel would leave cri_gan unset and fail later
            raise ValueError('UniRemovalDAModel needs train:gan_opt (the adversarial loss of Eq. 7)')
        super().init_training_settings()  # net_d, gan_opt, optimizers, schedulers

    def feed_data(self, data):
        self.lq = data['lq'].to(self.device)
        self.gt = data['gt'].to(self.device) if 'gt' in data else None
        if self.gt is None:
            del self.gt
        self.clear = data['clear'].to(self.device) if 'clear' in data else None
        self.labels = data['label'].to(self.device).long() if 'label' in data else None

    def generator_losses(self, current_iter):
        """All student loss terms for the fed batch (Eqs. 7-13); returns (total, OrderedDict of terms)."""
        if self.clear is None or self.labels is None:
            raise ValueError('UniRemovalDAModel trains on batches with clear and label (UnpairedDegradationDataset)')
        restored, deg_feats = self.restore_with_feats(self.net_g, self.lq)
        clear_stages, clear_feats = self.restore_stages_with_feats(self.net_g, self.clear)
        clear_out = clear_stages[0]
        self.output = restored
        other_type = other_type_mask(self.labels)
        loss_dict = OrderedDict()
        loss_dict['l_g_gan'] = self.cri_gan(self.net_d(restored), True, is_disc=False)
        if self.cri_identity:  # Eq. 8 on the final output, or on every stage output ('all')
            supervised = clear_stages if self.supervised_stages == 'all' else clear_stages[:1]
            loss_dict['l_idt'] = sum(self.cri_identity(out, self.clear) for out in supervised)
        if self.cri_image_cl:  # Eq. 11: negatives "a batch of real-world degraded images" (all types by default)
            neg_mask = other_type if self.image_cl_negatives == 'other_types' else None
            loss_dict['l_excl_img'] = self.cri_image_cl(
                restored, batch_as_set(clear_out.detach()), batch_as_set(self.lq), neg_mask=neg_mask)
        if self.cri_feature_cl:
            weight = self.feature_weight(current_iter)
            l_feat = 0
            for d_f, c_f in zip(deg_feats, clear_feats):
                l_feat = l_feat + self.cri_feature_cl(d_f, batch_as_set(c_f.detach()), batch_as_set(d_f),
                                                      neg_mask=other_type)
            loss_dict['l_excl_feat'] = weight * l_feat
            # on the model's device: BasicSR's reduce_loss_dict stacks every logged value (multi-GPU runs)
            loss_dict['w_excl_feat'] = torch.tensor(weight * self.cri_feature_cl.loss_weight, device=self.device)
        l_total = sum(v for k, v in loss_dict.items() if not k.startswith('w_'))
        return l_total, loss_dict

    def generator_step(self, current_iter):
        """One student update with the discriminator frozen; returns its logged terms."""
        self.net_d.requires_grad_(False)
        self.optimizer_g.zero_grad()
        l_total, loss_dict = self.generator_losses(current_iter)
        check_finite_losses(dict(loss_dict, l_g_total=l_total), current_iter, self.opt,
                            lrs=self.get_current_learning_rate())
        l_total.backward()
        self.optimizer_g.step()
        loss_dict['l_g_total'] = l_total.detach()
        return loss_dict

    def discriminator_step(self, current_iter=None):
        """One discriminator update: real clear images are real, restored degraded images fake."""
        self.net_d.requires_grad_(True)
        self.optimizer_d.zero_grad()
        if not hasattr(self, 'output'):
            with torch.no_grad():
                self.output = self.restore_with_feats(self.net_g, self.lq)[0]
        real_d_pred = self.net_d(self.clear)
        l_d_real = self.cri_gan(real_d_pred, True, is_disc=True)
        fake_d_pred = self.net_d(self.output.detach())
        l_d_fake = self.cri_gan(fake_d_pred, False, is_disc=True)
        check_finite_losses({'l_d_real': l_d_real, 'l_d_fake': l_d_fake}, current_iter, self.opt,
                            lrs=[group['lr'] for group in self.optimizer_d.param_groups])
        (l_d_real + l_d_fake).backward()
        self.optimizer_d.step()
        return OrderedDict(l_d_real=l_d_real, l_d_fake=l_d_fake, out_d_real=real_d_pred.detach().mean(),
                           out_d_fake=fake_d_pred.detach().mean())

    def optimize_parameters(self, current_iter):
        loss_dict = OrderedDict()
        if hasattr(self, 'output'):
            del self.output
        if current_iter % self.net_d_iters == 0 and current_iter > self.net_d_init_iters:
            loss_dict.update(self.generator_step(current_iter))
        loss_dict.update(self.discriminator_step(current_iter))
        self.log_dict = self.reduce_loss_dict(loss_dict)
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)
