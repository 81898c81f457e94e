"""ADS step 2 from a select option file (Park et al., CVPR 2023): scores and masks per degradation.

For every degradation d (the sources of ``datasets.select``), the unified model and the target model
fine-tuned on d give each convolution filter a score (:func:`uniremoval.ads.selection.compute_scores`;
FAIG-SD by default, Xie et al. NeurIPS 2021 Eq. 3, averaged over ``select.num_images`` images of d),
and the top q% filters of each layer form the mask M_d. :func:`run_select` writes into
``path.output`` (default ``results/<name>``) ``masks_<method>_q<q>.pth`` for every q (the file an ADS
option file's ``network_g:masks`` points at), ``scores_<method>.pth`` and ``select_<method>.json``
(per-layer counts and the parameter overhead). :func:`check_select_options` validates the option file;
its keys are documented in ``docs/ads.md``. The command is ``uniremoval-ads-select``.
"""
import json
import logging
import time
from os import path as osp

import torch

import uniremoval  # noqa: F401  (compat shim + registration before BasicSR is used)
from basicsr.data import build_dataset
from uniremoval.ads.selection import (DEFAULT_ENCODER_PREFIXES, METHODS, NEEDS_TARGETS, compute_scores,
                                      format_mask_summary, mask_summary, masks_for, parameter_overhead, save_masks)
from uniremoval.options import check_run_name, fail_option, section_with_defaults
from uniremoval.restoration import load_network
from uniremoval.utils.atomic_io import atomic_open
from uniremoval.utils.pixel_range import parse_pixel_range

DEFAULT_Q = (1, 3, 5)
SELECT_DEFAULTS = {'method': 'faig', 'q': list(DEFAULT_Q), 'num_images': 8, 'steps': 100, 'crop_size': None,
                   'loss': 'mse', 'seed': 0, 'encoder_prefixes': list(DEFAULT_ENCODER_PREFIXES)}
LOSSES = ('mse', 'l1')  # FAIG's loss between the output and the ground truth (official: MSE, summed)

logger = logging.getLogger('uniremoval.ads.select_workflow')


# ----------------------------------------------------------------------------- options
def check_select_options(opt, path='<options>'):
    """Validate a select option dict in place (defaults filled in); raises :class:`OptionsError`."""
    sel = section_with_defaults(opt, 'select', SELECT_DEFAULTS, path)
    if sel['method'] not in METHODS:
        fail_option(path, f"select:method must be one of {METHODS}, got {sel['method']!r}")
    q = sel['q'] if isinstance(sel['q'], list) else [sel['q']]
    if not q or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 100 for v in q):
        fail_option(path, f"select:q must be percentages in (0, 100], got {sel['q']!r}")
    sel['q'] = q
    for key in ('num_images', 'steps'):
        if isinstance(sel[key], bool) or not isinstance(sel[key], int) or sel[key] < 1:
            fail_option(path, f'select:{key} must be an int >= 1, got {sel[key]!r}')
    if sel['crop_size'] is not None and (not isinstance(sel['crop_size'], int) or sel['crop_size'] < 8):
        fail_option(path, f"select:crop_size must be ~ or an int >= 8, got {sel['crop_size']!r}")
    if sel['loss'] not in LOSSES:
        fail_option(path, f"select:loss must be one of {sorted(LOSSES)}, got {sel['loss']!r}")
    for key in ('name', 'network_g'):
        if key not in opt:
            fail_option(path, f'missing key {key!r}')
    check_run_name(opt, path)
    path_opt = opt.setdefault('path', {}) or {}
    opt['path'] = path_opt
    um = path_opt.get('pretrain_network_um')
    if not isinstance(um, str) or not osp.isfile(um):
        fail_option(path, f'path:pretrain_network_um must be the unified model checkpoint, not found: {um!r}')
    dataset = (opt.get('datasets') or {}).get('select')
    if not isinstance(dataset, dict) or dataset.get('type') != 'MultiDegradationDataset':
        fail_option(path, 'datasets:select must be a MultiDegradationDataset (one source per degradation)')
    names = [s.get('name') for s in dataset.get('sources') or []]
    if not names:
        fail_option(path, 'datasets:select:sources is empty')
    targets = path_opt.get('pretrain_network_targets') or {}
    if sel['method'] in NEEDS_TARGETS:
        missing = [n for n in names if not isinstance(targets.get(n), str) or not osp.isfile(targets[n])]
        if missing:
            fail_option(path, f"select:method {sel['method']} needs path:pretrain_network_targets for every "
                        f'degradation {names}; missing or not found: {missing} (given: {targets})')
    try:
        opt['pixel_range'] = list(parse_pixel_range(opt))
    except ValueError as e:
        fail_option(path, str(e))
    return names


def _device(opt):
    num_gpu = opt.get('num_gpu', 'auto')
    if num_gpu == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    return torch.device('cuda' if num_gpu and torch.cuda.is_available() else 'cpu')


