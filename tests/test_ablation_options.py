"""options/ablations/: the paper's Table IV / V rows and the fidelity options, each a full copy of
options/kt.yml or options/da.yml that differs from it in exactly the keys its header names.

Cheap (no training, no network forward): option files are compared as parsed dicts, and the changed
values are checked against the signatures of the classes that will receive them.
"""
import inspect
import os
import re
from os import path as osp

import pytest
import torch

import uniremoval  # noqa: F401  (compat shim + registration before any basicsr import)
from basicsr.models.lr_scheduler import CosineAnnealingRestartLR
from basicsr.utils.registry import ARCH_REGISTRY, LOSS_REGISTRY
from uniremoval.evaluation import parse_eval_options
from uniremoval.options import OptionsError, load_option_file, parse_options
from conftest import REPO

ABLATIONS = osp.join(REPO, 'options', 'ablations')
SCHEDULER = {'periods', 'restart_weights', 'eta_min'}

# file -> (base file in options/, dotted key paths that differ from the base)
TRAINING = {
    # Table IV: knowledge transfer
    'kt_bkt.yml': ('kt.yml', {'name', 'train.image_cl_opt', 'train.feature_cl_opt', 'train.feature_cl_decay'}),
    'kt_bkt_icl.yml': ('kt.yml', {'name', 'train.feature_cl_opt', 'train.feature_cl_decay'}),
    'kt_bkt_icl_fcl.yml': ('kt.yml', {'name'}),
    # Table V: domain adaptation
    'da_adv_idt.yml': ('da.yml', {'name', 'train.image_cl_opt', 'train.feature_cl_opt', 'train.feature_cl_decay'}),
    'da_adv_idt_eicl.yml': ('da.yml', {'name', 'train.feature_cl_opt', 'train.feature_cl_decay'}),
    'da_adv_idt_eicl_efcl.yml': ('da.yml', {'name'}),
    # fidelity options
    'kt_all_stages.yml': ('kt.yml', {'name', 'train.supervised_stages'}),
    'kt_cosine_lr.yml': ('kt.yml', {'name', 'train.scheduler.type', 'train.scheduler.gamma'}
                         | {f'train.scheduler.{key}' for key in SCHEDULER}),
    'da_eicl_other_types.yml': ('da.yml', {'name', 'train.image_cl_negatives'}),
    'da_stats_embedding.yml': ('da.yml', {'name', 'train.image_cl_opt.embedding', 'train.feature_cl_opt.embedding'}),
    'da_patchgan_lsgan.yml': ('da.yml', {'name', 'network_d.type', 'network_d.skip_connection',
                                         'network_d.num_layers', 'network_d.norm_type', 'train.gan_opt.gan_type'}),
    'da_all_stages.yml': ('da.yml', {'name', 'train.supervised_stages'}),
    'da_pixel_range_01.yml': ('da.yml', {'name', 'pixel_range', 'train.identity_opt.loss_weight'}),
}
FULL_MODEL = {'kt_bkt_icl_fcl.yml': 'kt.yml', 'da_adv_idt_eicl_efcl.yml': 'da.yml'}
# the new values of the fidelity options: (dotted path, value)
NEW_VALUES = {
    'kt_all_stages.yml': [('train.supervised_stages', 'all')],
    'kt_cosine_lr.yml': [('train.scheduler', {'type': 'CosineAnnealingRestartLR', 'periods': [150000],
                                              'restart_weights': [1], 'eta_min': 1.0e-6})],
    'da_eicl_other_types.yml': [('train.image_cl_negatives', 'other_types')],
    'da_stats_embedding.yml': [('train.image_cl_opt.embedding', 'stats'), ('train.feature_cl_opt.embedding', 'stats')],
    'da_patchgan_lsgan.yml': [('network_d', {'type': 'PatchGANDiscriminator', 'num_in_ch': 3, 'num_feat': 64,
                                             'num_layers': 3, 'norm_type': 'instance'}),
                              ('train.gan_opt.gan_type', 'lsgan')],
    'da_all_stages.yml': [('train.supervised_stages', 'all')],
    'da_pixel_range_01.yml': [('pixel_range', [0, 1]), ('train.identity_opt.loss_weight', 0.1)],
}
EVAL_FILE = 'da_kt_only.yml'
KT_STUDENT = 'experiments/UniRemoval_KT_OTS_Rain1400_GoPro/models/net_g_latest.pth'


def load(*parts):
    return load_option_file(osp.join(*parts))


def diff_paths(a, b, prefix=''):
    """Dotted paths of the keys whose values differ between two nested dicts (missing on one side included)."""
    paths = set()
    for key in set(a) | set(b):
        path = f'{prefix}{key}'
        if key not in a or key not in b:
            paths.add(path)
        elif isinstance(a[key], dict) and isinstance(b[key], dict):
            paths |= diff_paths(a[key], b[key], path + '.')
        elif a[key] != b[key] or type(a[key]) is not type(b[key]):
            paths.add(path)
    return paths


def get(opt, dotted):
    for key in dotted.split('.'):
        opt = opt[key]
    return opt


def header_keys(path):
    """The key paths listed under the header line 'Keys differing from options/<base>'."""
    with open(path, encoding='utf-8') as f:
        lines = f.read().splitlines()
    start = [i for i, line in enumerate(lines) if line.startswith('# Keys differing from options/')]
    assert len(start) == 1, f'{path}: needs one "# Keys differing from options/..." header line'
    base = re.match(r'# Keys differing from options/(\S+)', lines[start[0]]).group(1)
    keys = set()
    for line in lines[start[0] + 1:]:
        match = re.fullmatch(r'#   - (\S+)', line)
        if not match:
            break
        keys.add(match.group(1))
    return base, keys


