"""The demo pipeline: data, teachers, knowledge transfer, domain adaptation, scoring and report (:func:`run_demo`).

Each training stage runs ``basicsr train``'s pipeline on an option file of
:mod:`uniremoval.demo.options` (:func:`train_stage`); networks are loaded and run through
:mod:`uniremoval.restoration` and scored through :func:`uniremoval.evaluate.score_images` with the
metric options of :data:`uniremoval.demo.options.METRICS` (and ``NO_REFERENCE`` on the real split).
"""
import json
import os
import time
from os import path as osp

import cv2

import uniremoval  # noqa: F401  (compat shim + registration)
from basicsr.utils.registry import METRIC_REGISTRY
from uniremoval.demo.data import KINDS, build_demo_data
from uniremoval.demo.options import (DA_ABLATION, KT_ABLATION, METRICS, NO_REFERENCE, da_options, is_main_variant,
                                     kt_options, teacher_options, write_option_file)
from uniremoval.demo.report import save_curves, save_grid, write_report
from uniremoval.evaluate import score_images
from uniremoval.restoration import load_network, restore_image
from uniremoval.train import train_pipeline


def train_stage(opt, out_dir, curves=None):
    """Run ``basicsr train``'s pipeline on ``opt``; return the latest generator checkpoint path.

    The logged losses of the run are appended to ``curves[opt['name']]`` when ``curves`` is given.
    """
    history = [] if curves is None else curves.setdefault(opt['name'], [])
    train_pipeline(['-opt', write_option_file(opt, osp.join(out_dir, 'options'))], root_path=out_dir,
                   on_log=history.append)
    return osp.join(out_dir, 'experiments', opt['name'], 'models', 'net_g_latest.pth')


def load_stage_network(opt, checkpoint):
    """The ``network_g`` of ``opt`` with the ``params`` of ``checkpoint``, strict, in eval mode."""
    return load_network(checkpoint, opt['network_g'], param_key='params')


def read_pairs(data_root, split, kind):
    """(name, lq, gt) uint8 BGR images of one split/type of the demo data."""
    folder = osp.join(data_root, split, kind)
    names = sorted(os.listdir(osp.join(folder, 'gt')))
    return [(n, cv2.imread(osp.join(folder, 'lq', n)), cv2.imread(osp.join(folder, 'gt', n))) for n in names]


def demo_metrics(no_reference=False):
    """The metric options the demo scores with: PSNR/SSIM and, if asked, the registered no-reference metrics."""
    metrics = dict(METRICS)
    if no_reference:
        metrics.update({name: opt for name, opt in NO_REFERENCE.items() if opt['type'] in METRIC_REGISTRY})
    return metrics


def score_networks(networks, data_root, split, no_reference=False):
    """Scores and outputs of each network on each type: ({column: {type: scores}}, {column: {type: imgs}}).

    ``networks`` maps a column name to a network or to ``{type: network}`` (teachers); the degraded
    input itself is always the first column. Scores are means over the split's images
    (:func:`uniremoval.evaluate.score_images` with :func:`demo_metrics`).
    """
    metrics = demo_metrics(no_reference)
    scores, outputs = {'input': {}}, {'input': {}}
    for kind in KINDS:
        pairs = read_pairs(data_root, split, kind)
        gts = [gt for _, _, gt in pairs]
        outputs['input'][kind] = [lq for _, lq, _ in pairs]
        scores['input'][kind] = score_images(outputs['input'][kind], metrics, gts)
        for column, net in networks.items():
            net = net[kind] if isinstance(net, dict) else net
            outs = [restore_image(net, lq) for _, lq, _ in pairs]
            outputs.setdefault(column, {})[kind] = outs
            scores.setdefault(column, {})[kind] = score_images(outs, metrics, gts)
        outputs.setdefault('ground truth', {})[kind] = gts
    return scores, outputs


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
    teacher_ckpts = {k: train_stage(opt, out_dir, curves) for k, opt in teacher_opts.items()}
    stage('knowledge transfer')
    kt_opt = kt_options(data_root, teacher_ckpts, kt_iters, patch, batch)
    kt_ckpt = train_stage(kt_opt, out_dir, curves)
    stage('domain adaptation')
    da_opt = da_options(data_root, kt_ckpt, da_iters, patch, batch)
    da_ckpt = train_stage(da_opt, out_dir, curves)

    stage('evaluation')
    teachers = {k: load_stage_network(teacher_opts[k], teacher_ckpts[k]) for k in KINDS}
    kt_net, da_net = load_stage_network(kt_opt, kt_ckpt), load_stage_network(da_opt, da_ckpt)
    synthetic, synthetic_out = score_networks(
        {'teacher (own type)': teachers, 'KT student': kt_net, 'DA student': da_net}, data_root, 'val')
    real, real_out = score_networks({'KT student': kt_net, 'DA student': da_net}, data_root, 'real',
                                    no_reference=True)
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
            net = load_stage_network(opt, train_stage(opt, out_dir))
            rows[label] = score_networks({label: net}, data_root, 'val')[0][label]
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
            net = load_stage_network(opt, train_stage(opt, out_dir))
            rows[label] = score_networks({label: net}, data_root, 'real', no_reference=True)[0][label]
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
