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
  the options file is checked before anything is built (:func:`check_options`: missing keys, wrong
  types, unregistered network / loss / dataset / model types, missing data, a cosine schedule shorter than
  ``total_iter``), with errors that name the file, the key path and what was expected.
"""
import argparse
import copy
import inspect
import math
import os
import random
import re
from os import path as osp

import torch
import yaml

from basicsr.utils import set_random_seed
from uniremoval.utils.display import shown
from uniremoval.utils.dist_util import get_dist_info, init_dist_from_options
from uniremoval.utils.errors import UsageError
from uniremoval.version import version_text


class OptionsError(UsageError, ValueError):
    """An option file or command-line override is invalid; the message names the file and key."""


def fail_option(path, message):
    """Raise :class:`OptionsError` as ``Option file <path>: <message>``."""
    raise OptionsError(f'Option file {path}: {message}')


def run_name_problem(name):
    """Why ``name`` cannot name a run folder (``experiments/<name>``, ``results/<name>``), or ``None``.

    A run name is one plain folder name: no path separator, not absolute, not ``.`` or ``..``, no control
    character; so the folder that is created, archived or written always lies inside its parent.
    """
    if not isinstance(name, str) or not name.strip():
        return f'must be a non-empty string, got {name!r}'
    if name in ('.', '..') or any(sep in name for sep in ('/', '\\', os.sep, os.altsep) if sep):
        return f'must be a plain folder name (no path separator, not . or ..), got {name!r}'
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return f'must not contain control characters, got {name!r}'
    return None


def check_run_name(opt, path):
    """Raise :class:`OptionsError` unless ``opt['name']`` is a plain run name (:func:`run_name_problem`)."""
    problem = run_name_problem(opt.get('name'))
    if problem:
        fail_option(path, f'name {problem}: the run folder must stay inside experiments/ or results/')


def section_with_defaults(opt, key, defaults, path):
    """``opt[key]`` (created when missing or null), refusing keys not in ``defaults`` and filling in the
    missing ones with copies of ``defaults``; the section is stored back into ``opt``."""
    section = opt.get(key) or {}
    opt[key] = section
    unknown = sorted(set(section) - set(defaults))
    if unknown:
        fail_option(path, f'{key}: unknown key(s) {unknown}; known: {sorted(defaults)}')
    for name, value in defaults.items():
        section.setdefault(name, copy.deepcopy(value))
    return section


class SafeOptionLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also resolves exponent floats without a dot (``2e-4``) and refuses a key
    given twice in one mapping (at any depth), naming the key and both lines."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = {}
            for key_node, _ in node.value:
                if key_node.tag == 'tag:yaml.org,2002:merge':
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: the base class reports it
                    continue
                if first is not None:
                    raise yaml.constructor.ConstructorError(
                        None, None, f'duplicate key {shown(str(key))} (lines {first} and '
                                    f'{key_node.start_mark.line + 1})', key_node.start_mark)
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


SafeOptionLoader.add_implicit_resolver(
    'tag:yaml.org,2002:float',
    re.compile(r'^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$'),
    list('-+0123456789'))


def yaml_load_safe(stream):
    """Parse YAML text or a stream with :class:`SafeOptionLoader` (no python object tags)."""
    return yaml.load(stream, Loader=SafeOptionLoader)  # noqa: S506 (SafeLoader subclass)


#: Values an option file may hold once YAML aliases are expanded (the paper configs hold a few hundred):
#: a few nested aliases in a kilobyte of YAML would otherwise expand to billions when the options are
#: logged or copied.
MAX_OPTION_NODES = 100_000


def expanded_size(node, limit):
    """The number of values in ``node`` with shared (aliased) parts counted every time they appear,
    counted up to just past ``limit``, so an alias bomb is measured without being expanded."""
    count, stack = 0, [node]
    while stack and count <= limit:
        item = stack.pop()
        count += 1
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return count


def load_option_file(path, force_yml=None):
    """Read an option YAML file into a dict, then apply ``force_yml`` (``--force_yml`` entries) if given.

    Raises:
        OptionsError: the file is missing, is not valid YAML, or is not a mapping; a bad override.
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
    if expanded_size(opt, MAX_OPTION_NODES) > MAX_OPTION_NODES:
        raise OptionsError(f'Option file {path} expands to more than {MAX_OPTION_NODES} values through YAML '
                           'aliases (an alias bomb?); write the repeated parts out')
    if force_yml:
        apply_force_yml(opt, force_yml)
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
    parser.add_argument('-opt', '--opt', dest='opt', type=str, required=True, help='Path to option YAML file.')
    parser.add_argument('--version', action='version', version=version_text('%(prog)s'))
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'], default='none', help='job launcher')
    parser.add_argument('--auto_resume', action='store_true', help='resume from the latest training state')
    parser.add_argument('--debug', action='store_true')
    parser.add_argument('--local_rank', type=int, default=0)
    parser.add_argument(
        '--force_yml', nargs='+', default=None, help='Override options, e.g. train:ema_decay=0.999')
    return parser


