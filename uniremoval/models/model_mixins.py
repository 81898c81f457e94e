"""Behaviour shared by the uniremoval models on top of BasicSR's ``BaseModel``.

:class:`StagedRestorationMixin` runs a multi-stage network (MPRNet) in its pixel range.
:class:`PerTypeValidationMixin` reports validation metrics per degradation type.
:func:`build_optional_loss` builds a ``train.<key>`` loss where the option is set.
:func:`perceptual_terms` splits BasicSR's ``PerceptualLoss`` into its logged terms;
:func:`stage_supervision_losses` is MPRNet's supervised objective over the stage outputs (teacher, ADS).
:func:`check_finite_losses` stops training with :class:`NonFiniteLossError` when a loss term is NaN or inf.
:class:`EpochSchedulerMixin` adds the per-epoch ``EpochExponentialLR`` schedule to ``setup_schedulers``.
:class:`SafeCheckpointMixin` replaces three ``BaseModel`` methods:

* ``load_network`` reads with ``weights_only=True`` and also accepts official ``{'state_dict': ...}``
  checkpoints (MPRNet's release format), with or without ``module.`` prefixes;
* ``save_network`` and ``save_training_state`` write through a temporary file and rename it, so a
  kill during saving leaves the previous checkpoint intact and ``--auto_resume`` never picks up a
  truncated state; training states also hold every rank's random generators and the position in the
  epoch (``self.train_position``, set by ``uniremoval.train``), so a resumed run continues exactly;

and inherits :class:`DistributedTrainingMixin` (DDP on CPU with Gloo or on GPUs with NCCL, loss logging
across ranks, validation on rank 0), so every model that mixes in ``SafeCheckpointMixin`` trains
distributed.
"""
from collections import OrderedDict
from os import path as osp

import numpy as np
import torch
from torch.nn.parallel import DataParallel, DistributedDataParallel
from tqdm import tqdm

from basicsr.losses import build_loss
from basicsr.metrics import calculate_metric
from basicsr.utils import get_root_logger, tensor2img
from basicsr.utils.dist_util import master_only
from uniremoval.metrics.metric_util import is_no_reference
from uniremoval.models.lr_scheduler import EpochExponentialLR
from uniremoval.utils.atomic_io import atomic_imwrite
from uniremoval.utils.checkpoint import atomic_torch_save, capture_rng_state, load_state_dict_file, strip_module_prefix
from uniremoval.utils.checkpoint_record import RECORD_KEY, make_record
from uniremoval.utils.dist_util import (all_gather_object, barrier, broadcast_module_state, broadcast_object,
                                        is_distributed)
from uniremoval.utils.errors import RunFailure
from uniremoval.utils.pixel_range import final_output, from_network_range, parse_pixel_range, to_network_range
from uniremoval.utils.state_dict_check import check_state_dict


class DistributedTrainingMixin:
    """torch.distributed behaviour of the uniremoval models (``--launcher pytorch|slurm``).

    * ``model_to_device`` wraps networks in ``DistributedDataParallel`` with ``device_ids`` only on CUDA,
      so CPU processes (Gloo) work; BasicSR 1.4.2 always passes ``torch.cuda.current_device()``.
      DDP averages the gradients over the ranks: with ``batch_size_per_gpu`` B on N ranks, one step is
      the mean gradient of the N per-rank losses (= a batch of N x B for losses that are per-sample means).
    * ``reduce_loss_dict`` casts every logged value to a float scalar on the model's device before
      BasicSR stacks and reduces them (a CPU tensor or python number among CUDA tensors fails there).
    * ``dist_validation``: rank 0 validates the whole set (images, metrics, logs) with the bare networks
      while the other ranks wait at a barrier; the metric results are then broadcast, so every rank holds
      rank 0's values. Validation sets are small next to training, and this keeps one code path
      (``nondist_validation``) for every model; rank 0's time is the cost. The process-group timeout
      (``dist_params.timeout_s``, default 1800 s) must exceed one validation.
    """

    def sync_loss_modules(self):
        """Give every rank rank 0's loss networks (``self.cri_*`` modules, e.g. an untrained VGG-19 of the
        contrastive losses, drawn from each rank's own seed ``manual_seed + rank``). Called by
        ``uniremoval.train`` after building the model; no-op in a single process."""
        for name, module in sorted(vars(self).items()):
            if name.startswith('cri_') and isinstance(module, torch.nn.Module):
                broadcast_module_state(module)

    def model_to_device(self, net):
        net = net.to(self.device)
        if self.opt.get('dist'):
            device_ids = [torch.cuda.current_device()] if self.device.type == 'cuda' else None
            return DistributedDataParallel(
                net, device_ids=device_ids, find_unused_parameters=self.opt.get('find_unused_parameters', False))
        if self.opt['num_gpu'] > 1:
            return DataParallel(net)
        return net

    def reduce_loss_dict(self, loss_dict):
        if self.opt.get('dist'):
            loss_dict = OrderedDict((name, torch.as_tensor(value).detach().float().mean().to(self.device))
                                    for name, value in loss_dict.items())
        return super().reduce_loss_dict(loss_dict)

    def dist_validation(self, dataloader, current_iter, tb_logger, save_img):
        if self.opt['rank'] == 0:
            wrapped = {name: net for name, net in vars(self).items()
                       if name.startswith('net_') and isinstance(net, (DataParallel, DistributedDataParallel))}
            try:  # the bare networks: a DDP forward on one rank alone could wait for the others (buffer sync)
                for name, net in wrapped.items():
                    setattr(self, name, net.module)
                self.nondist_validation(dataloader, current_iter, tb_logger, save_img)
            finally:
                for name, net in wrapped.items():
                    setattr(self, name, net)
        barrier()
        keys = ('metric_results', 'metric_results_per_type', 'best_metric_results')
        shared = broadcast_object({k: getattr(self, k) for k in keys if hasattr(self, k)})
        for key, value in shared.items():
            setattr(self, key, value)


