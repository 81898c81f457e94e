"""The demo's option builders: the tiny configs of ``options/demo/`` pointed at the demo data, and its ablations.

:func:`teacher_options`, :func:`kt_options` and :func:`da_options` load ``train_teacher_tiny.yml``,
``kt_tiny.yml`` and ``da_tiny.yml``, set the dataset folders of the demo data
(:mod:`uniremoval.demo.data`), the checkpoints of the previous stage and the training schedule,
and optionally select a loss ablation (:data:`KT_ABLATION`, :data:`DA_ABLATION`). :data:`METRICS`
and :data:`NO_REFERENCE` are the metric options the demo scores with
(:func:`uniremoval.evaluate.score_images`).
"""
import os
from os import path as osp

import yaml

from uniremoval.demo.data import KINDS
from uniremoval.options import load_option_file

OPTIONS_DIR = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'options', 'demo')

# Scores (BasicSR metric options, as under ``val.metrics``): RGB, no border crop, on 8-bit BGR images.
METRICS = {
    'psnr': {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': False},
    'ssim': {'type': 'calculate_ssim', 'crop_border': 0, 'test_y_channel': False},
}
# No-reference metrics reported on the real split, if registered (lower is better for both).
NO_REFERENCE = {
    'piqe': {'type': 'calculate_piqe', 'crop_border': 0},
    'brisque': {'type': 'calculate_brisque', 'crop_border': 0},
}

# Loss ablations at demo scale: equal iterations, same seed and data order.
# KT (§III-B): (label, temperature, image CL, feature CL).
KT_ABLATION = (
    ('L1 to teacher only', None, False, False),
    ('+ image CL, t=1e-6', 1e-6, True, False),
    ('+ image + feature CL, t=1e-6 (paper)', 1e-6, True, True),
    ('+ image CL, t=0.1', 0.1, True, False),
    ('+ image + feature CL, t=0.1', 0.1, True, True),
)
# DA (§III-C): (label, temperature, image EX-CL, feature EX-CL); adversarial and identity always on.
DA_ABLATION = (
    ('+ adversarial + identity', None, False, False),
    ('+ image EX-CL, t=1e-6', 1e-6, True, False),
    ('+ image + feature EX-CL, t=1e-6 (paper)', 1e-6, True, True),
    ('+ image EX-CL, t=0.1', 0.1, True, False),
    ('+ image + feature EX-CL, t=0.1', 0.1, True, True),
)


def write_option_file(opt, folder):
    """Write ``opt`` as ``<folder>/<name>.yml`` (safe YAML, keys in order); return its path."""
    os.makedirs(folder, exist_ok=True)
    path = osp.join(folder, f"{opt['name']}.yml")
    with open(path, 'w', encoding='utf-8') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    return path


def _set_schedule(opt, iters, patch, batch):
    opt['datasets']['train'].update(gt_size=patch, batch_size_per_gpu=batch)
    opt['train']['total_iter'] = iters
    scheduler = opt['train']['scheduler']
    if 'periods' in scheduler:
        scheduler['periods'] = [iters]
    opt['val']['val_freq'] = iters
    opt['logger'].update(save_checkpoint_freq=iters, print_freq=max(1, iters // 25))


def _set_terms(opt, image_cl, feature_cl, temperature=None):
    if temperature is not None:
        for key in ('image_cl_opt', 'feature_cl_opt'):
            opt['train'][key]['temperature'] = temperature
    for key, keep in (('image_cl_opt', image_cl), ('feature_cl_opt', feature_cl)):
        if not keep:
            del opt['train'][key]


def teacher_options(kind, data_root, iters, patch, batch):
    """The tiny teacher config for one degradation type, with demo-data paths."""
    opt = load_option_file(osp.join(OPTIONS_DIR, 'train_teacher_tiny.yml'))
    opt['name'] = f'demo_teacher_{kind}'
    for phase in ('train', 'val'):
        opt['datasets'][phase].update(
            name=f'demo_{phase}_{kind}', dataroot_gt=osp.join(data_root, phase, kind, 'gt'),
            dataroot_lq=osp.join(data_root, phase, kind, 'lq'))
    _set_schedule(opt, iters, patch, batch)
    return opt


def kt_options(data_root, teacher_ckpts, iters, patch, batch, temperature=None, image_cl=True, feature_cl=True,
               name=None):
    """The tiny KT config with demo-data paths and teacher checkpoints; the arguments select ablations."""
    opt = load_option_file(osp.join(OPTIONS_DIR, 'kt_tiny.yml'))
    for phase in ('train', 'val'):
        for source in opt['datasets'][phase]['sources']:
            source['dataroot_gt'] = osp.join(data_root, phase, source['name'], 'gt')
            source['dataroot_lq'] = osp.join(data_root, phase, source['name'], 'lq')
    for teacher in opt['teachers']:
        teacher['pretrain_path'] = teacher_ckpts[teacher['name']]
    _set_terms(opt, image_cl, feature_cl, temperature)
    opt['name'] = name or opt['name']
    _set_schedule(opt, iters, patch, batch)
    return opt


def da_options(data_root, student_ckpt, iters, patch, batch, temperature=None, image_cl=True, feature_cl=True,
               name=None):
    """The tiny DA config on the demo's real split (ground truth for scoring only), from ``student_ckpt``."""
    opt = load_option_file(osp.join(OPTIONS_DIR, 'da_tiny.yml'))
    real = osp.join(data_root, 'real')
    opt['datasets']['train']['sources'] = [{'name': k, 'dataroot_lq': osp.join(real, k, 'lq')} for k in KINDS]
    opt['datasets']['train']['dataroot_clear'] = osp.join(real, 'clear')
    opt['datasets']['val']['sources'] = [
        {'name': k, 'dataroot_lq': osp.join(real, k, 'lq'), 'dataroot_gt': osp.join(real, k, 'gt')} for k in KINDS]
    opt['val']['metrics'] = {k: v for k, v in opt['val']['metrics'].items() if k in ('psnr', 'ssim')}
    opt['path']['pretrain_network_g'] = student_ckpt
    _set_terms(opt, image_cl, feature_cl, temperature)
    opt['name'] = name or opt['name']
    _set_schedule(opt, iters, patch, batch)
    return opt


def is_main_variant(opt, temperature, image_cl, feature_cl):
    """Whether an ablation variant is the configuration ``opt`` already trained (both terms, same t)."""
    return image_cl and feature_cl and all(opt['train'][k]['temperature'] == temperature
                                           for k in ('image_cl_opt', 'feature_cl_opt'))
