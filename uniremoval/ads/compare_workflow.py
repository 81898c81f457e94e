"""The slides' comparison of selection methods for ADS (Park et al., CVPR 2023), from a compare option file.

For every selection method (``faig``, ``weight_diff``, ``random``, ``encoder_only``), every q and every
seed, :func:`run_compare` selects masks (:mod:`uniremoval.ads.selection`), trains a CNN-ADS from the
ADS option template (``ads_opt``) with those masks through :func:`uniremoval.train.train_pipeline`,
and scores it on one test set per degradation (:func:`uniremoval.metrics.scoring.score_images`), beside
the UM and the fine-tuned target models. It writes ``table.md`` and ``table.json`` (means, spreads
over seeds, parameter overheads) and the verdict on the slides' ordering (Ours > Δθ > En > Ran) for
each q: a difference smaller than the spread over seeds counts as none. Runs can go in parallel
processes (``compare.jobs``). :func:`check_compare_options` validates the option file; its keys are
documented in ``docs/ads.md``. The command is ``uniremoval-ads-compare``.
"""
import copy
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from os import path as osp

import numpy as np
import torch
import yaml

import uniremoval  # noqa: F401  (compat shim + registration before BasicSR is used)
from basicsr.data import build_dataset
from basicsr.utils import tensor2img
from uniremoval.ads.select_workflow import check_select_options, images_per_degradation, mask_file, to_pixel_range
from uniremoval.ads.selection import (METHODS, NEEDS_TARGETS, compute_scores, load_masks, masks_for, parameter_overhead,
                                      save_masks)
from uniremoval.metrics.scoring import score_images
from uniremoval.options import check_run_name, fail_option, load_option_file, section_with_defaults
from uniremoval.restoration import load_network, network_function
from uniremoval.train import train_pipeline
from uniremoval.utils.atomic_io import atomic_open
from uniremoval.utils.pixel_range import parse_pixel_range