class SafeCheckpointMixin(DistributedTrainingMixin):
    """Mix in before a BasicSR model class: ``class M(SafeCheckpointMixin, SRModel)``."""

    def load_network(self, net, load_path, strict=True, param_key='params'):
        state_dict = load_state_dict_file(load_path, param_key)
        bare = self.get_bare_model(net)
        get_root_logger().info(f'Loading {bare.__class__.__name__} model from {load_path}, '
                               f'with param key: [{param_key}].')
        self._print_different_keys_loading(bare, state_dict, strict)
        check_state_dict(bare, state_dict, load_path, strict=strict)
        bare.load_state_dict(state_dict, strict=strict)

    @master_only
    def save_network(self, net, net_label, current_iter, param_key='params'):
        if current_iter == -1:
            current_iter = 'latest'
        nets = net if isinstance(net, list) else [net]
        param_keys = param_key if isinstance(param_key, list) else [param_key]
        if len(nets) != len(param_keys):
            raise ValueError(f'save_network: {len(nets)} networks but {len(param_keys)} param keys')
        save_dict = {}
        for net_, key in zip(nets, param_keys):
            state_dict = self.get_bare_model(net_).state_dict()
            save_dict[key] = strip_module_prefix({k: v.cpu() for k, v in state_dict.items()})
        if net_label == 'net_g' and isinstance(self.opt.get('network_g'), dict):
            # what the network was trained for, so later commands need no option file (BasicSR ignores the key)
            save_dict[RECORD_KEY] = make_record(self.opt)
        atomic_torch_save(save_dict, osp.join(self.opt['path']['models'], f'{net_label}_{current_iter}.pth'))

    def save_training_state(self, epoch, current_iter):
        """Write ``<iter>.state`` (rank 0): BasicSR's epoch, iter, optimizers and schedulers, plus

        * ``rng_states``: per rank, ``{'now': ..., 'epoch_start': ...}`` (python, numpy, torch generators now
          and before the epoch's data iterator was made; gathered from every rank, so called on all ranks);
        * ``train_position``: ``{'iter_in_epoch', 'iters_per_epoch'}`` from ``self.train_position``.
        """
        if current_iter == -1:
            return
        position = dict(getattr(self, 'train_position', None) or {})
        rng = {'now': capture_rng_state(), 'epoch_start': position.pop('epoch_rng', None)}
        rng_states = all_gather_object(rng)
        if self.opt.get('rank', 0) != 0:
            return
        state = {
            'epoch': epoch,
            'iter': current_iter,
            'optimizers': [o.state_dict() for o in self.optimizers],
            'schedulers': [s.state_dict() for s in self.schedulers],
            'rng_states': rng_states,
            'train_position': position,
        }
        atomic_torch_save(state, osp.join(self.opt['path']['training_states'], f'{current_iter}.state'))