def parse_options(args, root_path=None, is_train=True, check_paths=True):
    """Turn command-line arguments into BasicSR's ``opt`` dict (see module docstring).

    Args:
        args (list[str] | argparse.Namespace): command-line arguments (without the program name)
            or an already parsed namespace.
        root_path (str | None): folder that receives ``experiments/`` or ``results/``;
            default: the current working directory.
        is_train (bool): training or testing.
        check_paths (bool): also check that data folders / LMDBs / checkpoints exist and hold valid
            images (:func:`check_options`); off for tests that only build models from an option file.

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
    check_options(opt, args.opt, is_train=is_train, check_paths=check_paths)

    # distributed settings
    if args.launcher == 'none':
        opt['dist'] = False
    else:
        opt['dist'] = True
        # the plugin's launcher: NCCL with CUDA, Gloo without (BasicSR's hard-wires NCCL and cuda.set_device)
        init_dist_from_options(args.launcher, opt.get('dist_params'), num_gpu=opt.get('num_gpu'))
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


# ----------------------------------------------------------------------------- checks before anything is built
# BasicSR option keys whose values must be numbers: (section, key) -> kind. 'int': an integer; 'number': an int
# or float; 'ints' / 'numbers': a list of them. Arguments of networks, losses, optimisers and schedulers are
# checked against the registered class's signature (see check_constructor_args) on top of these.
NUMERIC_KEYS = {
    'train': {'total_iter': 'int', 'warmup_iter': 'int', 'ema_decay': 'number', 'net_d_iters': 'int',
              'net_d_init_iters': 'int', 'iters_per_epoch': 'int', 'feature_cl_decay': 'number'},
    'optim': {'lr': 'number', 'weight_decay': 'number', 'betas': 'numbers', 'momentum': 'number', 'eps': 'number'},
    'scheduler': {'periods': 'ints', 'milestones': 'ints', 'restart_weights': 'numbers', 'eta_min': 'number',
                  'gamma': 'number', 'iters_per_epoch': 'int'},
    'dataset': {'batch_size_per_gpu': 'int', 'num_worker_per_gpu': 'int', 'gt_size': 'int',
                'dataset_enlarge_ratio': 'int', 'samples_per_type': 'int', 'mean': 'numbers', 'std': 'numbers'},
    'val': {'val_freq': 'int'},
    'logger': {'print_freq': 'int', 'save_checkpoint_freq': 'int'},
}
KIND_WORDS = {'int': 'an integer', 'number': 'a number', 'ints': 'a list of integers',
              'numbers': 'a list of numbers', 'bool': 'true or false', 'str': 'a string',
              'list': 'a list', 'mapping': 'a mapping'}
POSITIVE_KEYS = ('total_iter', 'batch_size_per_gpu', 'gt_size', 'val_freq', 'print_freq', 'save_checkpoint_freq',
                 'dataset_enlarge_ratio', 'lr')
#: Iteration counts BasicSR and our code hold: the logger formats them and the training state and data
#: samplers carry them as int32-sized values; far beyond any real run.
MAX_TOTAL_ITER = 2**31 - 1
#: Value ranges on top of the kinds of NUMERIC_KEYS: (test, what was expected), applied to each element of a list.
RANGES = {
    'train': {'total_iter': (lambda v: v <= MAX_TOTAL_ITER, f'at most {MAX_TOTAL_ITER} (int32)')},
    'optim': {'lr': (lambda v: v > 0, 'a positive learning rate'),
              'betas': (lambda v: 0 <= v < 1, 'betas each in [0, 1)'),
              'eps': (lambda v: v > 0, 'a positive eps'),
              'weight_decay': (lambda v: v >= 0, 'a weight decay >= 0'),
              'momentum': (lambda v: 0 <= v <= 1, 'a momentum in [0, 1]')},
    'scheduler': {'gamma': (lambda v: v > 0, 'a positive gamma'),
                  'periods': (lambda v: v >= 1, 'positive integer periods'),
                  'milestones': (lambda v: v >= 1, 'positive integer milestones'),
                  'eta_min': (lambda v: v >= 0, 'an eta_min >= 0'),
                  'restart_weights': (lambda v: v >= 0, 'restart weights >= 0')},
    'dataset': {'num_worker_per_gpu': (lambda v: v >= 0, 'a worker count >= 0')},
}
#: Root options: manual_seed is handed to random, numpy and torch (numpy takes [0, 2**32 - 1]); scale >= 1.
ROOT_RANGES = {'manual_seed': (lambda v: 0 <= v <= 2**32 - 1, 'a seed in [0, 4294967295]'),
               'scale': (lambda v: v >= 1, 'a scale >= 1')}
DATA_PATH_KEYS = ('dataroot_gt', 'dataroot_lq', 'dataroot_clear', 'meta_info_file', 'clear_meta_info_file')
SCHEDULERS = ('MultiStepLR', 'MultiStepRestartLR', 'CosineAnnealingRestartLR', 'EpochExponentialLR')


def memory_bytes():
    """This machine's physical memory in bytes (0 if unknown)."""
    try:
        return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
    except (OSError, ValueError, AttributeError):
        return 0


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _matches(value, kind):
    if kind == 'int':
        return _is_int(value)
    if kind == 'number':
        return _is_number(value)
    if kind in ('ints', 'numbers'):
        test = _is_int if kind == 'ints' else _is_number
        return isinstance(value, (list, tuple)) and all(test(v) for v in value)
    if kind == 'bool':
        return isinstance(value, bool)
    if kind == 'str':
        return isinstance(value, str)
    if kind == 'list':
        return isinstance(value, (list, tuple))
    if kind == 'mapping':
        return isinstance(value, dict)
    raise ValueError(kind)


