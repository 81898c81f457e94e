"""``make demo`` / ``python -m uniremoval.demo``: Uni-Removal's whole pipeline at toy scale on CPU.

1. builds the embedded haze/rain/blur dataset (:mod:`uniremoval.data.demo_data`: photos that ship
   with scikit-image, scikit-learn and matplotlib, nothing is downloaded), with a synthetic
   train/val split and an unpaired "real" split made with *different* degradation settings;
2. trains one tiny MPRNet teacher per degradation type (``options/demo/train_teacher_tiny.yml``);
3. knowledge transfer: distils the three teachers into one student
   (``options/demo/kt_tiny.yml``, arXiv 2307.05075 §III-B);
4. domain adaptation: fine-tunes the student on the unpaired real split
   (``options/demo/da_tiny.yml``, §III-C), its ground truth kept aside for scoring only;
5. evaluates every stage (PSNR/SSIM per type on the synthetic val split and on the real split,
   no-reference scores on the real split), saves image grids and loss curves, and writes
   ``<out>/report.md`` and ``<out>/report.html``.

``--kt-ablation`` / ``--da-ablation`` also train the loss ablations of both stages. The numbers show
the pipeline working end to end on ~100k-parameter networks trained for minutes, not the paper's.
"""
import argparse
import html
import json
import os
import sys
import time
from os import path as osp

import cv2
import numpy as np
import torch
import yaml

import uniremoval  # noqa: F401  (compat shim + registration)
from basicsr.metrics import calculate_psnr, calculate_ssim
from basicsr.utils.registry import METRIC_REGISTRY
from uniremoval import restore as restore_lib
from uniremoval.data.demo_data import KINDS, build_demo_data
from uniremoval.options import load_option_file
from uniremoval.train import train_pipeline

OPTIONS_DIR = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'options', 'demo')
# No-reference metrics reported on the real split, if registered (lower is better for both).
NO_REFERENCE = (('piqe', 'calculate_piqe'), ('brisque', 'calculate_brisque'))

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


# ----------------------------------------------------------------------------- option files
def _write_options(opt, folder):
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


def train(opt, out_dir, curves=None):
    """Run ``basicsr train``'s pipeline on ``opt``; return the latest generator checkpoint path."""
    history = [] if curves is None else curves.setdefault(opt['name'], [])
    train_pipeline(['-opt', _write_options(opt, osp.join(out_dir, 'options'))], root_path=out_dir,
                   on_log=history.append)
    return osp.join(out_dir, 'experiments', opt['name'], 'models', 'net_g_latest.pth')


# ----------------------------------------------------------------------------- evaluation
def load_network(opt, checkpoint):
    """The ``network_g`` of ``opt`` with the ``params`` of ``checkpoint``, strict, in eval mode."""
    return restore_lib.load_network(checkpoint, opt['network_g'], param_key='params')


def read_pairs(data_root, split, kind):
    """(name, lq, gt) uint8 BGR images of one split/type of the demo data."""
    folder = osp.join(data_root, split, kind)
    names = sorted(os.listdir(osp.join(folder, 'gt')))
    return [(n, cv2.imread(osp.join(folder, 'lq', n)), cv2.imread(osp.join(folder, 'gt', n))) for n in names]


def restore(net, img):
    """Restore one uint8 BGR image with an MPRNet-style network (final output first)."""
    return restore_lib.restore_image(net, img)


def score(outputs, gts, no_reference=False):
    """Mean PSNR/SSIM (RGB, crop_border 0, BasicSR's functions) and, if asked, registered NR metrics."""
    scores = {'psnr': float(np.mean([calculate_psnr(o, g, crop_border=0) for o, g in zip(outputs, gts)])),
              'ssim': float(np.mean([calculate_ssim(o, g, crop_border=0) for o, g in zip(outputs, gts)]))}
    if no_reference:
        for name, metric in NO_REFERENCE:
            if metric in METRIC_REGISTRY:
                scores[name] = float(np.mean([METRIC_REGISTRY.get(metric)(o, crop_border=0) for o in outputs]))
    return scores