class StagedRestorationMixin:
    """Runs a multi-stage restoration network (outputs final first) in its pixel range.

    Maps [0, 1] data to the network's root option ``pixel_range`` and back
    (:mod:`uniremoval.utils.pixel_range`; the paper normalises to [-1, 1], arXiv 2307.05075 §IV-A1);
    ``test()`` keeps the final stage's output as ``self.output``. Call :meth:`init_pixel_range` in
    ``__init__`` before ``super().__init__(opt)``.
    """

    def init_pixel_range(self):
        """Read the root options ``pixel_range`` and ``feat_layers``."""
        self.pixel_range = parse_pixel_range(self.opt)
        # intermediate features compared by Uni-Removal's feature-grained losses (see MPRNet.forward)
        self.feat_layers = tuple(self.opt.get('feat_layers') or ('orsnet',))

    def to_network_range(self, img):
        return to_network_range(img, self.pixel_range)

    def from_network_range(self, img):
        return from_network_range(img, self.pixel_range)

    def _stages_in_data_range(self, outputs):
        """A network's output (one tensor, or the stage outputs final first) as a list in [0, 1]."""
        if isinstance(outputs, torch.Tensor):
            outputs = [outputs]
        return [self.from_network_range(o) for o in outputs]

    def stage_outputs(self, net, lq):
        """All stage outputs of ``net`` for [0, 1] input ``lq``, in [0, 1]."""
        return self._stages_in_data_range(net(self.to_network_range(lq)))

    def restore_stages_with_feats(self, net, img):
        """All stage outputs (final first, in [0, 1]) of ``net`` for [0, 1] input ``img`` and its ``feat_layers``
        features."""
        outputs, feats = net(self.to_network_range(img), return_feats=True, feat_layers=self.feat_layers)
        return self._stages_in_data_range(outputs), feats

    def restore_with_feats(self, net, img):
        """Final restored image of ``net`` for [0, 1] input ``img`` (in [0, 1]) and its ``feat_layers`` features."""
        outputs, feats = net(self.to_network_range(img), return_feats=True, feat_layers=self.feat_layers)
        return self.from_network_range(final_output(outputs)), feats

    def test(self):
        net = self.net_g_ema if hasattr(self, 'net_g_ema') else self.net_g
        was_training = net.training
        net.eval()
        with torch.no_grad():
            self.output = self.stage_outputs(net, self.lq)[0]
        net.train(was_training)


class PerTypeValidationMixin:
    """Validation that reports every ``val.metrics`` entry per degradation type and their mean.

    Samples carry their type name under ``degradation`` (``MultiDegradationDataset``,
    ``UnpairedDegradationDataset``); samples without it count under the dataset's name.
    Full-reference metrics (PSNR, SSIM) are computed where a sample has ground truth and skipped
    where it has none; no-reference metrics (NIQE, BRISQUE, PIQE:
    :data:`~uniremoval.metrics.metric_util.NO_REFERENCE_METRICS`) are computed for every sample, so
    real test sets without ground truth validate too.
    ``self.metric_results`` holds each metric's mean over the types that have it (what BasicSR's
    best-metric tracking and ``basicsr test`` read) and ``self.metric_results_per_type[type][metric]``
    the per-type averages. Restored images are saved under ``visualization/<type>/`` when
    ``save_img`` is set. Uni-Removal reports per-type scores (arXiv 2307.05075, Tables I-V).
    """

    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img):
        dataset_name = dataloader.dataset.opt['name']
        metrics_opt = self.opt['val'].get('metrics') or {}
        sums, counts = {}, {}
        pbar = tqdm(total=len(dataloader), unit='image', desc=f'Val {dataset_name}') \
            if self.opt['val'].get('pbar', False) else None
        for val_data in dataloader:
            types = val_data.get('degradation', [dataset_name] * val_data['lq'].size(0))
            self.feed_data(val_data)
            self.test()
            results = self.output.detach().cpu()
            gts = self.gt.detach().cpu() if hasattr(self, 'gt') else None
            for i, kind in enumerate(types):
                img_name = osp.splitext(osp.basename(val_data['lq_path'][i]))[0]
                sr_img = tensor2img([results[i:i + 1]])
                if save_img:
                    suffix = current_iter if self.opt['is_train'] else (
                        self.opt['val'].get('suffix') or self.opt['name'])
                    folder = osp.join(self.opt['path']['visualization'], kind)
                    atomic_imwrite(sr_img, osp.join(folder, f'{img_name}_{suffix}.png'))
                data = {'img': sr_img}
                if gts is not None:
                    data['img2'] = tensor2img([gts[i:i + 1]])
                for name, opt_ in metrics_opt.items():
                    if not is_no_reference(opt_['type']) and 'img2' not in data:
                        continue
                    sums.setdefault(kind, {}).setdefault(name, 0.0)
                    counts.setdefault(kind, {}).setdefault(name, 0)
                    sums[kind][name] += float(calculate_metric(data, opt_))
                    counts[kind][name] += 1
            for attr in ('lq', 'gt', 'output'):
                if hasattr(self, attr):
                    delattr(self, attr)
            if pbar:
                pbar.update(1)
        if pbar:
            pbar.close()
        if not sums:
            return
        self.metric_results_per_type = {
            kind: {m: total / counts[kind][m] for m, total in by_metric.items()} for kind, by_metric in sums.items()}
        self.metric_results = {}
        for metric in metrics_opt:
            values = [r[metric] for r in self.metric_results_per_type.values() if metric in r]
            if values:
                self.metric_results[metric] = float(np.mean(values))
        self._initialize_best_metric_results(dataset_name)
        for metric, value in self.metric_results.items():
            self._update_best_metric_result(dataset_name, metric, value, current_iter)
        self._log_per_type_metrics(current_iter, dataset_name, tb_logger)

    def _log_per_type_metrics(self, current_iter, dataset_name, tb_logger):
        log_str = f'Validation {dataset_name}\n'
        for kind, values in sorted(self.metric_results_per_type.items()):
            log_str += f'\t [{kind}] ' + ' '.join(f'{m}: {v:.4f}' for m, v in values.items()) + '\n'
        for metric, value in self.metric_results.items():
            best = self.best_metric_results[dataset_name][metric]
            log_str += f'\t # {metric}: {value:.4f}\tBest: {best["val"]:.4f} @ {best["iter"]} iter\n'
        get_root_logger().info(log_str)
        if tb_logger:
            for kind, values in self.metric_results_per_type.items():
                for metric, value in values.items():
                    tb_logger.add_scalar(f'metrics/{dataset_name}/{kind}/{metric}', value, current_iter)
            for metric, value in self.metric_results.items():
                tb_logger.add_scalar(f'metrics/{dataset_name}/{metric}', value, current_iter)