class OptionChecker:
    """Checks a parsed option dict before any dataset, network or model is built.

    Every error is an :class:`OptionsError` naming the option file, the key path (``train:optim_g:lr``),
    what was found and what was expected.
    """

    def __init__(self, opt, path, is_train=True, check_paths=True):
        self.opt, self.path, self.is_train, self.check_paths = opt, path, is_train, check_paths

    def fail(self, keys, message):
        raise OptionsError(f'Option file {self.path}: {keys}: {message}')

    def expect(self, keys, value, kind, positive=False):
        if not _matches(value, kind):
            self.fail(keys, f'expected {KIND_WORDS[kind]}, got {value!r} ({type(value).__name__})')
        for v in (value if kind in ('ints', 'numbers') else [value]):
            if kind in ('number', 'numbers') and not math.isfinite(v):
                self.fail(keys, f'expected a finite number, got {v!r}')
        if positive and kind in ('int', 'number') and value <= 0:
            self.fail(keys, f'expected a positive {KIND_WORDS[kind][3:] if kind == "int" else "number"}, '
                            f'got {value!r}')

    def require(self, node, key, keys, kind=None):
        if not isinstance(node, dict) or key not in node or node[key] is None:
            self.fail(keys, 'required option is missing' + (f' (expected {KIND_WORDS[kind]})' if kind else ''))
        if kind is not None:
            self.expect(keys, node[key], kind)
        return node[key]

    def numeric(self, node, group, prefix):
        for key, kind in NUMERIC_KEYS[group].items():
            if isinstance(node, dict) and node.get(key) is not None:
                self.expect(f'{prefix}:{key}', node[key], kind, positive=key in POSITIVE_KEYS)
                self.in_range(f'{prefix}:{key}', node[key], RANGES.get(group, {}).get(key))

    def in_range(self, keys, value, rule):
        if rule is None:
            return
        test, words = rule
        for v in (value if isinstance(value, (list, tuple)) else [value]):
            if not test(v):
                self.fail(keys, f'expected {words}, got {shown(repr(value))}')

    def finite_everywhere(self, node, keys=''):
        """No NaN or infinity anywhere in the options (``.nan`` reaches torch as a silent NaN)."""
        if isinstance(node, float) and not math.isfinite(node):
            self.fail(keys or '(root)', f'expected a finite number, got {node!r}')
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, value in items:
            self.finite_everywhere(value, f'{keys}:{shown(str(key))}' if keys else shown(str(key)))

    def registered(self, registry, what, keys, name):
        objects = dict(iter(registry))  # {name: class}; BasicSR's get() also accepts names with a '_basicsr' suffix
        if isinstance(name, str) and (name in objects or f'{name}_basicsr' in objects):
            return objects.get(name) or objects[f'{name}_basicsr']
        known = ', '.join(sorted({k[:-len('_basicsr')] if k.endswith('_basicsr') else k for k in registry.keys()}))
        self.fail(keys, f'unknown {what} type {name!r}; registered {what} types: {known}')

    # -------------------------------------------------------------------- the sections
    def run(self):
        from basicsr.utils.registry import ARCH_REGISTRY, MODEL_REGISTRY
        opt = self.opt
        self.finite_everywhere(opt)
        for key, rule in ROOT_RANGES.items():
            if opt.get(key) is not None:
                self.expect(key, opt[key], 'int')
                self.in_range(key, opt[key], rule)
        problem = run_name_problem(self.require(opt, 'name', 'name', 'str'))
        if problem:
            self.fail('name', problem + ': the run folder must stay inside experiments/ or results/')
        self.registered(MODEL_REGISTRY, 'model', 'model_type', self.require(opt, 'model_type', 'model_type', 'str'))
        datasets = self.require(opt, 'datasets', 'datasets', 'mapping')
        for key in ('network_g', 'network_d'):
            if key == 'network_g' or opt.get(key) is not None:
                net = self.require(opt, key, key, 'mapping')
                cls = self.registered(ARCH_REGISTRY, 'network', f'{key}:type', self.require(net, 'type', f'{key}:type'))
                check_constructor_args(self, cls, net, key)
                self.check_network_size(cls, net, key)
        if self.is_train:
            self.require(datasets, 'train', 'datasets:train', 'mapping')
            self.check_train(self.require(opt, 'train', 'train', 'mapping'))
            logger = self.require(opt, 'logger', 'logger', 'mapping')
            self.numeric(logger, 'logger', 'logger')
        for phase, dataset in datasets.items():
            self.check_dataset(phase, dataset)
        if opt.get('val') is not None:
            self.check_val(opt['val'])
        if self.check_paths:
            for key, value in (opt.get('path') or {}).items():
                if key.startswith('pretrain_network') and isinstance(value, str) and not osp.isfile(
                        osp.expanduser(value)):
                    self.fail(f'path:{key}', f'checkpoint file {value} does not exist')

    def check_network_size(self, cls, net, key):
        """Refuse a network whose parameters, with their gradients and two Adam states (x4), would not fit
        in this machine's memory; counted on the 'meta' device, so nothing is allocated. A network that
        cannot be built there (it reads files, say) is not counted."""
        try:
            with torch.device('meta'):
                model = cls(**{k: v for k, v in net.items() if k != 'type'})
            count = sum(p.numel() for p in model.parameters())
        except Exception:  # noqa: BLE001 (only an estimate; the real build reports its own errors)
            return
        budget = memory_bytes()
        if budget and count * 4 * 4 > budget:
            self.fail(key, f'{cls.__name__} would have {count:,} parameters: {count * 16 / 2**30:.1f} GiB with '
                           f'gradients and Adam states, more than this machine\'s {budget / 2**30:.1f} GiB of memory')

    def check_train(self, train):
        from basicsr.utils.registry import LOSS_REGISTRY
        self.require(train, 'total_iter', 'train:total_iter', 'int')
        self.numeric(train, 'train', 'train')
        for key, value in train.items():
            keys = f'train:{key}'
            if key.startswith('optim_') and isinstance(value, dict):
                self.check_optimizer(value, keys)
            elif key.endswith('_opt') and isinstance(value, dict) and 'type' in value:
                cls = self.registered(LOSS_REGISTRY, 'loss', f'{keys}:type', value['type'])
                check_constructor_args(self, cls, value, keys)
                if self.check_paths:
                    self.check_vgg_weights(cls, value, keys)
        if 'optim_g' not in train:
            self.fail('train:optim_g', 'required option is missing (expected a mapping with type and lr)')
        if train.get('scheduler') is not None:
            self.check_scheduler(train['scheduler'], train['total_iter'])

    def check_vgg_weights(self, cls, loss, keys):
        """A loss that asks for ImageNet VGG weights (``pretrained`` true) finds its file now, offline, rather
        than after the datasets and teachers are built."""
        from uniremoval.losses.vgg_features import default_vgg_weights_path
        try:
            params = inspect.signature(cls).parameters
        except (TypeError, ValueError):
            return
        if 'pretrained' not in params or 'vgg_weights_path' not in params:
            return
        if not loss.get('pretrained', params['pretrained'].default):
            return
        vgg_type = loss.get('vgg_type', params['vgg_type'].default if 'vgg_type' in params else 'vgg19')
        given = loss.get('vgg_weights_path')
        path = osp.expanduser(str(given)) if given is not None else default_vgg_weights_path(vgg_type)
        if not osp.isfile(path):
            name = osp.basename(default_vgg_weights_path(vgg_type))
            where = 'vgg_weights_path' if given is not None else 'pretrained'
            self.fail(f'{keys}:{where}', f'ImageNet {vgg_type} weights file {shown(path)} does not exist (nothing '
                                         f'is downloaded): put https://download.pytorch.org/models/{name} there, '
                                         f'set {keys}:vgg_weights_path to a copy, or set {keys}:pretrained: false')

    def check_optimizer(self, optim, keys):
        optim_type = self.require(optim, 'type', f'{keys}:type', 'str')
        self.require(optim, 'lr', f'{keys}:lr', 'number')
        self.numeric(optim, 'optim', keys)
        cls = getattr(torch.optim, optim_type, None)
        if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
            self.fail(f'{keys}:type', f'unknown optimizer {optim_type!r}; BasicSR models build torch.optim.Adam '
                                      '(type: Adam)')
        check_constructor_args(self, cls, optim, keys, skip=('params',))

    def check_scheduler(self, scheduler, total_iter):
        from basicsr.models import lr_scheduler
        keys = 'train:scheduler'
        kind = self.require(scheduler, 'type', f'{keys}:type', 'str')
        if kind not in SCHEDULERS:
            self.fail(f'{keys}:type', f'unknown scheduler {kind!r}; known: {", ".join(SCHEDULERS)}')
        self.numeric(scheduler, 'scheduler', keys)
        if kind in ('MultiStepLR', 'MultiStepRestartLR'):
            check_constructor_args(self, lr_scheduler.MultiStepRestartLR, scheduler, keys, skip=('optimizer',))
        elif kind == 'CosineAnnealingRestartLR':
            check_constructor_args(self, lr_scheduler.CosineAnnealingRestartLR, scheduler, keys, skip=('optimizer',))
            periods = scheduler['periods']
            weights = scheduler.get('restart_weights', [1])
            if len(weights) != len(periods):
                self.fail(f'{keys}:restart_weights', f'must have one weight per period ({len(periods)}: {periods}), '
                                                     f'got {weights}')
            if sum(periods) < total_iter:
                self.fail(f'{keys}:periods', f'the periods {periods} sum to {sum(periods)}, fewer than '
                                             f'train:total_iter {total_iter}: BasicSR\'s CosineAnnealingRestartLR '
                                             f'fails at iteration {sum(periods) + 1}. Make the periods sum to at '
                                             f'least total_iter, e.g. --force_yml train:scheduler:periods='
                                             f'[{total_iter}] (or lower train:total_iter).')

    def check_val(self, val):
        from basicsr.utils.registry import METRIC_REGISTRY
        if not isinstance(val, dict):
            self.fail('val', f'expected a mapping, got {val!r}')
        if self.is_train:
            self.numeric(val, 'val', 'val')
        for name, metric in (val.get('metrics') or {}).items():
            keys = f'val:metrics:{name}'
            if not isinstance(metric, dict):
                self.fail(keys, f'expected a mapping with a metric type, got {metric!r}')
            self.registered(METRIC_REGISTRY, 'metric', f'{keys}:type', metric.get('type'))

    def check_dataset(self, phase, dataset):
        from basicsr.utils.registry import DATASET_REGISTRY
        keys = f'datasets:{phase}'
        if not isinstance(dataset, dict):
            self.fail(keys, f'expected a mapping of dataset options, got {dataset!r}')
        self.registered(DATASET_REGISTRY, 'dataset', f'{keys}:type', self.require(dataset, 'type', f'{keys}:type'))
        self.numeric(dataset, 'dataset', keys)
        if phase.split('_')[0] == 'train':
            for key in ('batch_size_per_gpu', 'num_worker_per_gpu'):
                self.require(dataset, key, f'{keys}:{key}', 'int')
        if self.check_paths:
            check_dataset_paths(dataset, f'Option file {self.path}: {keys}', train=phase.split('_')[0] == 'train')


