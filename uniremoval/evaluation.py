"""The Uni-Removal comparison tables (arXiv 2307.05075, Tables IV-V) from an evaluation option file.

Every compared checkpoint (a column) restores every test set (a row: one degradation type); each
cell holds the mean of every configured metric over the set, scored by
:mod:`uniremoval.metrics.scoring` exactly as validation scores. Full-reference metrics need ground
truth (a set without any shows ``-``); the mean row is the unweighted mean over the sets where the
value exists. :func:`parse_eval_options` loads and checks the option file (safe YAML);
:func:`evaluate` builds the table; :func:`write_outputs` writes ``table.md``, ``table.csv`` and
``table.json`` atomically. Images are restored whole, or in overlapping tiles with ``tile`` set
(:func:`uniremoval.utils.tiling.tiled_forward`). The option file's keys and the reasons this is not
``basicsr test`` are in ``docs/evaluation.md``; the command is ``uniremoval-evaluate``.
"""
import csv
import io
import json
import os
import re
import time
from copy import deepcopy
from os import path as osp

import numpy as np
import torch
from tqdm import tqdm

import uniremoval  # noqa: F401  (compat shim + registration before BasicSR is used)
from basicsr.data import build_dataloader, build_dataset
from basicsr.utils import get_root_logger, imwrite, tensor2img
from basicsr.utils.registry import METRIC_REGISTRY
from uniremoval.metrics.scoring import is_full_reference, metric_kwargs, score_image
from uniremoval.options import OptionsError, check_dataset_paths, check_run_name, fail_option, load_option_file
from uniremoval.restoration import load_network, network_function
from uniremoval.utils.atomic_io import atomic_open
from uniremoval.utils.pixel_range import parse_pixel_range
from uniremoval.utils.tiling import tiled_forward

MISSING = '-'
DEFAULT_DIGITS = 3  # the paper's tables give three decimals
DEFAULT_TILE_OVERLAP = 32
# Our multi-type datasets: rows use them with ``balanced: false`` unless told otherwise.
MULTI_TYPE_DATASETS = ('MultiDegradationDataset', 'UnpairedDegradationDataset')
METRIC_LABELS = {'calculate_psnr': 'PSNR', 'calculate_ssim': 'SSIM', 'calculate_niqe': 'NIQE',
                 'calculate_brisque': 'BRISQUE', 'calculate_piqe': 'PIQE'}
OUTPUT_FILES = ('table.md', 'table.csv', 'table.json')


# ----------------------------------------------------------------------------- options
def _resolve_path(value):
    return osp.expanduser(value)


def _check_checkpoints(opt, path, rows):
    checkpoints = opt.get('checkpoints')
    if not isinstance(checkpoints, list) or not checkpoints:
        fail_option(path, f"'checkpoints' must be a non-empty list of {{name, path, param_key}}, got {checkpoints!r}")
    names = []
    for i, ckpt in enumerate(checkpoints):
        where = f'checkpoints[{i}]'
        if not isinstance(ckpt, dict):
            fail_option(path, f'{where} must be a mapping with name, path and param_key, got {ckpt!r}')
        name = ckpt.get('name')
        if not isinstance(name, str) or not name:
            fail_option(path, f'{where} needs a non-empty string name, got {name!r}')
        where = f"{where} ('{name}')"
        if name in names or name == opt.get('input_column'):
            fail_option(path, f'{where}: column names must be unique')
        names.append(name)
        unknown = sorted(set(ckpt) - {'name', 'path', 'param_key', 'network_g', 'pixel_range'})
        if unknown:
            fail_option(path, f'{where} has unknown key(s) {unknown}')
        paths = ckpt.get('path')
        if isinstance(paths, str):
            paths = {row: paths for row in rows}
        elif isinstance(paths, dict):
            extra = sorted(set(paths) - set(rows))
            if extra:
                fail_option(path, f'{where}: path names row(s) {extra} that are not in datasets ({list(rows)})')
        else:
            fail_option(path, f'{where}: path must be a checkpoint file or a mapping {{row: file}}, got {paths!r}')
        for row, file in paths.items():
            if not isinstance(file, str) or not osp.isfile(_resolve_path(file)):
                fail_option(path, f'{where}: checkpoint file not found: {file!r}' + (
                    '' if isinstance(ckpt['path'], str) else f' (row {row!r})'))
        ckpt['path'] = {row: _resolve_path(file) for row, file in paths.items()}
        ckpt.setdefault('param_key', 'params')
        network = ckpt.get('network_g', opt['network_g'])
        if not isinstance(network, dict) or 'type' not in network:
            fail_option(path, f"{where}: network_g must be a mapping with a 'type', got {network!r}")
        ckpt['network_g'] = network
        try:
            ckpt['pixel_range'] = parse_pixel_range({'pixel_range': ckpt.get('pixel_range', opt['pixel_range'])})
        except ValueError as e:
            fail_option(path, f'{where}: {e}')