class EpochSchedulerMixin:
    """``setup_schedulers`` that also builds :class:`~uniremoval.models.lr_scheduler.EpochExponentialLR`.

    Uni-Removal decays the learning rate by 0.99 on every epoch in both stages (arXiv 2307.05075, §IV-A2).
    Mix in before a BasicSR model class (``class M(EpochSchedulerMixin, SRModel)``) and set::

        train:
          scheduler:
            type: EpochExponentialLR
            gamma: 0.99
            iters_per_epoch: ~   # default: train.iters_per_epoch (uniremoval's train sets it to len(train_loader))

    One scheduler is built per optimizer, stepped per iteration by ``update_learning_rate`` as usual; any
    other ``type`` goes to BasicSR's ``setup_schedulers`` (MultiStepLR, CosineAnnealingRestartLR, or its
    ``NotImplementedError``).
    """

    _EPOCH_EXPONENTIAL_KEYS = ('type', 'gamma', 'iters_per_epoch')

    def setup_schedulers(self):
        train_opt = self.opt['train']
        scheduler_opt = train_opt['scheduler']
        if scheduler_opt.get('type') != 'EpochExponentialLR':
            return super().setup_schedulers()
        unknown = sorted(set(scheduler_opt) - set(self._EPOCH_EXPONENTIAL_KEYS))
        if unknown:
            raise ValueError(f'train:scheduler: unknown options {unknown} for EpochExponentialLR '
                             f'(it takes {list(self._EPOCH_EXPONENTIAL_KEYS)})')
        if scheduler_opt.get('gamma') is None:
            raise ValueError('train:scheduler:gamma must be set for EpochExponentialLR (0.99 in Uni-Removal)')
        iters_per_epoch = scheduler_opt.get('iters_per_epoch') or train_opt.get('iters_per_epoch')
        if not iters_per_epoch:
            raise ValueError('EpochExponentialLR needs train:scheduler:iters_per_epoch or train:iters_per_epoch '
                             '(uniremoval train sets train:iters_per_epoch to the batches per epoch)')
        for optimizer in self.optimizers:
            self.schedulers.append(EpochExponentialLR(optimizer, scheduler_opt['gamma'], iters_per_epoch))


class NonFiniteLossError(RunFailure, FloatingPointError):
    """A training loss became NaN or infinite; raised before the step that would spread it into the weights."""


def step_generator(model, loss_dict, l_total, current_iter):
    """The end of a generator update that every model shares: stop on a non-finite term of ``loss_dict``
    (:func:`check_finite_losses`), back-propagate ``l_total``, step ``optimizer_g``, log the reduced
    ``loss_dict`` and update the EMA copy of the network."""
    check_finite_losses(loss_dict, current_iter, model.opt, lrs=model.get_current_learning_rate())
    l_total.backward()
    model.optimizer_g.step()
    model.log_dict = model.reduce_loss_dict(loss_dict)
    if model.ema_decay > 0:
        model.model_ema(decay=model.ema_decay)


