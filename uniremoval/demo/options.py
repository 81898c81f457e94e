"""The demo's option builders: the tiny configs of ``demo/configs/`` pointed at the demo data, and ablations.

:func:`teacher_options`, :func:`kt_options` and :func:`da_options` load ``train_teacher_tiny.yml``,
``kt_tiny.yml`` and ``da_tiny.yml``, set the dataset folders of the demo data
(:mod:`uniremoval.demo.data`), the checkpoints of the previous stage and the training schedule,
and optionally select a loss ablation (:data:`KT_ABLATION`, :data:`DA_ABLATION`). :data:`METRICS`
and :data:`NO_REFERENCE` are the metric options the demo scores with
(:func:`uniremoval.metrics.scoring.score_images`).
"""
from os import path as osp

import yaml

from uniremoval.demo.data import KINDS
from uniremoval.options import load_option_file
from uniremoval.utils.atomic_io import atomic_open

# the demo's option files ship inside the package (package data), so an installed wheel runs the demo
OPTIONS_DIR = osp.join(osp.dirname(osp.abspath(__file__)), 'configs')

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

# Ablation ladders (arXiv 2307.05075 Tables IV and V) and the fidelity options, as variants: overrides merged
# into the option file by :func:`apply_variant` (``None`` deletes a key). Every row is trained with each
# seed for the same number of iterations.
NO_CONTRASTIVE = {'train': {'image_cl_opt': None, 'feature_cl_opt': None}}
# Table IV, knowledge transfer, from a randomly initialised student (as the paper trains it), synthetic val.
# A student learning from scratch trains at KT_SCRATCH_LR, the rate of the shipped student's first run
# (uniremoval.demo.pretrain), not kt_tiny.yml's 2e-4 (the demo fine-tunes the shipped student at a tenth of
# it), at which the ladder's short runs do not get past their inputs.
# chosen by measurement: docs/findings.md, "Demo teachers and KT student"
KT_SCRATCH_LR = 2e-3
# The learning rate each demo stage trains at from random weights: that of the shipped checkpoint's first run
# (uniremoval.demo.pretrain; chosen by measurement: docs/findings.md, "Demo teachers and KT student"):
# MPRNet's 2e-4 for the dehazing teacher
# (which overfits its four training photos at 2e-3), 2e-3 for the deraining and deblurring teachers and the KT
# student. ``python -m uniremoval.demo --from-scratch`` uses them too; starting from a shipped checkpoint, a stage
# fine-tunes at a tenth of its option file's rate instead.
SCRATCH_LR = {'haze': 2e-4, 'rain': 2e-3, 'blur': 2e-3, 'kt': KT_SCRATCH_LR}
KT_LADDER = (
    ('BKT: L1 to teacher', NO_CONTRASTIVE),
    ('BKT + ICL', {'train': {'feature_cl_opt': None}}),
    ('BKT + ICL + FCL (MGCL)', {}),
)
KT_FIDELITY = (
    ('BKT + ICL + FCL, L1 on all 3 stages', {'train': {'supervised_stages': 'all'}}),
    ('BKT + ICL + FCL, ICL also on relu1_1 (colours)', {
        'train': {'image_cl_opt': {'layer_weights': {'relu1_1': 0.03125}}}}),
    ('BKT + ICL + FCL, without the contrast augmentation (paper)', {'datasets': {'train': {'contrast_range': None}}}),
) + (
    # the readings of the lost Eq. 2 (options/kt.yml): InfoNCE or TSKL's L1 ratio, at the paper's weights and t
    ('BKT + ICL + FCL, InfoNCE at t = 1e-6, weights 0.5 / 0.1 (paper as written)', {
        'train': {'image_cl_opt': {'temperature': 1e-6, 'loss_weight': 0.5},
                  'feature_cl_opt': {'temperature': 1e-6, 'loss_weight': 0.1}}}),
    ('BKT + ICL + FCL, L1 ratio (TSKL) with eps 1e-6, weights 0.5 / 0.1', {
        'train': {'image_cl_opt': {'formulation': 'ratio', 'temperature': 1e-6, 'loss_weight': 0.5},
                  'feature_cl_opt': {'formulation': 'ratio', 'temperature': 1e-6, 'loss_weight': 0.1}}}),
    ('BKT + ICL + FCL, FCL negatives detached', {'train': {'feature_cl_opt': {'detach_negatives': True}}}),
)
# Table V, domain adaptation, from the demo's KT student, real split. The first row is the KT student itself.
DA_LADDER = (
    ('KT (no DA)', None),
    ('KT + DA: adversarial + identity', NO_CONTRASTIVE),
    ('KT + DA + EICL', {'train': {'feature_cl_opt': None}}),
    ('KT + DA + EICL + EFCL (EX-MGCL)', {}),
)
DA_FIDELITY = (
    ('EX-MGCL, EICL negatives: the whole batch, own input included (paper, Eq. 11)',
     {'train': {'image_cl_negatives': 'all'}}),
    ('EX-MGCL, embedding: flatten (whole maps)', {'train': {'image_cl_opt': {'embedding': 'flatten'},
                                                            'feature_cl_opt': {'embedding': 'flatten'}}}),
    ('EX-MGCL, PatchGAN 70x70 + LSGAN', {
        'network_d': {'type': 'PatchGANDiscriminator', 'num_in_ch': 3, 'num_feat': 16, 'num_layers': 3,
                      'norm_type': 'instance'},
        'train': {'gan_opt': {'gan_type': 'lsgan'}}}),
    ('EX-MGCL, identity on the final stage only (paper configs)', {'train': {'supervised_stages': 'final'}}),
    ("EX-MGCL, identity weight at the paper's balance (0.2)", {'train': {'identity_opt': {'loss_weight': 0.2}}}),
    ('EX-MGCL, EICL also on relu1_1 (colour statistics)', {
        'train': {'image_cl_opt': {'layer_weights': {'relu1_1': 0.03125}}}}),
    # the readings of the lost Eq. 9 (options/da.yml): InfoNCE or TSKL's L1 ratio, at the paper's weights and t
    ('EX-MGCL, InfoNCE at t = 1e-6 (paper as written)', {
        'train': {'image_cl_opt': {'temperature': 1e-6}, 'feature_cl_opt': {'temperature': 1e-6}}}),
    ('EX-MGCL, L1 ratio (TSKL) with eps 1e-6', {
        'train': {'image_cl_opt': {'formulation': 'ratio', 'temperature': 1e-6},
                  'feature_cl_opt': {'formulation': 'ratio', 'temperature': 1e-6}}}),
    ('EX-MGCL, EFCL negatives detached', {'train': {'feature_cl_opt': {'detach_negatives': True}}}),
)