def _check_datasets(opt, path):
    datasets = opt.get('datasets')
    if not isinstance(datasets, dict) or not datasets:
        fail_option(path, f"'datasets' must be a non-empty mapping {{type: dataset options}}, got {datasets!r}")
    for row, dataset in datasets.items():
        where = f'datasets:{row}'
        if not isinstance(dataset, dict):
            fail_option(path, f'{where} must be a mapping of dataset options, got {dataset!r}')
        for key in ('name', 'type'):
            if not isinstance(dataset.get(key), str) or not dataset[key]:
                fail_option(path, f'{where} needs a string {key!r}, got {dataset.get(key)!r}')
        if dataset.get('mean') is not None or dataset.get('std') is not None:
            fail_option(path, f'{where}: mean/std normalisation is not supported; the evaluation expects [0, 1] images')
        dataset['phase'] = 'test'
        dataset['scale'] = opt.get('scale', 1)
        if dataset['type'] in MULTI_TYPE_DATASETS:
            dataset.setdefault('balanced', False)
        for key in ('dataroot_gt', 'dataroot_lq'):
            if isinstance(dataset.get(key), str):
                dataset[key] = _resolve_path(dataset[key])


def _check_metrics(opt, path):
    metrics = opt.get('metrics')
    if not isinstance(metrics, dict) or not metrics:
        fail_option(path, f"'metrics' must be a non-empty mapping {{name: metric options}}, got {metrics!r}")
    for name, metric in metrics.items():
        where = f'metrics:{name}'
        if not isinstance(metric, dict) or not isinstance(metric.get('type'), str):
            fail_option(path, f"{where} must be a mapping with a metric 'type', got {metric!r}")
        if metric['type'] not in METRIC_REGISTRY:
            fail_option(path, f"{where}: metric type {metric['type']!r} is not registered")
        reference = is_full_reference(metric)
        better = metric.get('better', 'higher' if reference else 'lower')
        if better not in ('higher', 'lower'):
            fail_option(path, f"{where}: better must be 'higher' or 'lower', got {better!r}")
        digits = metric.get('digits', DEFAULT_DIGITS)
        if isinstance(digits, bool) or not isinstance(digits, int) or digits < 0:
            fail_option(path, f'{where}: digits must be an int >= 0, got {digits!r}')
        metric.update(better=better, digits=digits)
        metric.setdefault('crop_border', 0)