def _kind_of_default(default):
    """The kind a parameter's default value implies (``None`` when it implies nothing)."""
    if isinstance(default, bool):
        return 'bool'
    if isinstance(default, (int, float)):  # an int default may be given a float (e.g. eta_min: 0 -> 1e-6)
        return 'number'
    if isinstance(default, str):
        return 'str'
    if isinstance(default, (list, tuple)):
        return 'list'
    return None


def check_constructor_args(checker, cls, options, keys, skip=()):
    """Check ``options`` (minus ``type``) against the signature of ``cls``: unknown names (unless it takes
    ``**kwargs``), missing required arguments, and values of the wrong kind for their default
    (``n_feat: eight`` where the default is ``40``)."""
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):  # builtins without a signature: nothing to check
        return
    params = {n: p for n, p in signature.parameters.items()
              if n not in skip and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    takes_kwargs = any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values())
    name = getattr(cls, '__name__', str(cls))
    for key, value in options.items():
        if key == 'type':
            continue
        if key not in params:
            if not takes_kwargs:
                checker.fail(f'{keys}:{key}', f'{name} takes no argument {key!r}; it takes: {", ".join(params)}')
            continue
        default = params[key].default
        kind = _kind_of_default(default)
        if kind is not None and value is not None and not _matches(value, kind):
            checker.fail(f'{keys}:{key}', f'expected {KIND_WORDS[kind]} (the default of {name}.{key} is '
                                          f'{default!r}), got {value!r} ({type(value).__name__})')
        if _is_int(default) and default > 0 and _is_int(value) and value <= 0:  # sizes, counts (n_feat, width)
            checker.fail(f'{keys}:{key}', f'expected a positive integer (the default of {name}.{key} is '
                                          f'{default!r}), got {value!r}')
    missing = [n for n, p in params.items() if p.default is p.empty and n not in options]
    if missing:
        checker.fail(keys, f'{name} needs the argument(s) {", ".join(missing)}')


def check_dataset_paths(dataset, where, train):
    """Every data path of a dataset's options exists and holds images (:mod:`uniremoval.data.data_util`)."""
    from uniremoval.data.data_util import DataCheckError, check_dataset_files
    try:
        check_dataset_files(dataset, train=train)
    except DataCheckError as e:
        raise OptionsError(f'{where}: {e}') from e


def check_options(opt, path, is_train=True, check_paths=True):
    """Check an option dict (after ``--force_yml``) before anything is built; see :class:`OptionChecker`.

    Raises:
        OptionsError: naming ``path``, the key path and what was expected.
    """
    OptionChecker(opt, path, is_train=is_train, check_paths=check_paths).run()