# ----------------------------------------------------------------------------- data
def _centre_crop(t, size):
    h, w = t.shape[-2:]
    if size is None or (h <= size and w <= size):
        return t
    top, left = max((h - size) // 2, 0), max((w - size) // 2, 0)
    return t[..., top:top + size, left:left + size]


def images_per_degradation(dataset_opt, names, num_images, crop_size=None):
    """{name: [(lq, gt) 1x3xHxW tensors]}: the first ``num_images`` pairs of every source (centre-cropped)."""
    dataset_opt = dict(dataset_opt, phase='test', balanced=False)
    dataset_opt.setdefault('name', 'ads_select')
    dataset_opt.setdefault('scale', 1)
    dataset = build_dataset(dataset_opt)
    found = {n: [] for n in names}
    for i in range(len(dataset)):
        label, _ = dataset.locate(i)
        name = dataset.labels[label]
        if len(found[name]) >= num_images:
            continue
        sample = dataset[i]
        found[name].append((_centre_crop(sample['lq'][None], crop_size), _centre_crop(sample['gt'][None], crop_size)))
        if all(len(v) >= num_images for v in found.values()):
            break
    return found


def to_pixel_range(pairs, pixel_range=(0.0, 1.0)):
    """``(lq, gt)`` pairs in [0, 1] mapped to the network's ``pixel_range`` (the ground truth too, so that the
    FAIG loss compares the network's output with a reference in the same range)."""
    lo, hi = (float(v) for v in pixel_range)
    if (lo, hi) == (0.0, 1.0):
        return list(pairs)
    return [(lq * (hi - lo) + lo, gt * (hi - lo) + lo) for lq, gt in pairs]


def _q_tag(q):
    return f'{q:g}'.replace('.', 'p')


def mask_file(folder, method, q):
    """Where the masks of ``method`` at ``q``% go: ``<folder>/masks_<method>_q<q>.pth``."""
    return osp.join(folder, f'masks_{method}_q{_q_tag(q)}.pth')


def write_selection(folder, method, scores, qs, net, meta, seed=0, encoder_prefixes=DEFAULT_ENCODER_PREFIXES):
    """Write the masks of every q (with the scores), ``scores_<method>.pth`` and the JSON summary;
    returns ``{q: {'mask_file', 'overhead', 'per_layer'}}`` (rows of :func:`~uniremoval.ads.selection.mask_summary`)."""
    summaries = {}
    for q in qs:
        masks = masks_for(scores, q, method, net, seed, encoder_prefixes)
        save_masks(mask_file(folder, method, q), masks, scores, dict(meta, method=method, q=q))
        summaries[q] = {'mask_file': mask_file(folder, method, q), 'overhead': parameter_overhead(net, masks),
                        'per_layer': mask_summary(masks, net)}
    save_masks(osp.join(folder, f'scores_{method}.pth'), masks_for(scores, qs[0], method, net, seed, encoder_prefixes),
               scores, dict(meta, method=method, q=qs[0]))
    with atomic_open(osp.join(folder, f'select_{method}.json'), 'w', encoding='utf-8') as f:
        json.dump({'meta': meta, 'method': method, 'by_q': {str(q): s for q, s in summaries.items()}}, f, indent=1,
                  default=str)
        f.write('\n')
    return summaries


def format_summary(method, summaries):
    """Text lines: per-layer selected filter counts per degradation, and the overhead, for each q."""
    lines = []
    for q, summary in summaries.items():
        lines.append(f'== {method}, top {q:g}% per layer: parameters x{summary["overhead"]:.4f} of the UM')
        lines += format_mask_summary(summary['per_layer']).splitlines()
    return lines


# ----------------------------------------------------------------------------- the run
def run_select(opt, method=None, log=print):
    """Run the selection described by a (checked) option dict; returns ``{q: summary}`` and writes the files."""
    names = check_select_options(opt)
    sel = opt['select']
    method = method or sel['method']
    if method != sel['method']:
        opt['select']['method'] = method
        names = check_select_options(opt)
    torch.manual_seed(int(opt.get('manual_seed') or 0))
    device = _device(opt)
    path_opt = opt['path']
    folder = path_opt.get('output') or osp.join('results', opt['name'])
    um = load_network(path_opt['pretrain_network_um'], opt['network_g'], path_opt.get('param_key_um', 'params'),
                      device)
    targets = batches = None
    if method in NEEDS_TARGETS:
        key = path_opt.get('param_key_targets', 'params')
        targets = {n: load_network(path_opt['pretrain_network_targets'][n], opt['network_g'], key, device)
                   for n in names}
    if method == 'faig':
        pairs = images_per_degradation(opt['datasets']['select'], names, sel['num_images'], sel['crop_size'])
        short = [n for n, p in pairs.items() if len(p) < sel['num_images']]
        if short:
            log(f'note: fewer than {sel["num_images"]} images for {short}; using all they have')
        batches = {n: [(lq.to(device), gt.to(device)) for lq, gt in to_pixel_range(p, opt['pixel_range'])]
                   for n, p in pairs.items()}
    started = time.time()
    scores = compute_scores(method, um, names, targets, batches, sel['steps'], sel['loss'], sel['seed'],
                            sel['encoder_prefixes'])
    meta = {'name': opt['name'], 'degradations': names, 'um': path_opt['pretrain_network_um'],
            'targets': path_opt.get('pretrain_network_targets'), 'network_g': opt['network_g'],
            'num_images': sel['num_images'], 'steps': sel['steps'], 'loss': sel['loss'], 'seed': sel['seed'],
            'unit': 'output filter', 'rounding': 'q% of each layer, rounded half up',
            'seconds': round(time.time() - started, 2)}
    summaries = write_selection(folder, method, scores, sel['q'], um, meta, sel['seed'], sel['encoder_prefixes'])
    for line in format_summary(method, summaries):
        log(line)
    log(f'wrote {folder}/masks_{method}_q*.pth, scores_{method}.pth and select_{method}.json')
    return summaries