def apply_variant(opt, variant):
    """Merge the overrides ``variant`` into ``opt`` in place and return it.

    Dicts merge key by key; ``None`` deletes the key; a dict whose ``type`` differs from the current one
    (another network or loss) replaces it whole; anything else replaces the value.
    """
    for key, value in (variant or {}).items():
        if value is None:
            opt.pop(key, None)
        elif isinstance(value, dict) and isinstance(opt.get(key), dict) and value.get('type', opt[key].get('type')) \
                == opt[key].get('type'):
            apply_variant(opt[key], value)
        else:
            opt[key] = value
    return opt


def write_option_file(opt, folder):
    """Write ``opt`` as ``<folder>/<name>.yml`` (safe YAML, keys in order; written to a temporary file and
    renamed); return its path."""
    path = osp.join(folder, f"{opt['name']}.yml")
    with atomic_open(path, 'w', encoding='utf-8') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    return path


def set_learning_rate(opt, lr):
    """Set the generator's learning rate (and keep the cosine schedule's floor below it)."""
    opt['train']['optim_g']['lr'] = lr
    scheduler = opt['train']['scheduler']
    if 'eta_min' in scheduler:
        scheduler['eta_min'] = min(scheduler['eta_min'], lr / 100)


def _set_schedule(opt, iters, patch, batch):
    opt['datasets']['train'].update(gt_size=patch, batch_size_per_gpu=batch)
    opt['train']['total_iter'] = iters
    scheduler = opt['train']['scheduler']
    if 'periods' in scheduler:
        scheduler['periods'] = [iters]
    opt['val']['val_freq'] = iters
    opt['logger'].update(save_checkpoint_freq=iters, print_freq=max(1, iters // 25))


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


def kt_options(data_root, teacher_ckpts, iters, patch, batch, variant=None, name=None):
    """The tiny KT config with demo-data paths and teacher checkpoints; ``variant`` selects an ablation row."""
    opt = load_option_file(osp.join(OPTIONS_DIR, 'kt_tiny.yml'))
    for phase in ('train', 'val'):
        for source in opt['datasets'][phase]['sources']:
            source['dataroot_gt'] = osp.join(data_root, phase, source['name'], 'gt')
            source['dataroot_lq'] = osp.join(data_root, phase, source['name'], 'lq')
    for teacher in opt['teachers']:
        teacher['pretrain_path'] = teacher_ckpts[teacher['name']]
    apply_variant(opt, variant)
    opt['name'] = name or opt['name']
    _set_schedule(opt, iters, patch, batch)
    return opt


def da_options(data_root, student_ckpt, iters, patch, batch, variant=None, name=None):
    """The tiny DA config on the demo's real split (ground truth for scoring only), from ``student_ckpt``;
    ``variant`` selects an ablation row."""
    opt = load_option_file(osp.join(OPTIONS_DIR, 'da_tiny.yml'))
    real = osp.join(data_root, 'real')
    opt['datasets']['train']['sources'] = [{'name': k, 'dataroot_lq': osp.join(real, k, 'lq')} for k in KINDS]
    opt['datasets']['train']['dataroot_clear'] = osp.join(real, 'clear')
    opt['datasets']['val']['sources'] = [
        {'name': k, 'dataroot_lq': osp.join(real, k, 'lq'), 'dataroot_gt': osp.join(real, k, 'gt')} for k in KINDS]
    opt['val']['metrics'] = {k: v for k, v in opt['val']['metrics'].items() if k in ('psnr', 'ssim')}
    opt['path']['pretrain_network_g'] = student_ckpt
    apply_variant(opt, variant)
    opt['name'] = name or opt['name']
    _set_schedule(opt, iters, patch, batch)
    return opt