def test_diff_paths():
    a = {'x': 1, 'y': {'p': 1, 'q': [1, 2]}, 'z': {'r': 1}}
    assert diff_paths(a, a) == set()
    assert diff_paths(a, {'x': 1.5, 'y': {'p': 1, 'q': [1, 3], 's': 0}}) == {'x', 'y.q', 'y.s', 'z'}
    assert diff_paths({'x': True}, {'x': 1}) == {'x'}


def test_every_file_is_covered():
    files = {f for f in os.listdir(ABLATIONS) if f.endswith('.yml')}
    assert files == set(TRAINING) | {EVAL_FILE}


@pytest.mark.parametrize('name', sorted(TRAINING))
def test_differs_from_base_in_exactly_the_named_keys(name):
    base_name, expected = TRAINING[name]
    opt, base = load(ABLATIONS, name), load(REPO, 'options', base_name)
    assert diff_paths(opt, base) == expected
    assert list(opt) == list(base), 'top-level keys in the base order'
    assert opt['model_type'] == base['model_type']
    assert header_keys(osp.join(ABLATIONS, name)) == (base_name, expected), 'the header must name the changed keys'


@pytest.mark.parametrize('name', sorted(NEW_VALUES))
def test_fidelity_option_values(name):
    opt = load(ABLATIONS, name)
    for dotted, value in NEW_VALUES[name]:
        assert get(opt, dotted) == value, dotted


@pytest.mark.parametrize('name', sorted(FULL_MODEL))
def test_full_model_rows_equal_their_base_except_name(name):
    opt, base = load(ABLATIONS, name), load(REPO, 'options', FULL_MODEL[name])
    assert opt['name'] != base['name']
    opt['name'] = base['name']
    assert opt == base


def test_ablation_rows_remove_the_contrastive_terms():
    for name in ('kt_bkt.yml', 'da_adv_idt.yml'):
        train = load(ABLATIONS, name)['train']
        assert not {'image_cl_opt', 'feature_cl_opt', 'feature_cl_decay'} & set(train)
    for name in ('kt_bkt_icl.yml', 'da_adv_idt_eicl.yml'):
        train = load(ABLATIONS, name)['train']
        assert 'image_cl_opt' in train and not {'feature_cl_opt', 'feature_cl_decay'} & set(train)
    assert load(ABLATIONS, 'kt_bkt_icl.yml')['train']['image_cl_opt']['type'] == 'ImageContrastiveLoss'
    assert load(ABLATIONS, 'da_adv_idt_eicl.yml')['train']['image_cl_opt']['type'] == 'ExtendedImageContrastiveLoss'


def test_names_are_unique():
    names = [load(ABLATIONS, name)['name'] for name in sorted(TRAINING) + [EVAL_FILE]]
    names += [load(REPO, 'options', base)['name'] for base in ('kt.yml', 'da.yml', 'eval_real.yml')]
    assert len(set(names)) == len(names)


def test_da_rows_start_from_the_kt_student():
    kt = load(REPO, 'options', 'kt.yml')
    assert KT_STUDENT == f"experiments/{kt['name']}/models/net_g_latest.pth"
    for name, (base, _) in TRAINING.items():
        if base == 'da.yml':
            assert load(ABLATIONS, name)['path']['pretrain_network_g'] == KT_STUDENT, name


@pytest.mark.parametrize('name', sorted(TRAINING))
def test_training_files_parse_and_options_fit_their_classes(name):
    opt, _ = parse_options(['-opt', osp.join(ABLATIONS, name)], root_path=REPO, is_train=True, check_paths=False)
    assert opt['is_train'] and opt['name'] == load(ABLATIONS, name)['name']
    train = opt['train']
    for key, loss_opt in train.items():
        if key.endswith('_opt'):
            kwargs = dict(loss_opt)
            cls = LOSS_REGISTRY.get(kwargs.pop('type'))
            inspect.signature(cls).bind(**kwargs)
    if 'network_d' in opt:
        kwargs = dict(opt['network_d'])
        inspect.signature(ARCH_REGISTRY.get(kwargs.pop('type'))).bind(**kwargs)
    if train['scheduler']['type'] == 'CosineAnnealingRestartLR':
        optimizer = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=train['optim_g']['lr'])
        kwargs = {k: v for k, v in train['scheduler'].items() if k != 'type'}
        CosineAnnealingRestartLR(optimizer, **kwargs)
        assert sum(kwargs['periods']) == train['total_iter']


def test_stats_embedding_builds():
    opt = load(ABLATIONS, 'da_stats_embedding.yml')
    kwargs = dict(opt['train']['feature_cl_opt'])
    loss = LOSS_REGISTRY.get(kwargs.pop('type'))(**kwargs)
    assert loss.embedding == 'stats'


def test_kt_only_evaluation_file():
    path = osp.join(ABLATIONS, EVAL_FILE)
    opt, base = load(path), load(REPO, 'options', 'eval_real.yml')
    assert diff_paths(opt, base) == {'name', 'checkpoints'}
    assert [c['path'] for c in opt['checkpoints']] == [KT_STUDENT]
    assert opt['pixel_range'] == load(REPO, 'options', 'kt.yml')['pixel_range'] == [-1, 1]
    assert opt['input_column'] == 'Original degraded'
    try:
        parse_eval_options(path)
    except OptionsError as err:  # expected unless the KT student was trained here
        assert 'checkpoint file not found' in str(err)
