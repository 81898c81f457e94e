"""``make demo-ads`` / ``python -m uniremoval.demo.ads --out results/demo_ads``: ADS end to end at toy scale on CPU.

Park et al., CVPR 2023 (ADMS/ADS), the four steps of the slides on a Rain-Blur-Noise set built from
photographs bundled with installed packages (:func:`uniremoval.demo.data.build_demo_data` with
``kinds=('rain', 'blur', 'noise')``: rain ``T*(x+S)+(1-T)*A``, blur ``x*k``, noise ``x+N(0, s^2)``,
:mod:`uniremoval.data.degradations`):

1. the unified model (UM): a tiny NAFNet (``uniremoval/demo/configs/ads/um.yml``) trained on the mixture;
2. a target model per degradation fine-tuned from the UM (``finetune_<d>.yml``), then FAIG-SD scores and
   top-q% masks (``select.yml``, :func:`uniremoval.ads.select_workflow.run_select`);
3. the degradation classifier (``classifier.yml``): accuracy per type and confusion matrix;
4. CNN-ADS (``ads.yml``) for every selection method x q in {5, 3, 1} x seed: theta_d starts at
   (theta_target_d - theta_um) on the selected filters and trains with the UM and classifier frozen; scored
   with the classifier in the loop (the slides' table and ordering verdicts) and, as a second table, with
   the true type as c (the masks without classifier errors) (:func:`uniremoval.ads.compare_workflow.run_compare`).

Steps 1-3 run once (seed 0); the seeds vary the ADS training (data order, crops) and the random masks
(Ran, En). FAIG-SD and |theta| masks do not depend on the seed. Writes ``report.md``, ``report.html`` and
``report.json`` into ``--out``, next to ``experiments/``, ``options/`` and ``results/``.

Smoke setting (a test runs it): ``python -m uniremoval.demo.ads --out /tmp/x --iters 2 --seeds 0``.
"""
import argparse
import copy
import json
import os
import sys
import time
from os import path as osp

import torch

import uniremoval  # noqa: F401  (compat shim + registration)
from uniremoval.ads.compare_workflow import check_compare_options, run_compare
from uniremoval.ads.select_workflow import check_select_options, run_select
from uniremoval.commands.common import add_version_argument
from uniremoval.demo.data import build_demo_data
from uniremoval.demo.options import write_option_file
from uniremoval.demo.report import markdown_to_html
from uniremoval.options import load_option_file
from uniremoval.train import train_pipeline
from uniremoval.utils.atomic_io import atomic_open

OPTIONS_DIR = osp.join(osp.dirname(osp.abspath(__file__)), 'configs', 'ads')
KINDS = ('rain', 'blur', 'noise')
DATA_PLACEHOLDER = 'datasets/demo_ads'
DEMO_MINUTES = 15
#: Data of the smoke setting (``--iters``): enough for a batch of 4 per type and 2 validation images per photo.
SMOKE_DATA = {'n_train': 4, 'n_val': 2, 'n_real': 1, 'n_clear': 1}


def _set_roots(node, data_root):
    """Replace the ``datasets/demo_ads`` prefix of every ``dataroot_*`` under ``node`` by ``data_root``."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key.startswith('dataroot_') and isinstance(value, str) and value.startswith(DATA_PLACEHOLDER):
                node[key] = data_root + value[len(DATA_PLACEHOLDER):]
            else:
                _set_roots(value, data_root)
    elif isinstance(node, list):
        for item in node:
            _set_roots(item, data_root)


def demo_option(name, data_root, iters=None, patch=None, batch=None):
    """``uniremoval/demo/configs/ads/<name>.yml`` pointed at ``data_root`` with ``iters`` training iterations."""
    opt = load_option_file(osp.join(OPTIONS_DIR, f'{name}.yml'))
    _set_roots(opt, data_root)
    if iters is not None and 'train' in opt:
        opt['train']['total_iter'] = int(iters)
        if 'periods' in opt['train'].get('scheduler', {}):
            opt['train']['scheduler']['periods'] = [int(iters)]
        opt['logger']['print_freq'] = max(1, int(iters) // 20)
        if opt.get('val'):
            opt['val']['val_freq'] = int(iters)
    train_data = (opt.get('datasets') or {}).get('train')
    if train_data is not None:
        if patch:
            train_data['gt_size'] = int(patch)
        if batch:
            train_data['batch_size_per_gpu'] = int(batch)
    return opt


def train(opt, out_dir):
    """Train through ``basicsr train``'s pipeline under ``out_dir``; returns (latest checkpoint, model)."""
    model = train_pipeline(['-opt', write_option_file(opt, osp.join(out_dir, 'options'))], root_path=out_dir)
    return osp.join(out_dir, 'experiments', opt['name'], 'models', 'net_g_latest.pth'), model