def _check_tiling(opt, path):
    tile = opt.setdefault('tile', None)
    overlap = opt.setdefault('tile_overlap', DEFAULT_TILE_OVERLAP)
    batch = opt.setdefault('tile_batch', 1)
    if tile is None:
        return
    for key, value, minimum in (('tile', tile, 1), ('tile_overlap', overlap, 0), ('tile_batch', batch, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            fail_option(path, f"'{key}' must be an int >= {minimum}, got {value!r}")
    if overlap >= tile:
        fail_option(path, f"'tile_overlap' ({overlap}) must be smaller than 'tile' ({tile})")


def _device(opt, path):
    num_gpu = opt.get('num_gpu', 'auto')
    if num_gpu == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if isinstance(num_gpu, bool) or not isinstance(num_gpu, int) or num_gpu < 0:
        fail_option(path, f"num_gpu must be 'auto' or an integer >= 0, got {num_gpu!r}")
    if num_gpu > 0 and not torch.cuda.is_available():
        fail_option(path, f'num_gpu: {num_gpu} but CUDA is not available; set num_gpu: 0 (CPU) or auto')
    return torch.device('cuda' if num_gpu > 0 else 'cpu')


def parse_eval_options(path, force_yml=None, root_path=None):
    """Read and validate an evaluation option file (see the module docstring).

    Checkpoint files are checked here, before anything is restored.

    Returns:
        dict: the options, with ``checkpoints[i]['path']`` a mapping {row: file},
        ``checkpoints[i]['network_g']`` / ``['pixel_range']`` resolved, ``device`` and
        ``path.results_root`` (``<root_path or cwd>/results/<name>``) added.

    Raises:
        OptionsError: naming the file and the offending key (or checkpoint file).
    """
    opt = load_option_file(path, force_yml)
    check_run_name(opt, path)
    if not isinstance(opt.get('network_g'), dict) or 'type' not in opt['network_g']:
        fail_option(path, f"'network_g' must be a mapping with a 'type', got {opt.get('network_g')!r}")
    opt.setdefault('pixel_range', [0, 1])
    input_column = opt.setdefault('input_column', None)
    if input_column is not None and (not isinstance(input_column, str) or not input_column):
        fail_option(path, f"'input_column' must be a column name or ~, got {input_column!r}")
    _check_tiling(opt, path)
    _check_datasets(opt, path)
    _check_metrics(opt, path)
    _check_checkpoints(opt, path, list(opt['datasets']))
    for row, dataset in opt['datasets'].items():  # missing / empty folders, unreadable images
        check_dataset_paths(dataset, f'Option file {path}: datasets:{row}', train=False)
    opt['save_img'] = bool(opt.get('save_img', False))
    opt['device'] = _device(opt, path)
    root_path = osp.abspath(root_path or os.getcwd())
    opt.setdefault('path', {})['results_root'] = osp.join(root_path, 'results', opt['name'])
    return opt


# ----------------------------------------------------------------------------- restoration and scoring
def make_restorer(net, pixel_range, device, tile=None, overlap=DEFAULT_TILE_OVERLAP, batch=1):
    """A function mapping a [0, 1] CPU batch to its restoration on the CPU, whole or in tiles.

    ``net`` works in ``pixel_range``; a network returning a list (MPRNet's stage outputs, final
    first) gives its first element (:func:`uniremoval.restoration.network_function`).
    """
    fn = network_function(net, pixel_range)
    if tile is None:
        def whole(lq):
            with torch.no_grad():
                return fn(lq.to(device)).cpu()
        return whole
    return lambda lq: tiled_forward(fn, lq, tile, overlap=overlap, batch=batch, device=device)


def score_set(loader, metrics, restore_fn, desc, save_dir=None):
    """Mean of each metric over the images of ``loader`` restored by ``restore_fn`` (``None``: the input).

    Returns:
        tuple[dict, dict, int]: ({metric: mean or None}, {metric: number of images scored},
        number of images with ground truth).
    """
    sums = {m: 0.0 for m in metrics}
    counts = {m: 0 for m in metrics}
    with_gt = 0
    for data in tqdm(loader, desc=desc, unit='image', leave=False):
        output = data['lq'] if restore_fn is None else restore_fn(data['lq'])
        sample = {'img': tensor2img(output.detach().cpu())}
        if 'gt' in data:
            sample['img2'] = tensor2img(data['gt'])
            with_gt += 1
        if save_dir is not None:
            imwrite(sample['img'], output_path(save_dir, data['lq_path'][0]))
        for name, value in score_image(sample['img'], sample.get('img2'), metrics).items():
            sums[name] += value
            counts[name] += 1
    return {m: (sums[m] / counts[m] if counts[m] else None) for m in metrics}, counts, with_gt


def output_path(save_dir, input_path):
    """Where the restoration of ``input_path`` (a file path or LMDB key) is saved: ``<save_dir>/<stem>.png``.

    Only the input's base name counts (without leading dots, and with ``\\`` taken as a separator too),
    so a name such as ``../x.png``, ``..\\x.png`` or ``/etc/x`` (from a meta-info file or an LMDB key)
    cannot write outside ``save_dir``.
    """
    stem = osp.splitext(osp.basename(str(input_path).replace('\\', '/')))[0].lstrip('.').replace('\0', '_')
    path = osp.join(save_dir, f"{stem or 'image'}.png")
    if osp.dirname(osp.abspath(path)) != osp.abspath(save_dir):  # cannot happen; kept as a guard
        raise OptionsError(f'output name derived from {input_path!r} leaves the output folder {save_dir}')
    return path


def _slug(text):
    return re.sub(r'[^A-Za-z0-9._-]+', '_', text).strip('_') or 'column'


def evaluate(opt, logger=None):
    """Score every checkpoint (column) on every test set (row); return the table as a dict.

    ``opt`` comes from :func:`parse_eval_options`. The returned dict is what ``table.json`` holds.
    """
    logger = logger or get_root_logger()
    device, metrics = opt['device'], opt['metrics']
    rows = []
    for row, dataset_opt in opt['datasets'].items():
        dataset = build_dataset(deepcopy(dataset_opt))
        if len(dataset) == 0:
            folders = ', '.join(f'{k} {dataset_opt[k]}' for k in ('dataroot_lq', 'dataroot_gt') if dataset_opt.get(k))
            raise OptionsError(f"datasets:{row} ({dataset_opt['name']}) holds no images ({folders or 'no data path'}); "
                               'a table row needs at least one image')
        loader = build_dataloader(dataset, dataset_opt, num_gpu=0, dist=False, sampler=None)
        rows.append({'type': row, 'test_set': dataset_opt['name'], 'num_images': len(dataset),
                     'num_with_gt': None, 'loader': loader, 'values': {}, 'num_scored': {}})
        logger.info(f"Row {row}: {dataset_opt['name']} ({dataset_opt['type']}), {len(dataset)} images")

    columns = ([opt['input_column']] if opt['input_column'] else []) + [c['name'] for c in opt['checkpoints']]
    vis_root = osp.join(opt['path']['results_root'], 'visualization')
    jobs = [(opt['input_column'], None)] if opt['input_column'] else []
    jobs += [(c['name'], c) for c in opt['checkpoints']]
    for column, ckpt in jobs:
        nets = {}  # checkpoint file -> network, for the rows of this column
        for row in rows:
            if ckpt is not None and row['type'] not in ckpt['path']:
                row['values'][column] = {m: None for m in metrics}
                row['num_scored'][column] = {m: 0 for m in metrics}
                continue
            restore_fn = None
            if ckpt is not None:
                file = ckpt['path'][row['type']]
                if file not in nets:
                    logger.info(f"Column {column}: loading {file} [{ckpt['param_key']}]")
                    nets = {file: load_network(file, ckpt['network_g'], ckpt['param_key'], device)}
                restore_fn = make_restorer(nets[file], ckpt['pixel_range'], device, opt['tile'],
                                           opt['tile_overlap'], opt['tile_batch'])
            save_dir = osp.join(vis_root, _slug(column), _slug(row['type'])) if opt['save_img'] else None
            values, counts, with_gt = score_set(row['loader'], metrics, restore_fn,
                                                desc=f"{column} | {row['type']}", save_dir=save_dir)
            row['values'][column], row['num_scored'][column], row['num_with_gt'] = values, counts, with_gt
            logger.info(f"{column} | {row['type']}: " + ', '.join(
                f'{m}: {MISSING if v is None else f"{v:.4f}"}' for m, v in values.items()))
    for row in rows:
        del row['loader']

    mean = {}
    for column in columns:
        mean[column] = {}
        for m in metrics:
            cells = [r['values'][column][m] for r in rows if r['values'][column][m] is not None]
            mean[column][m] = float(np.mean(cells)) if cells else None
    return {
        'name': opt['name'],
        'created': time.strftime('%Y-%m-%d %H:%M:%S'),
        'device': str(device),
        'tiling': None if opt['tile'] is None else {
            'tile': opt['tile'], 'overlap': opt['tile_overlap'], 'batch': opt['tile_batch']},
        'columns': columns,
        'input_column': opt['input_column'],
        'checkpoints': {c['name']: {'path': c['path'], 'param_key': c['param_key'],
                                    'pixel_range': list(c['pixel_range']), 'network_g': c['network_g']}
                        for c in opt['checkpoints']},
        'metrics': {m: {'type': o['type'], 'label': metric_label(m, o), 'better': o['better'],
                        'reference': 'full' if is_full_reference(o) else 'none',
                        'options': metric_kwargs({k: v for k, v in o.items() if k != 'type'}),
                        'description': describe_metric(m, o)}
                    for m, o in metrics.items()},
        'rows': rows,
        'mean': mean,
        'notes': table_notes(rows, columns, metrics, opt),
    }


# ----------------------------------------------------------------------------- table text
def metric_label(name, metric_opt):
    return METRIC_LABELS.get(metric_opt['type'], name.upper())


def describe_metric(name, metric_opt):
    """One sentence on how ``metric_opt`` is computed (channels, crop border, reference)."""
    label, kind = metric_label(name, metric_opt), metric_opt['type']
    crop = metric_opt.get('crop_border', 0)
    if not is_full_reference(metric_opt):
        return (f'{label} (`{kind}`, no reference, {metric_opt["better"]} is better): on each restored 8-bit '
                f'image, crop_border {crop}.')
    channels = ('the Y channel of YCbCr (ITU-R BT.601, as MATLAB rgb2ycbcr)' if metric_opt.get('test_y_channel')
                else 'the RGB channels')
    how = {'calculate_psnr': '10 log10(255^2 / MSE) ', 'calculate_ssim': "BasicSR's SSIM (11x11 Gaussian, "
           'sigma 1.5, averaged over channels) '}.get(kind, '')
    return (f'{label} (`{kind}`, full reference, {metric_opt["better"]} is better): {how}between the restored '
            f'image and the ground truth, both 8-bit (clamped to [0, 1] and rounded), on {channels}, '
            f'crop_border {crop}; only on images with ground truth.')


def table_notes(rows, columns, metrics, opt):
    """Why cells are missing or cover part of a set, one sentence each."""
    notes = []
    has_full_reference = any(is_full_reference(o) for o in metrics.values())
    for row in rows:
        where = f"{row['type']} ({row['test_set']})"
        with_gt = row.get('num_with_gt')
        if has_full_reference and with_gt == 0:
            notes.append(f"{where} has no ground truth: its full-reference metrics are '{MISSING}'.")
        elif has_full_reference and with_gt is not None and with_gt < row['num_images']:
            notes.append(f"{where}: full-reference metrics over the {with_gt} of {row['num_images']} images "
                         'with ground truth.')
    for ckpt in opt['checkpoints']:
        for row in rows:
            if row['type'] not in ckpt['path']:
                notes.append(f"{ckpt['name']}: no checkpoint for {row['type']} ({row['test_set']}).")
    return notes


def _fmt(value, digits):
    return MISSING if value is None else f'{value:.{digits}f}'  # an identical image's PSNR: inf


def _fmt_range(pixel_range):
    return '[' + ', '.join(f'{v:g}' for v in pixel_range) + ']'


def _cell(values, metrics):
    return ' / '.join(_fmt(values[m], metrics[m]['digits']) for m in metrics)


def to_markdown(table, metrics):
    """The table as Markdown: rows = types (+ mean), columns = checkpoints, cells = all metrics."""
    arrows = {'higher': '↑', 'lower': '↓'}
    header = ' / '.join(f"{metric_label(m, o)}{arrows[o['better']]}" for m, o in metrics.items())
    lines = [f"# {table['name']}", '',
             f'Rows: degradation types (test sets); columns: checkpoints; cells: {header}, mean over the '
             f"set's images. `{MISSING}`: not available. Mean: unweighted mean over the test sets with a value.", '',
             '| Type | Test set | Images | ' + ' | '.join(table['columns']) + ' |',
             '|---|---|---:|' + '---|' * len(table['columns'])]
    for row in table['rows']:
        cells = [_cell(row['values'][c], metrics) for c in table['columns']]
        lines.append(f"| {row['type']} | {row['test_set']} | {row['num_images']} | " + ' | '.join(cells) + ' |')
    total = sum(r['num_images'] for r in table['rows'])
    cells = [_cell(table['mean'][c], metrics) for c in table['columns']]
    lines.append(f'| **mean** | | {total} | ' + ' | '.join(cells) + ' |')
    lines += ['', '## Metrics', '']
    lines += [f"- {table['metrics'][m]['description']}" for m in metrics]
    tiling = table['tiling']
    how = 'whole images' if tiling is None else (
        f"tiles of {tiling['tile']} px overlapping by {tiling['overlap']} px, blended (uniremoval.utils.tiling)")
    lines += [f'- Restoration: {how}, one image at a time, network in eval mode under no_grad, first output '
              'when the network returns a list; a cell is the mean of the per-image values.', '',
              '## Checkpoints', '']
    if table['input_column']:
        lines.append(f"- {table['input_column']}: the degraded inputs themselves, unrestored.")
    for name, ckpt in table['checkpoints'].items():
        files = ', '.join(f'{row}: `{file}`' for row, file in ckpt['path'].items()) \
            if len(set(ckpt['path'].values())) > 1 else f"`{next(iter(ckpt['path'].values()), MISSING)}`"
        lines.append(f"- {name}: {files} (param_key {ckpt['param_key']}, "
                     f"pixel_range {_fmt_range(ckpt['pixel_range'])})")
    if table['notes']:
        lines += ['', '## Notes', ''] + [f'- {note}' for note in table['notes']]
    return '\n'.join(lines) + '\n'


def to_csv(table, metrics):
    """The table as CSV: one line per type and a ``mean`` line; a column per (checkpoint, metric).

    Values are full precision; a missing value is an empty field.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator='\n')
    writer.writerow(['type', 'test_set', 'num_images'] + [f'{c} {m}' for c in table['columns'] for m in metrics])

    def values(by_column):
        return ['' if by_column[c][m] is None else repr(by_column[c][m]) for c in table['columns'] for m in metrics]

    for row in table['rows']:
        writer.writerow([row['type'], row['test_set'], row['num_images']] + values(row['values']))
    writer.writerow(['mean', '', sum(r['num_images'] for r in table['rows'])] + values(table['mean']))
    return buffer.getvalue()


def atomic_write_text(path, text):
    """Write ``text`` to ``path`` through a temporary file in the same folder, renamed into place."""
    with atomic_open(path, 'w', encoding='utf-8', newline='') as f:
        f.write(text)


def write_outputs(table, metrics, folder):
    """Write ``table.md``, ``table.csv`` and ``table.json`` into ``folder``; return their paths."""
    texts = (to_markdown(table, metrics), to_csv(table, metrics),
             json.dumps(table, indent=2, ensure_ascii=False) + '\n')
    paths = [osp.join(folder, name) for name in OUTPUT_FILES]
    for path, text in zip(paths, texts):
        atomic_write_text(path, text)
    return paths