def evaluate(networks, data_root, split, no_reference=False):
    """Scores and outputs of each network on each type: ({column: {type: scores}}, {column: {type: imgs}}).

    ``networks`` maps a column name to a network or to ``{type: network}`` (teachers); the degraded
    input itself is always the first column.
    """
    scores, outputs = {'input': {}}, {'input': {}}
    for kind in KINDS:
        pairs = read_pairs(data_root, split, kind)
        gts = [gt for _, _, gt in pairs]
        outputs['input'][kind] = [lq for _, lq, _ in pairs]
        scores['input'][kind] = score(outputs['input'][kind], gts, no_reference)
        for column, net in networks.items():
            net = net[kind] if isinstance(net, dict) else net
            outs = [restore(net, lq) for _, lq, _ in pairs]
            outputs.setdefault(column, {})[kind] = outs
            scores.setdefault(column, {})[kind] = score(outs, gts, no_reference)
        outputs.setdefault('ground truth', {})[kind] = gts
    return scores, outputs


def save_grid(outputs, kind, path, n_rows=3):
    """One PNG per type: rows of samples, columns input / each network / ground truth, labelled."""
    columns = list(outputs)
    h, w = outputs[columns[0]][kind][0].shape[:2]
    bar = np.full((18, w * len(columns), 3), 255, np.uint8)
    for i, label in enumerate(columns):
        cv2.putText(bar, label[:16], (i * w + 3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    n_rows = min(n_rows, len(outputs[columns[0]][kind]))
    rows = [np.concatenate([outputs[c][kind][r] for c in columns], axis=1) for r in range(n_rows)]
    cv2.imwrite(path, np.concatenate([bar] + rows, axis=0))


def save_curves(curves, path):
    """Loss curves of every training run as one PNG (matplotlib, log scale); returns False without matplotlib."""
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    runs = [(name, logs) for name, logs in curves.items() if logs]
    fig, axes = plt.subplots(1, len(runs), figsize=(4 * len(runs), 3.2), squeeze=False)
    for ax, (name, logs) in zip(axes[0], runs):
        keys = [k for k in logs[0] if k.startswith('l_') and 'total' not in k]
        iters = [log['iter'] for log in logs]
        for key in keys:
            values = [abs(log[key]) + 1e-8 for log in logs]
            ax.plot(iters, values, label=key)
        ax.set_yscale('log')
        ax.set_title(name.replace('demo_', ''), fontsize=9)
        ax.set_xlabel('iteration')
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


# ----------------------------------------------------------------------------- pipeline
def run_demo(out_dir='results/demo', data_root='datasets/demo', teacher_iters=200, kt_iters=200, da_iters=150,
             patch=48, batch=8, seed=0, kt_ablation=False, da_ablation=False):
    """Run the whole demo; returns the results dict the report is written from."""
    t_start = time.time()
    out_dir, data_root = osp.abspath(out_dir), osp.abspath(data_root)
    os.makedirs(out_dir, exist_ok=True)
    timings, curves = {}, {}

    def stage(name):
        timings[name] = time.time()
        print(f'[demo] {name}', flush=True)

    stage('data')
    if not osp.isfile(osp.join(data_root, 'manifest.json')):
        build_demo_data(data_root, seed=seed)
    stage('teachers')
    teacher_opts = {k: teacher_options(k, data_root, teacher_iters, patch, batch) for k in KINDS}
    teacher_ckpts = {k: train(opt, out_dir, curves) for k, opt in teacher_opts.items()}
    stage('knowledge transfer')
    kt_opt = kt_options(data_root, teacher_ckpts, kt_iters, patch, batch)
    kt_ckpt = train(kt_opt, out_dir, curves)
    stage('domain adaptation')
    da_opt = da_options(data_root, kt_ckpt, da_iters, patch, batch)
    da_ckpt = train(da_opt, out_dir, curves)

    stage('evaluation')
    teachers = {k: load_network(teacher_opts[k], teacher_ckpts[k]) for k in KINDS}
    kt_net, da_net = load_network(kt_opt, kt_ckpt), load_network(da_opt, da_ckpt)
    synthetic, synthetic_out = evaluate(
        {'teacher (own type)': teachers, 'KT student': kt_net, 'DA student': da_net}, data_root, 'val')
    real, real_out = evaluate({'KT student': kt_net, 'DA student': da_net}, data_root, 'real', no_reference=True)
    for kind in KINDS:
        save_grid(synthetic_out, kind, osp.join(out_dir, f'grid_synthetic_{kind}.png'))
        save_grid(real_out, kind, osp.join(out_dir, f'grid_real_{kind}.png'))
    results = {'synthetic': synthetic, 'real': real, 'curves': save_curves(curves, osp.join(out_dir, 'curves.png'))}

    if kt_ablation:
        stage('KT ablation')
        rows = {}
        for i, (label, temperature, image_cl, feature_cl) in enumerate(KT_ABLATION):
            if is_main_variant(kt_opt, temperature, image_cl, feature_cl):
                rows[label] = synthetic['KT student']  # the main run
                continue
            opt = kt_options(data_root, teacher_ckpts, kt_iters, patch, batch, temperature, image_cl, feature_cl,
                             name=f'demo_kt_ablation_{i}')
            rows[label] = evaluate({label: load_network(opt, train(opt, out_dir))}, data_root, 'val')[0][label]
        results['kt_ablation'] = rows
    if da_ablation:
        stage('DA ablation')
        rows = {'KT student (no DA)': real['KT student']}
        for i, (label, temperature, image_cl, feature_cl) in enumerate(DA_ABLATION):
            if is_main_variant(da_opt, temperature, image_cl, feature_cl):
                rows[label] = real['DA student']  # the main run
                continue
            opt = da_options(data_root, kt_ckpt, da_iters, patch, batch, temperature, image_cl, feature_cl,
                             name=f'demo_da_ablation_{i}')
            net = load_network(opt, train(opt, out_dir))
            rows[label] = evaluate({label: net}, data_root, 'real', no_reference=True)[0][label]
        results['da_ablation'] = rows

    stage('report')
    names = list(timings)
    results['minutes'] = {n: (timings[names[i + 1]] - timings[n]) / 60 for i, n in enumerate(names[:-1])}
    results['minutes']['total'] = (time.time() - t_start) / 60
    results['settings'] = dict(teacher_iters=teacher_iters, kt_iters=kt_iters, da_iters=da_iters, patch=patch,
                               batch=batch, seed=seed)
    with open(osp.join(out_dir, 'results.json'), 'w', encoding='utf-8') as f:
        json.dump(results, f, indent=2)
    write_report(results, out_dir)
    return results


# ----------------------------------------------------------------------------- report
def _table(columns, kinds, metrics):
    """Markdown table: one row per column (network), one cell per type, mean PSNR last."""
    header = '| | ' + ' | '.join(kinds) + ' | mean PSNR |'
    lines = [header, '|---|' + '---|' * (len(kinds) + 1)]
    for name, by_type in columns.items():
        cells = [' / '.join(f'{by_type[k][m]:.3f}' if m == 'ssim' else f'{by_type[k][m]:.2f}' for m in metrics
                            if m in by_type[k]) for k in kinds]
        mean = np.mean([by_type[k]['psnr'] for k in kinds])
        lines.append(f'| {name} | ' + ' | '.join(cells) + f' | {mean:.2f} |')
    return lines


def _markdown_to_html(lines):
    """The report's small Markdown subset (headings, paragraphs, tables, images) as HTML."""
    out, table = [], []

    def flush_table():
        if table:
            rows = [[html.escape(c.strip()) for c in line.strip('|').split('|')] for line in table
                    if not set(line) <= set('|-')]
            out.append('<table>' + ''.join(
                '<tr>' + ''.join(f'<{"th" if i == 0 else "td"}>{c}</{"th" if i == 0 else "td"}>' for c in row) + '</tr>'
                for i, row in enumerate(rows)) + '</table>')
            table.clear()

    for line in lines:
        if line.startswith('|'):
            table.append(line)
            continue
        flush_table()
        if line.startswith('#'):
            level = len(line) - len(line.lstrip('#'))
            out.append(f'<h{level}>{html.escape(line[level:].strip())}</h{level}>')
        elif line.startswith('!['):
            src = line[line.index('(') + 1:line.rindex(')')]
            out.append(f'<p><img src="{html.escape(src)}" alt="{html.escape(src)}"></p>')
        elif line.strip():
            out.append(f'<p>{html.escape(line)}</p>')
    flush_table()
    style = ('body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}'
             'td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#eee}'
             'img{image-rendering:pixelated;max-width:100%}')
    return f'<!doctype html><meta charset="utf-8"><title>uniremoval demo</title><style>{style}</style>\n' + \
        '\n'.join(out) + '\n'


def write_report(results, out_dir):
    """Write ``report.md`` and ``report.html`` (tables, image grids, loss curves) from the results dict."""
    s, minutes = results['settings'], results['minutes']
    kinds = list(next(iter(results['synthetic'].values())))
    nr = [n for n, _ in NO_REFERENCE if n in next(iter(results['real']['input'].values()))]
    lines = [
        '# uniremoval demo report', '',
        f"Uni-Removal at toy scale on CPU in {minutes['total']:.1f} min: three tiny MPRNet teachers "
        f"({s['teacher_iters']} iterations each), knowledge transfer into one student ({s['kt_iters']} iterations) "
        f"and domain adaptation on the unpaired real split ({s['da_iters']} iterations); {s['patch']}x{s['patch']} "
        f"patches, batch {s['batch']}, seed {s['seed']}.", '',
        'PSNR (dB) / SSIM: RGB, no border crop, BasicSR `calculate_psnr` / `calculate_ssim`. "input" scores the '
        'degraded image itself. These ~100k-parameter networks trained for minutes show the pipeline working '
        "end to end; they are not the paper's numbers.", '',
        '## Synthetic validation split (PSNR / SSIM)', '', *_table(results['synthetic'], kinds, ('psnr', 'ssim')), '',
        '## Real split: different degradation settings, ground truth kept aside for scoring', '',
        'PSNR / SSIM' + ''.join(f' / {n.upper()}' for n in nr) + (' (no-reference, lower is better)' if nr else ''),
        '', *_table(results['real'], kinds, ('psnr', 'ssim', *nr)), '']
    if results.get('kt_ablation'):
        lines += ['## Knowledge-transfer ablation (synthetic val, PSNR / SSIM of the student)', '',
                  f"Equal iterations ({s['kt_iters']}), same seed and data order.", '',
                  *_table(results['kt_ablation'], kinds, ('psnr', 'ssim')), '']
    if results.get('da_ablation'):
        lines += ['## Domain-adaptation ablation (real split)', '',
                  f"Equal iterations ({s['da_iters']}) from the same KT student.", '',
                  *_table(results['da_ablation'], kinds, ('psnr', 'ssim', *nr)), '']
    if results.get('curves'):
        lines += ['## Loss curves', '', '![loss curves](curves.png)', '']
    lines += ['## Restored images', '']
    for kind in kinds:
        lines += [f'### {kind}: synthetic', '', f'![{kind} synthetic](grid_synthetic_{kind}.png)', '',
                  f'### {kind}: real', '', f'![{kind} real](grid_real_{kind}.png)', '']
    lines += ['## Time per stage (minutes)', '', '| stage | minutes |', '|---|---|'] + \
        [f'| {k} | {v:.1f} |' for k, v in minutes.items()] + ['']
    with open(osp.join(out_dir, 'report.md'), 'w', encoding='utf-8') as f:
        f.write('\n'.join(lines))
    with open(osp.join(out_dir, 'report.html'), 'w', encoding='utf-8') as f:
        f.write(_markdown_to_html(lines))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default='results/demo', help='report and experiments folder')
    parser.add_argument('--data', default='datasets/demo', help='demo dataset folder (built if missing)')
    parser.add_argument('--teacher-iters', type=int, default=200)
    parser.add_argument('--kt-iters', type=int, default=200)
    parser.add_argument('--da-iters', type=int, default=150)
    parser.add_argument('--patch', type=int, default=48)
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--kt-ablation', action='store_true', help='also train the KT loss/temperature ablation')
    parser.add_argument('--da-ablation', action='store_true', help='also train the DA loss ablation')
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    run_demo(args.out, args.data, args.teacher_iters, args.kt_iters, args.da_iters, args.patch, args.batch,
             args.seed, args.kt_ablation, args.da_ablation)
    print(f"[demo] report: {osp.join(osp.abspath(args.out), 'report.html')} (and report.md)")
    return 0


if __name__ == '__main__':
    sys.exit(main())