def run_ads_demo(out_dir='results/demo_ads', data_root=None, seeds=(0, 1, 2), um_iters=400, ft_iters=150,
                 cls_iters=500, ads_iters=120, faig_steps=100, faig_images=6, qs=(5, 3, 1), jobs=2, patch=None,
                 batch=None, data_kwargs=None, log=print):
    """Run the whole ADS demo; returns the results dict the report is written from.

    ``data_kwargs``: arguments of :func:`uniremoval.demo.data.build_demo_data` when the data is built
    (e.g. ``n_train``, ``n_val``); ``patch``/``batch`` override the training crops and batch of every stage.
    """
    started = time.time()
    out_dir = osp.abspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    minutes = {}

    def lap(stage, t0):
        minutes[stage] = round((time.time() - t0) / 60, 2)
        log(f'[demo-ads] {stage}: {minutes[stage]:.2f} min')

    t0 = time.time()
    data_root = osp.abspath(data_root or osp.join(out_dir, 'data'))
    if not osp.isdir(data_root):
        build_demo_data(data_root, kinds=KINDS, progress=False, **(data_kwargs or {}))
    lap('data', t0)

    t0 = time.time()
    um_ckpt, _ = train(demo_option('um', data_root, um_iters, patch, batch), out_dir)
    lap('step 1: unified model', t0)

    t0 = time.time()
    targets = {}
    for kind in KINDS:
        opt = demo_option(f'finetune_{kind}', data_root, ft_iters, patch, batch)
        opt['path']['pretrain_network_g'] = um_ckpt
        targets[kind], _ = train(opt, out_dir)
    lap('step 2a: fine-tuned targets', t0)

    t0 = time.time()
    sel = demo_option('select', data_root)
    sel['path'].update(pretrain_network_um=um_ckpt, pretrain_network_targets=dict(targets),
                       output=osp.join(out_dir, 'results', sel['name']))
    sel['select'].update(steps=int(faig_steps), num_images=int(faig_images), q=list(qs))
    select_file = write_option_file(sel, osp.join(out_dir, 'options'))
    check_select_options(copy.deepcopy(sel))
    selection = run_select(copy.deepcopy(sel), 'faig', log=log)
    scores_file = osp.join(sel['path']['output'], 'scores_faig.pth')
    lap('step 2b: FAIG-SD selection', t0)

    t0 = time.time()
    cls_opt = demo_option('classifier', data_root, cls_iters, patch, batch)
    cls_ckpt, cls_model = train(cls_opt, out_dir)
    classifier = getattr(cls_model, 'accuracy_report', None)
    lap('step 3: degradation classifier', t0)

    t0 = time.time()
    ads = demo_option('ads', data_root, ads_iters, patch, batch)
    # theta_d starts at (theta_target_d - theta_um) on its filters, as in options/ads/paper/*/ads.yml
    ads['path'].update(pretrain_network_um=um_ckpt, pretrain_network_classifier=cls_ckpt,
                       pretrain_network_targets=dict(targets))
    ads['network_g']['masks'] = selection[3 if 3 in selection else list(selection)[0]]['mask_file']
    ads_file = write_option_file(ads, osp.join(out_dir, 'options'))
    cmp = load_option_file(osp.join(OPTIONS_DIR, 'compare.yml'))
    cmp.update(select_opt=select_file, ads_opt=ads_file)
    cmp['compare'].update(q=list(qs), seeds=list(seeds), total_iter=int(ads_iters), jobs=int(jobs),
                          scores_files={'faig': scores_file}, oracle=True)
    check_compare_options(cmp)
    table = run_compare(cmp, root=out_dir, log=log)
    lap('step 4: CNN-ADS, every method x q x seed', t0)

    minutes['total'] = round((time.time() - started) / 60, 2)
    results = {
        'settings': {'seeds': list(seeds), 'um_iters': um_iters, 'ft_iters': ft_iters, 'cls_iters': cls_iters,
                     'ads_iters': ads_iters, 'faig_steps': faig_steps, 'faig_images': faig_images, 'q': list(qs),
                     'jobs': jobs, 'data_root': data_root, 'torch_threads': torch.get_num_threads()},
        'checkpoints': {'um': um_ckpt, 'targets': targets, 'classifier': cls_ckpt},
        'classifier': classifier,
        'selection': {str(q): {'overhead': s['overhead'], 'per_layer': s['per_layer']} for q, s in selection.items()},
        'compare': {k: table[k] for k in ('summary', 'um', 'im', 'verdicts', 'oracle_verdicts', 'ordering_holds',
                                          'markdown', 'runs')},
        'minutes': minutes,
    }
    write_ads_report(results, out_dir)
    log(f'[demo-ads] report: {osp.join(out_dir, "report.md")} ({minutes["total"]:.1f} min)')
    return results