def check_finite_losses(loss_dict, current_iter, opt=None, lrs=None):
    """Stop training when a loss term is NaN or infinite, before ``backward()`` / ``optimizer.step()``.

    Called by every model's ``optimize_parameters`` on its loss terms (``l_total`` included where the
    model logs it) right after computing them: the weights stay those of the previous iteration and,
    as the training loop never reaches its next ``save``, no checkpoint or training state with NaN
    weights is written; the last good checkpoint on disk is kept (and validation, hence the "best"
    metric, never sees a NaN network).

    Args:
        loss_dict (dict[str, Tensor | float]): the loss terms, by log name (``l_pix``, ``l_g_gan``...).
        current_iter (int): the training iteration, named in the message.
        opt (dict | None): the model options; names the option file's learning rate and the models folder.
        lrs (list[float] | None): the scheduled learning rates in use at this iteration (the model's
            ``get_current_learning_rate()``), named instead of the option file's where given.

    Raises:
        NonFiniteLossError: naming the iteration, the term(s) and their values.
    """
    bad, device = {}, None
    for name, value in loss_dict.items():
        value = value.detach() if isinstance(value, torch.Tensor) else torch.as_tensor(value)
        device = device or value.device
        if not bool(torch.isfinite(value).all()):
            bad[name] = float(value.float().reshape(-1)[~torch.isfinite(value.float().reshape(-1))][0])
    if is_distributed():  # every process stops together: one raising alone would leave the others waiting
        all_finite = torch.tensor([0.0 if bad else 1.0], device=device)
        torch.distributed.all_reduce(all_finite, op=torch.distributed.ReduceOp.MIN)
        if not bad and all_finite.item() < 1:
            raise NonFiniteLossError(f'Training stopped at iteration {current_iter}: a loss term is not finite '
                                     '(NaN or inf) on another process; no step was taken with it.')
    if not bad:
        return
    terms = ', '.join(f'{name} = {value}' for name, value in bad.items())
    hint = ''
    if opt is not None:
        configured = {k: v.get('lr') for k, v in (opt.get('train') or {}).items() if k.startswith('optim_') and
                      isinstance(v, dict)}
        models = (opt.get('path') or {}).get('models')
        rates = ', '.join(f'train:{k}:lr = {v}' for k, v in configured.items())
        if lrs is not None:  # what the scheduler set for this iteration, which may be far from the configured one
            rates = f'scheduled at this iteration {", ".join(f"{lr:.6g}" for lr in lrs)} (configured: {rates})'
        hint = (f' Learning rates: {rates}; a too-large '
                'learning rate is the usual cause.' + (f' Checkpoints saved before this iteration are kept in '
                                                       f'{models}.' if models else ''))
    raise NonFiniteLossError(f'Training stopped at iteration {current_iter}: loss term {terms} is not finite '
                             f'(NaN or inf); no step was taken with it and no checkpoint was written.{hint}')


def build_optional_loss(train_opt, key, device):
    """The registered loss of ``train_opt[key]`` (e.g. ``'edge_opt'``) on ``device``, or ``None`` when unset."""
    return build_loss(train_opt[key]).to(device) if train_opt.get(key) else None


def perceptual_terms(cri_perceptual, output, gt):
    """The non-None terms of BasicSR's ``PerceptualLoss`` (it returns ``(l_percep, l_style)``), by log name."""
    if cri_perceptual is None:
        return {}
    l_percep, l_style = cri_perceptual(output, gt)
    return {name: value for name, value in (('l_percep', l_percep), ('l_style', l_style)) if value is not None}


def stage_supervision_losses(stage_outputs, gt, cri_pix, cri_edge=None, cri_perceptual=None):
    """MPRNet's objective (Zamir et al., CVPR 2021, Eq. 2) on a multi-stage output, by log name.

    ``l_pix`` and ``l_edge`` are summed over every stage output (final first), the perceptual terms
    taken on the final output only; unset criteria are skipped. The total is ``sum(losses.values())``.
    """
    losses = OrderedDict()
    if cri_pix:
        losses['l_pix'] = sum(cri_pix(out, gt) for out in stage_outputs)
    if cri_edge:
        losses['l_edge'] = sum(cri_edge(out, gt) for out in stage_outputs)
    losses.update(perceptual_terms(cri_perceptual, stage_outputs[0], gt))
    return losses
