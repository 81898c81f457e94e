"""Safe option parsing for the ``basicsr train`` / ``basicsr test`` entry points.

Same flags and the same resulting ``opt`` dict as BasicSR's ``basicsr.utils.options.parse_options``,
with three deliberate differences:

* YAML is read with a *safe* loader (BasicSR uses PyYAML's full ``Loader``, which constructs
  arbitrary python objects from ``!!python/...`` tags). Our loader also reads ``1e-6`` and
  ``2e-4`` as floats (YAML 1.1 needs a dot, ``1.0e-6``; BasicSR configs write ``!!float 2e-4``,
  which keeps working).
* ``--force_yml key:sub=value`` values are parsed as YAML scalars/lists with the same safe loader;
  BasicSR ``eval``s them.
* Experiments and results go under ``root_path`` (the current working directory by default), and
  the options file is validated with errors that name the file and the key.
"""
import argparse
import os
import random
import re
from os import path as osp

import torch
import yaml

from basicsr.utils import set_random_seed
from basicsr.utils.dist_util import get_dist_info, init_dist


class OptionsError(ValueError):
    """An option file or command-line override is invalid; the message names the file and key."""


class SafeOptionLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also resolves exponent floats without a dot (``2e-4``)."""


SafeOptionLoader.add_implicit_resolver(
    'tag:yaml.org,2002:float',
    re.compile(r'^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$'),
    list('-+0123456789'))


def yaml_load_safe(stream):
    """Parse YAML text or a stream with :class:`SafeOptionLoader` (no python object tags)."""
    return yaml.load(stream, Loader=SafeOptionLoader)  # noqa: S506 (SafeLoader subclass)


def load_option_file(path):
    """Read an option YAML file into a dict.

    Raises:
        OptionsError: the file is missing, is not valid YAML, or is not a mapping.
    """
    if not osp.isfile(path):
        raise OptionsError(f'Option file not found: {path}')
    with open(path, encoding='utf-8') as f:
        try:
            opt = yaml_load_safe(f)
        except yaml.YAMLError as e:
            raise OptionsError(f'Option file {path} is not valid (safe) YAML: {e}') from e
    if not isinstance(opt, dict):
        raise OptionsError(f'Option file {path} must hold a mapping of options, got {type(opt).__name__}')
    return opt


def apply_force_yml(opt, entries, source='--force_yml'):
    """Override existing option keys from ``'a:b:c=value'`` strings (BasicSR's --force_yml syntax).

    Values are parsed as YAML (``true``, ``3``, ``2e-4``, ``[1, 2]``, ``~``), never evaluated.
    As in BasicSR, only existing keys can be changed.
    """
    for entry in entries:
        if '=' not in entry:
            raise OptionsError(f'{source}: expected key:subkey=value, got {entry!r}')
        keys, value = entry.split('=', 1)
        keys = [k.strip() for k in keys.strip().split(':')]
        try:
            value = yaml_load_safe(value.strip())
        except yaml.YAMLError as e:
            raise OptionsError(f'{source}: value of {entry!r} is not a YAML scalar or list: {e}') from e
        node = opt
        for depth, key in enumerate(keys):
            if not isinstance(node, dict) or key not in node:
                raise OptionsError(f'{source}: option {":".join(keys[:depth + 1])} does not exist in the option file')
            if depth == len(keys) - 1:
                node[key] = value
            else:
                node = node[key]
    return opt


def _require(opt, key, path, kind=None):
    if key not in opt:
        raise OptionsError(f'Option file {path} lacks the required key {key!r}')
    if kind is not None and not isinstance(opt[key], kind):
        raise OptionsError(f'Option {key!r} in {path} must be a {kind.__name__}, got {opt[key]!r}')


def build_arg_parser(is_train):
    """The BasicSR command-line flags: ``-opt``, ``--launcher``, ``--auto_resume``, ``--debug``,
    ``--local_rank``, ``--force_yml``."""
    parser = argparse.ArgumentParser(
        prog='basicsr train' if is_train else 'basicsr test',
        description=('Train' if is_train else 'Test') + ' a BasicSR model with the uniremoval plugin loaded.')
    parser.add_argument('-opt', type=str, required=True, help='Path to option YAML file.')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'], default='none', help='job launcher')
    parser.add_argument('--auto_resume', action='store_true', help='resume from the latest training state')
    parser.add_argument('--debug', action='store_true')
    parser.add_argument('--local_rank', type=int, default=0)
    parser.add_argument(
        '--force_yml', nargs='+', default=None, help='Override options, e.g. train:ema_decay=0.999')
    return parser


def parse_options(args, root_path=None, is_train=True):
    """Turn command-line arguments into BasicSR's ``opt`` dict (see module docstring).

    Args:
        args (list[str] | argparse.Namespace): command-line arguments (without the program name)
            or an already parsed namespace.
        root_path (str | None): folder that receives ``experiments/`` or ``results/``;
            default: the current working directory.
        is_train (bool): training or testing.

    Returns:
        tuple[dict, argparse.Namespace]: the options and the parsed arguments.
    """
    if not isinstance(args, argparse.Namespace):
        args = build_arg_parser(is_train).parse_args(args)
    root_path = osp.abspath(root_path or os.getcwd())
    opt = load_option_file(args.opt)
    for key in ('name', 'model_type', 'datasets'):
        _require(opt, key, args.opt)
    _require(opt, 'datasets', args.opt, dict)
    opt.setdefault('path', {})
    opt.setdefault('num_gpu', 0)
    if is_train:
        for key in ('train', 'logger'):
            _require(opt, key, args.opt, dict)

    if args.force_yml:
        apply_force_yml(opt, args.force_yml)

    # distributed settings
    if args.launcher == 'none':
        opt['dist'] = False
    else:
        opt['dist'] = True
        if args.launcher == 'slurm' and 'dist_params' in opt:
            init_dist(args.launcher, **opt['dist_params'])
        else:
            init_dist(args.launcher)
    opt['rank'], opt['world_size'] = get_dist_info()

    seed = opt.get('manual_seed')
    if seed is None:
        seed = random.randint(1, 10000)
        opt['manual_seed'] = seed
    set_random_seed(seed + opt['rank'])

    opt['auto_resume'] = args.auto_resume
    opt['is_train'] = is_train
    if args.debug and not opt['name'].startswith('debug'):
        opt['name'] = 'debug_' + opt['name']

    if opt['num_gpu'] == 'auto':
        opt['num_gpu'] = torch.cuda.device_count()
    if not isinstance(opt['num_gpu'], int) or opt['num_gpu'] < 0:
        raise OptionsError(f"Option 'num_gpu' in {args.opt} must be 'auto' or an integer >= 0, got {opt['num_gpu']!r}")
    if opt['num_gpu'] > 0 and not torch.cuda.is_available():
        raise OptionsError(f"Option file {args.opt} asks for num_gpu: {opt['num_gpu']} but CUDA is not available; "
                           "set num_gpu: 0 (CPU) or num_gpu: auto")

    for phase, dataset in opt['datasets'].items():
        if not isinstance(dataset, dict):
            raise OptionsError(f'datasets:{phase} in {args.opt} must be a mapping, got {dataset!r}')
        dataset['phase'] = phase.split('_')[0]  # val_1, val_2, test_1 ...
        if 'scale' in opt:
            dataset['scale'] = opt['scale']
        for key in ('dataroot_gt', 'dataroot_lq'):
            if isinstance(dataset.get(key), str):
                dataset[key] = osp.expanduser(dataset[key])

    for key, val in opt['path'].items():
        if isinstance(val, str) and ('resume_state' in key or 'pretrain_network' in key):
            opt['path'][key] = osp.expanduser(val)

    if is_train:
        experiments_root = osp.join(root_path, 'experiments', opt['name'])
        opt['path']['experiments_root'] = experiments_root
        opt['path']['models'] = osp.join(experiments_root, 'models')
        opt['path']['training_states'] = osp.join(experiments_root, 'training_states')
        opt['path']['log'] = experiments_root
        opt['path']['visualization'] = osp.join(experiments_root, 'visualization')
        if 'debug' in opt['name']:
            if 'val' in opt:
                opt['val']['val_freq'] = 8
            opt['logger']['print_freq'] = 1
            opt['logger']['save_checkpoint_freq'] = 8
    else:
        # BasicSR's SRModel reads val:suffix and val:save_img unconditionally when testing
        opt['val'] = opt.get('val') or {}
        opt['val'].setdefault('suffix', None)
        opt['val'].setdefault('save_img', False)
        results_root = osp.join(root_path, 'results', opt['name'])
        opt['path']['results_root'] = results_root
        opt['path']['log'] = results_root
        opt['path']['visualization'] = osp.join(results_root, 'visualization')
    opt['root_path'] = root_path
    return opt, args