#: Columns of the slides' table, in their order, and their labels.
#: ``Δθ`` stands for the slides' ``|θ|`` (``|theta_um - theta_d|``), whose bars would split a Markdown table cell.
METHOD_LABELS = {'random': 'Ran', 'encoder_only': 'En', 'weight_diff': 'Δθ', 'faig': 'Ours'}
#: The ordering the slides show at every q (better first).
SLIDES_ORDER = ('faig', 'weight_diff', 'encoder_only', 'random')
DEFAULT_METRICS = {'psnr': {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': False}}
COMPARE_DEFAULTS = {'methods': list(METHOD_LABELS), 'q': [5, 3, 1], 'seeds': [0, 1, 2], 'total_iter': 200, 'jobs': 1,
                    'scores_files': {}, 'oracle': False}


# ----------------------------------------------------------------------------- options
def check_compare_options(opt, path='<options>'):
    """Validate a compare option dict in place (defaults filled in; the select and ADS option files are
    read into ``opt['select']`` and ``opt['ads']``)."""
    for key in ('name', 'select_opt', 'ads_opt'):
        if key not in opt:
            fail_option(path, f'missing key {key!r}')
    check_run_name(opt, path)
    cmp_opt = section_with_defaults(opt, 'compare', COMPARE_DEFAULTS, path)
    bad = [m for m in cmp_opt['methods'] if m not in METHODS]
    if bad or not cmp_opt['methods']:
        fail_option(path, f'compare:methods must be a non-empty list of {METHODS}, got {cmp_opt["methods"]!r}')
    for key in ('total_iter', 'jobs'):
        if isinstance(cmp_opt[key], bool) or not isinstance(cmp_opt[key], int) or cmp_opt[key] < 1:
            fail_option(path, f'compare:{key} must be an int >= 1, got {cmp_opt[key]!r}')
    files = cmp_opt['scores_files'] or {}
    bad = {m: f for m, f in files.items() if m not in NEEDS_TARGETS or not isinstance(f, str) or not osp.isfile(f)}
    if bad:
        fail_option(path, f'compare:scores_files takes existing score files of {NEEDS_TARGETS} (seed-independent), '
                    f'got {bad}')
    cmp_opt['scores_files'] = files
    if not isinstance(cmp_opt['oracle'], bool):
        fail_option(path, f"compare:oracle must be true or false, got {cmp_opt['oracle']!r}")
    if not cmp_opt['seeds'] or not all(isinstance(s, int) for s in cmp_opt['seeds']):
        fail_option(path, f'compare:seeds must be a non-empty list of ints, got {cmp_opt["seeds"]!r}')
    opt['select'] = load_option_file(opt['select_opt'])
    opt['select'].setdefault('select', {})['q'] = list(cmp_opt['q'])
    needs_targets = 'faig' in cmp_opt['methods'] or 'weight_diff' in cmp_opt['methods']
    opt['select']['select']['method'] = 'faig' if needs_targets else 'random'
    names = check_select_options(opt['select'], opt['select_opt'])
    opt['ads'] = load_option_file(opt['ads_opt'])
    net_opt = opt['ads'].get('network_g') or {}
    if opt['ads'].get('model_type') != 'ADSModel' or net_opt.get('type') != 'ADSNet':
        fail_option(opt['ads_opt'], 'the ADS option file must have model_type ADSModel and network_g:type ADSNet')
    degradations = net_opt.get('degradations') or names
    if list(degradations) != names:
        fail_option(path, f'the degradations of {opt["ads_opt"]} ({degradations}) and the sources of '
                    f'{opt["select_opt"]} datasets:select ({names}) must be the same, in the same order')
    opt.setdefault('metrics', copy.deepcopy(DEFAULT_METRICS))
    if not opt.get('datasets'):
        val = (opt['ads'].get('datasets') or {}).get('val')
        if not isinstance(val, dict) or val.get('type') != 'MultiDegradationDataset':
            fail_option(path, 'set datasets (one row per degradation) or a MultiDegradationDataset datasets:val in '
                        'ads_opt')
        opt['datasets'] = {s['name']: dict(val, name=s['name'], sources=[s]) for s in val['sources']}
    missing = [n for n in names if n not in opt['datasets']]
    if missing:
        fail_option(path, f'datasets needs a row for every degradation {names}; missing {missing}')
    return names


# ----------------------------------------------------------------------------- evaluation
def load_rows(datasets):
    """{row: [(lq 1x3xHxW tensor in [0, 1], gt uint8 BGR image)]} of every evaluation dataset (phase test)."""
    rows = {}
    for row, dataset_opt in datasets.items():
        dataset_opt = dict(dataset_opt, phase='test')
        dataset_opt.setdefault('scale', 1)
        if dataset_opt.get('type') == 'MultiDegradationDataset':
            dataset_opt['balanced'] = False
        dataset = build_dataset(dataset_opt)
        rows[row] = [(s['lq'][None], tensor2img(s['gt'][None])) for s in (dataset[i] for i in range(len(dataset)))]
    return rows


def score_network(net, rows, metrics, pixel_range=(0.0, 1.0), only=None, conditions=None):
    """{row: {metric: mean}} of ``net`` (eval mode, no autograd) on the rows (``only``: a subset of rows).

    ``conditions``: {row: degradation index}: run an ADSNet with that type's one-hot ``c`` (the oracle)
    instead of its classifier.
    """
    device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    scores = {}
    with torch.no_grad():
        for row, pairs in rows.items():
            if only is not None and row not in only:
                continue
            if conditions is None:
                fn = network_function(net, pixel_range)
            else:
                label = torch.tensor([conditions[row]], device=device)
                fn = network_function(lambda x, label=label: net(x, label.expand(x.shape[0])), pixel_range)
            outs = [tensor2img(fn(lq.to(device)).cpu()) for lq, _ in pairs]
            scores[row] = score_images(outs, metrics, [gt for _, gt in pairs])
    net.train(was_training)
    return scores


# ----------------------------------------------------------------------------- runs
def ads_run_options(ads_opt, name, masks_path, seed, total_iter, select_opt):
    """The ADS option dict of one run: the template with its masks, seed, schedule, and the UM (and targets)
    of the select option file; validation dropped (runs are scored afterwards)."""
    opt = copy.deepcopy(ads_opt)
    opt['name'] = name
    opt['manual_seed'] = int(seed)
    opt['network_g']['masks'] = masks_path
    opt['datasets'].pop('val', None)
    opt.pop('val', None)
    path_opt = opt.setdefault('path', {})
    sel_path = select_opt['path']
    path_opt.setdefault('pretrain_network_um', sel_path['pretrain_network_um'])
    path_opt.setdefault('param_key_um', sel_path.get('param_key_um', 'params'))
    train = opt['train']
    train['total_iter'] = int(total_iter)
    sched = train.get('scheduler') or {}
    if sched.get('type') == 'CosineAnnealingRestartLR':
        sched['periods'] = [int(total_iter)]
        sched['restart_weights'] = [1]
    elif sched.get('type') in ('MultiStepLR', 'MultiStepRestartLR'):
        sched['milestones'] = [m for m in sched.get('milestones', []) if m < total_iter] or [int(total_iter) + 1]
    logger = opt.setdefault('logger', {})
    logger['save_checkpoint_freq'] = 10**9
    logger['use_tb_logger'] = False
    return opt


def write_options(opt, folder):
    path = osp.join(folder, f"{opt['name']}.yml")
    with atomic_open(path, 'w', encoding='utf-8') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    return path


def train_and_score(task):
    """Train one ADS run (a dict from :func:`plan_runs`) and score it; returns ``{'scores', 'seconds', ...}``."""
    started = time.time()
    model = train_pipeline(['-opt', task['option_file']], root_path=task['root'])
    net = model.get_bare_model(model.net_g)
    rows = load_rows(task['datasets'])
    scores = score_network(net, rows, task['metrics'], task['pixel_range'])
    oracle = None
    if task.get('oracle'):
        oracle = score_network(net, rows, task['metrics'], task['pixel_range'],
                               conditions={row: net.degradations.index(row) for row in rows})
    return {'method': task['method'], 'q': task['q'], 'seed': task['seed'], 'scores': scores, 'oracle': oracle,
            'checkpoint': osp.join(task['root'], 'experiments', task['name'], 'models', 'net_g_latest.pth'),
            'seconds': round(time.time() - started, 2)}


def _single_threaded_worker():
    torch.set_num_threads(1)


def mean_over_rows(scores, metric):
    values = [v[metric] for v in scores.values() if v.get(metric) is not None]
    return float(np.mean(values)) if values else None


def stats(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {'mean': float(np.mean(values)), 'std': float(np.std(values)), 'n': len(values)}


def verdict(better, worse):
    """``'holds'``, ``'reversed'`` or ``'no difference'`` for the claim ``better > worse`` (stats dicts):
    a difference of the means no larger than the larger seed-to-seed standard deviation is no difference."""
    if better is None or worse is None:
        return None
    delta = better['mean'] - worse['mean']
    if abs(delta) <= max(better['std'], worse['std']):
        return 'no difference'
    return 'holds' if delta > 0 else 'reversed'


def summarise(runs, rows, metric, um_scores, im_scores, um_params, overheads):
    """Per (method, q): per-row and average stats over seeds, parameters; UM and IM columns; verdicts."""
    summary = {}
    for run in runs:
        key = f"{run['method']}@{run['q']:g}"
        summary.setdefault(key, {'method': run['method'], 'q': run['q'], 'runs': []})['runs'].append(run)
    for key, entry in summary.items():
        entry['per_row'] = {r: stats([run['scores'][r].get(metric) for run in entry['runs']]) for r in rows}
        entry['avg'] = stats([mean_over_rows(run['scores'], metric) for run in entry['runs']])
        if all(run.get('oracle') for run in entry['runs']):
            entry['per_row_oracle'] = {r: stats([run['oracle'][r].get(metric) for run in entry['runs']])
                                       for r in rows}
            entry['avg_oracle'] = stats([mean_over_rows(run['oracle'], metric) for run in entry['runs']])
        ratios = [overheads[(run['method'], run['q'], run['seed'])] for run in entry['runs']]
        entry['overhead'] = float(np.mean(ratios))
        entry['params'] = um_params * entry['overhead']
        entry.pop('runs')
    um = {'per_row': {r: stats([um_scores[r].get(metric)]) for r in rows},
          'avg': stats([mean_over_rows(um_scores, metric)]), 'params': um_params, 'overhead': 1.0}
    im = {'per_row': {r: stats([im_scores[r].get(metric)]) for r in rows},
          'avg': stats([mean_over_rows(im_scores, metric)]), 'params': um_params * len(rows), 'overhead': len(rows)}
    return summary, um, im


def orderings(summary, um, qs, methods, key='avg'):
    """Verdicts of the slides' claims at every q: each step of FAIG-SD > |theta| > Encoder-only > Random
    (between the methods that were run) and FAIG-SD > UM, on the average ``key`` (``avg``: classifier in the
    loop; ``avg_oracle``: the true type as c)."""
    present = [m for m in SLIDES_ORDER if m in methods]
    out = []
    for q in qs:
        for better, worse in zip(present, present[1:]):
            a, b = summary[f'{better}@{q:g}'][key], summary[f'{worse}@{q:g}'][key]
            out.append({'q': q, 'claim': f'{METHOD_LABELS[better]} > {METHOD_LABELS[worse]}',
                        'delta': a['mean'] - b['mean'], 'verdict': verdict(a, b)})
        for m in present[:1]:
            a = summary[f'{m}@{q:g}'][key]
            out.append({'q': q, 'claim': f'ADS ({METHOD_LABELS[m]}) > UM', 'delta': a['mean'] - um['avg']['mean'],
                        'verdict': verdict(a, um['avg'])})
    return out


def _cell(s, digits=2):
    if s is None:
        return '-'
    if s['n'] > 1:
        return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"
    return f"{s['mean']:.{digits}f}"


def _params(n):
    return f'{n / 1e6:.2f}M' if n >= 1e5 else f'{n / 1e3:.1f}k'


def markdown_table(summary, um, im, rows, qs, methods, metric_label='PSNR'):
    """The slides' table: rows = degradations, Avg., Par.; columns = methods per q, then base UM and IM."""
    cols = [(f'{q:g}%', m) for q in qs for m in methods]
    header = ['Added task'] + [f'{METHOD_LABELS[m]} ({q})' for q, m in cols] + ['Base UM', 'IM (fine-tuned)']
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for r in rows:
        cells = [_cell(summary[f'{m}@{q[:-1]}']['per_row'][r]) for q, m in cols]
        lines.append('| ' + ' | '.join([r.capitalize()] + cells + [_cell(um['per_row'][r]), _cell(im['per_row'][r])])
                     + ' |')
    cells = [_cell(summary[f'{m}@{q[:-1]}']['avg']) for q, m in cols]
    lines.append('| ' + ' | '.join(['Avg.'] + cells + [_cell(um['avg']), _cell(im['avg'])]) + ' |')
    cells = [f"{_params(summary[f'{m}@{q[:-1]}']['params'])} (x{summary[f'{m}@{q[:-1]}']['overhead']:.3f})"
             for q, m in cols]
    im_params = f"{_params(im['params'])} (x{im['overhead']:g})"
    lines.append('| ' + ' | '.join(['Par.'] + cells + [_params(um['params']), im_params]) + ' |')
    lines.append('')
    lines.append(f'{metric_label} in dB, mean ± standard deviation over seeds; Par.: UM parameters x overhead '
                 '(UM + the specific weights of every degradation). IM: each fine-tuned target model on its own '
                 'degradation (one model per degradation). Ran: random filters; En: random encoder filters (same '
                 'number of weights); Δθ: largest |θ_um - θ_d| (the slides\' |θ|); Ours: FAIG-SD.')
    return lines


def verdict_lines(verdicts, seeds):
    lines = [f'Orderings (average PSNR over {len(seeds)} seed(s); a difference no larger than the larger '
             'seed-to-seed standard deviation is "no difference"):', '']
    lines += [f"* q = {v['q']:g}%: {v['claim']}: {v['verdict']} ({v['delta']:+.3f} dB)" for v in verdicts]
    holds = all(v['verdict'] == 'holds' for v in verdicts)
    lines += ['', f"The slides' ordering {'holds' if holds else 'does not hold'} at every q at this scale."]
    return lines


# ----------------------------------------------------------------------------- command
def run_compare(opt, root='.', log=print):
    """Run the whole comparison for a checked option dict; writes and returns the results dict."""
    started = time.time()
    names = list(opt['datasets'])
    sel_opt, cmp_opt = opt['select'], opt['compare']
    sel = sel_opt['select']
    out_dir = osp.abspath(osp.join(root, 'results', opt['name']))
    masks_dir = osp.join(out_dir, 'masks')
    opt_dir = osp.join(out_dir, 'options')
    os.makedirs(opt_dir, exist_ok=True)
    metrics = opt['metrics']
    metric = next(iter(metrics))
    pixel_range = tuple(parse_pixel_range(opt['ads']))
    device = torch.device('cpu')

    path_opt = sel_opt['path']
    um = load_network(path_opt['pretrain_network_um'], sel_opt['network_g'], path_opt.get('param_key_um', 'params'),
                      device)
    methods = [m for m in METHOD_LABELS if m in cmp_opt['methods']]
    targets = batches = None
    if any(m in NEEDS_TARGETS for m in methods):
        key = path_opt.get('param_key_targets', 'params')
        targets = {n: load_network(path_opt['pretrain_network_targets'][n], sel_opt['network_g'], key, device)
                   for n in names}
    cached_scores = {m: load_masks(f)['scores'] for m, f in cmp_opt['scores_files'].items() if m in methods}
    if 'faig' in methods and 'faig' not in cached_scores:
        pairs = images_per_degradation(sel_opt['datasets']['select'], names, sel['num_images'], sel['crop_size'])
        batches = {n: to_pixel_range(p, sel_opt['pixel_range']) for n, p in pairs.items()}

    # 1. masks
    tasks, overheads, select_seconds = [], {}, {}
    for method in methods:
        seeds = cmp_opt['seeds']
        cached = cached_scores.get(method)
        for seed in seeds:
            t0 = time.time()
            if method in NEEDS_TARGETS and cached is not None:
                scores = cached
            else:
                scores = compute_scores(method, um, names, targets, batches, sel['steps'], sel['loss'], seed,
                                        sel['encoder_prefixes'])
                cached = scores if method in NEEDS_TARGETS else None
                select_seconds[f'{method}/seed{seed}'] = round(time.time() - t0, 2)
            for q in cmp_opt['q']:
                masks = masks_for(scores, q, method, um, seed, sel['encoder_prefixes'])
                path = mask_file(masks_dir, f'{method}_seed{seed}', q)
                save_masks(path, masks, scores, {'method': method, 'q': q, 'seed': seed, 'degradations': names})
                overheads[(method, q, seed)] = parameter_overhead(um, masks)
                name = f"{opt['name']}_{method}_q{q:g}_seed{seed}".replace('.', 'p')
                run_opt = ads_run_options(opt['ads'], name, path, seed, cmp_opt['total_iter'], sel_opt)
                tasks.append({'method': method, 'q': q, 'seed': seed, 'name': name, 'root': out_dir,
                              'option_file': write_options(run_opt, opt_dir), 'datasets': opt['datasets'],
                              'metrics': metrics, 'pixel_range': pixel_range, 'oracle': bool(cmp_opt['oracle'])})
    log(f'{len(tasks)} ADS runs ({len(methods)} methods x {len(cmp_opt["q"])} q x {len(cmp_opt["seeds"])} seeds), '
        f'{cmp_opt["total_iter"]} iterations each')

    # 2.-3. train and score
    if cmp_opt['jobs'] > 1:
        with ProcessPoolExecutor(cmp_opt['jobs'], mp_context=get_context('spawn'),
                                 initializer=_single_threaded_worker) as pool:
            runs = list(pool.map(train_and_score, tasks))
    else:
        runs = [train_and_score(task) for task in tasks]

    rows = load_rows(opt['datasets'])
    um_scores = score_network(um, rows, metrics, tuple(sel_opt['pixel_range']))
    im_scores = {}
    if targets is not None:
        for n in names:
            im_scores.update(score_network(targets[n], rows, metrics, tuple(sel_opt['pixel_range']), only={n}))
    else:
        im_scores = {n: {m: None for m in metrics} for n in names}
    um_params = sum(p.numel() for p in um.parameters())
    summary, um_row, im_row = summarise(runs, names, metric, um_scores, im_scores, um_params, overheads)
    verdicts = orderings(summary, um_row, cmp_opt['q'], methods)
    table = markdown_table(summary, um_row, im_row, names, cmp_opt['q'], methods, metric.upper())
    lines = [f"# ADS filter-selection comparison: {opt['name']}", ''] + table + [''] + verdict_lines(
        verdicts, cmp_opt['seeds'])
    oracle_verdicts = None
    if cmp_opt['oracle']:
        oracle_verdicts = orderings(summary, um_row, cmp_opt['q'], methods, key='avg_oracle')
        oracle_summary = {k: dict(v, per_row=v['per_row_oracle'], avg=v['avg_oracle']) for k, v in summary.items()}
        lines += ['', '## With the true degradation type as c (oracle, no classifier)', '']
        lines += markdown_table(oracle_summary, um_row, im_row, names, cmp_opt['q'], methods, metric.upper())[:-2]
        lines += [''] + verdict_lines(oracle_verdicts, cmp_opt['seeds'])
    results = {
        'name': opt['name'], 'degradations': names, 'metric': metric, 'methods': methods, 'q': cmp_opt['q'],
        'seeds': cmp_opt['seeds'], 'total_iter': cmp_opt['total_iter'],
        'runs': [dict(r, q=float(r['q'])) for r in runs],
        'summary': summary, 'um': um_row, 'im': im_row, 'um_scores': um_scores, 'im_scores': im_scores,
        'verdicts': verdicts, 'ordering_holds': all(v['verdict'] == 'holds' for v in verdicts),
        'oracle_verdicts': oracle_verdicts,
        'select_seconds': select_seconds, 'seconds': round(time.time() - started, 1), 'markdown': lines,
    }
    with atomic_open(osp.join(out_dir, 'table.md'), 'w', encoding='utf-8') as f:
        f.write('\n'.join(lines) + '\n')
    with atomic_open(osp.join(out_dir, 'table.json'), 'w', encoding='utf-8') as f:
        json.dump(results, f, indent=1, default=str)
        f.write('\n')
    for line in lines:
        log(line)
    log(f'wrote {out_dir}/table.md and table.json ({results["seconds"]:.0f} s)')
    return results