def report_lines(results):
    """The Markdown lines of the ADS demo report."""
    s = results['settings']
    lines = ['# ADS (Park et al., CVPR 2023) at demo scale', '',
             f"Rain-Blur-Noise patches from bundled photos; tiny NAFNet UM ({s['um_iters']} iterations), targets "
             f"fine-tuned {s['ft_iters']} iterations per degradation, FAIG-SD over {s['faig_images']} images x "
             f"{s['faig_steps']} steps, classifier {s['cls_iters']} iterations, CNN-ADS {s['ads_iters']} iterations "
             f"per run with seeds {s['seeds']}. These numbers show that every step runs and what it measures at this "
             "scale; they say nothing about the method at the paper's (28.7M/17.1M-parameter backbones trained for "
             'days).', '']
    cls = results.get('classifier')
    if cls:
        lines += ['## Step 3: degradation classifier (validation)', '',
                  f"Accuracy {cls['accuracy']:.3f}; rows true type, columns predicted.", '',
                  '| true \\ predicted | ' + ' | '.join(cls['types']) + ' | accuracy |',
                  '|---|' + '---|' * (len(cls['types']) + 1)]
        for name, row in zip(cls['types'], cls['confusion']):
            acc = cls['per_type'][name]
            acc = '-' if acc is None else f'{acc:.3f}'
            lines.append(f'| {name} | ' + ' | '.join(str(v) for v in row) + f' | {acc} |')
        lines.append('')
    lines += ['## Step 2: FAIG-SD masks (per layer, top q% rounded half up)', '']
    for q, sel in results['selection'].items():
        lines.append(f"q = {float(q):g}%: parameters x{sel['overhead']:.4f} of the UM (three degradations).")
    lines.append('')
    lines += ['## Step 4: the slides\' selection table', ''] + results['compare']['markdown'][2:] + ['']
    lines += ['## Time per stage (minutes)', '', '| stage | minutes |', '|---|---|']
    lines += [f'| {k} | {v:.2f} |' for k, v in results['minutes'].items()]
    total = results['minutes']['total']
    lines += ['', f"Demo time {total:.1f} min ({'within' if total <= DEMO_MINUTES else 'OVER'} the "
              f'{DEMO_MINUTES}-minute goal).']
    return lines


def write_ads_report(results, out_dir):
    """``report.md``, ``report.html`` and ``report.json`` (atomic writes) into ``out_dir``."""
    lines = report_lines(results)
    with atomic_open(osp.join(out_dir, 'report.md'), 'w', encoding='utf-8') as f:
        f.write('\n'.join(lines) + '\n')
    with atomic_open(osp.join(out_dir, 'report.html'), 'w', encoding='utf-8') as f:
        f.write(markdown_to_html(lines))
    with atomic_open(osp.join(out_dir, 'report.json'), 'w', encoding='utf-8') as f:
        json.dump(results, f, indent=1, default=str)
        f.write('\n')


def build_arg_parser():
    parser = argparse.ArgumentParser(prog='python -m uniremoval.demo.ads', description=__doc__.split('\n')[0])
    add_version_argument(parser)
    parser.add_argument('--out', default='results/demo_ads', help='report, experiments and data folder')
    parser.add_argument('--data', default=None,
                        help='Rain-Blur-Noise data folder (default <out>/data; built if missing)')
    parser.add_argument('--q', type=float, nargs='+', default=[5, 3, 1], help='mask sizes (percent per layer)')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--um-iters', type=int, default=400)
    parser.add_argument('--ft-iters', type=int, default=150)
    parser.add_argument('--cls-iters', type=int, default=500)
    parser.add_argument('--ads-iters', type=int, default=120)
    parser.add_argument('--faig-steps', type=int, default=100)
    parser.add_argument('--faig-images', type=int, default=6)
    parser.add_argument('--iters', type=int, default=None,
                        help='smoke setting: every training stage this many iterations, FAIG this many steps and '
                        '2 images, small data (4 train patches per photo and kind, 2 val tiles per photo), batch 4')
    parser.add_argument('--jobs', type=int, default=min(2, os.cpu_count() or 1),
                        help='ADS runs trained at a time (single-threaded processes)')
    return parser


def main(argv=None):
    args = build_arg_parser().parse_args(argv)
    kwargs = dict(um_iters=args.um_iters, ft_iters=args.ft_iters, cls_iters=args.cls_iters, ads_iters=args.ads_iters,
                  faig_steps=args.faig_steps, faig_images=args.faig_images)
    if args.iters is not None:
        kwargs = {k: args.iters for k in ('um_iters', 'ft_iters', 'cls_iters', 'ads_iters', 'faig_steps')}
        kwargs.update(faig_images=2, batch=4, data_kwargs=SMOKE_DATA)
    run_ads_demo(args.out, args.data, seeds=tuple(args.seeds), qs=tuple(args.q), jobs=args.jobs, **kwargs)
    return 0


if __name__ == '__main__':
    sys.exit(main())
