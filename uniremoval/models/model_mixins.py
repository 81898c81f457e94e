"""Behaviour shared by the uniremoval models on top of BasicSR's ``BaseModel``.

:class:`PerTypeValidationMixin` reports validation metrics per degradation type.
:class:`SafeCheckpointMixin` replaces three ``BaseModel`` methods:

* ``load_network`` reads with ``weights_only=True`` and also accepts official ``{'state_dict': ...}``
  checkpoints (MPRNet's release format), with or without ``module.`` prefixes;
* ``save_network`` and ``save_training_state`` write through a temporary file and rename it, so a
  kill during saving leaves the previous checkpoint intact and ``--auto_resume`` never picks up a
  truncated state.
"""
from os import path as osp

import numpy as np
from tqdm import tqdm

from basicsr.metrics import calculate_metric
from basicsr.utils import get_root_logger, imwrite, tensor2img
from basicsr.utils.dist_util import master_only
from uniremoval.utils.checkpoint import atomic_torch_save, load_state_dict_file, strip_module_prefix


class SafeCheckpointMixin:
    """Mix in before a BasicSR model class: ``class M(SafeCheckpointMixin, SRModel)``."""

    def load_network(self, net, load_path, strict=True, param_key='params'):
        state_dict = load_state_dict_file(load_path, param_key)
        bare = self.get_bare_model(net)
        get_root_logger().info(f'Loading {bare.__class__.__name__} model from {load_path}, '
                               f'with param key: [{param_key}].')
        self._print_different_keys_loading(bare, state_dict, strict)
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
        atomic_torch_save(save_dict, osp.join(self.opt['path']['models'], f'{net_label}_{current_iter}.pth'))

    @master_only
    def save_training_state(self, epoch, current_iter):
        if current_iter == -1:
            return
        state = {
            'epoch': epoch,
            'iter': current_iter,
            'optimizers': [o.state_dict() for o in self.optimizers],
            'schedulers': [s.state_dict() for s in self.schedulers],
        }
        atomic_torch_save(state, osp.join(self.opt['path']['training_states'], f'{current_iter}.state'))


# Metrics that score the restored image alone; the others need the ground truth (``img2``).
NO_REFERENCE_METRICS = {'calculate_niqe', 'calculate_brisque', 'calculate_piqe'}


class PerTypeValidationMixin:
    """Validation that reports every ``val.metrics`` entry per degradation type and their mean.

    Samples carry their type name under ``degradation`` (``MultiDegradationDataset``,
    ``UnpairedDegradationDataset``); samples without it count under the dataset's name.
    Full-reference metrics (PSNR, SSIM) are computed where a sample has ground truth and skipped
    where it has none; no-reference metrics (:data:`NO_REFERENCE_METRICS`: NIQE, BRISQUE, PIQE)
    are computed for every sample, so real test sets without ground truth validate too.
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
                    suffix = current_iter if self.opt['is_train'] else (self.opt['val'].get('suffix') or self.opt['name'])
                    imwrite(sr_img, osp.join(self.opt['path']['visualization'], kind, f'{img_name}_{suffix}.png'))
                data = {'img': sr_img}
                if gts is not None:
                    data['img2'] = tensor2img([gts[i:i + 1]])
                for name, opt_ in metrics_opt.items():
                    if opt_['type'] not in NO_REFERENCE_METRICS and 'img2' not in data:
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


def perceptual_terms(cri_perceptual, output, gt):
    """The non-None terms of BasicSR's ``PerceptualLoss`` (it returns ``(l_percep, l_style)``), by log name."""
    if cri_perceptual is None:
        return {}
    l_percep, l_style = cri_perceptual(output, gt)
    return {name: value for name, value in (('l_percep', l_percep), ('l_style', l_style)) if value is not None}
