"""The demo pipeline: data, teachers, knowledge transfer, domain adaptation, scoring and report (:func:`run_demo`).

Each training stage runs ``basicsr train``'s pipeline on an option file of
:mod:`uniremoval.demo.options` (:func:`train_stage`); networks are loaded and run through
:mod:`uniremoval.restoration` and scored through :func:`uniremoval.metrics.scoring.score_images` with the
metric options of :data:`uniremoval.demo.options.METRICS` (and ``NO_REFERENCE`` on the real split).
"""
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from os import path as osp

import cv2
import numpy as np
import torch

import uniremoval  # noqa: F401  (compat shim + registration)
from basicsr.metrics import calculate_psnr
from basicsr.utils.registry import METRIC_REGISTRY
from uniremoval.demo.data import KINDS, build_demo_data
from uniremoval.demo.evidence import demo_goals, ordering_holds, summarise_ladder
from uniremoval.demo.options import (DA_FIDELITY, DA_LADDER, KT_FIDELITY, KT_LADDER, KT_SCRATCH_LR, METRICS,
                                     NO_REFERENCE, SCRATCH_LR, da_options, kt_options, set_learning_rate,
                                     teacher_options, write_option_file)
from uniremoval.demo.report import save_curves, save_grid, write_report
from uniremoval.demo.shipped import read_manifest, shipped_checkpoints
from uniremoval.metrics.scoring import score_images
from uniremoval.restoration import load_network, restore_image
from uniremoval.train import train_pipeline
from uniremoval.utils.atomic_io import atomic_open


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
    (:func:`uniremoval.metrics.scoring.score_images` with :func:`demo_metrics`).
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


def color_cast(outputs, gts):
    """Mean colour cast of 8-bit images against their ground truth, in grey levels.

    Per image, the offset of each channel's mean (output minus ground truth); the cast is the spread of
    those offsets (largest minus smallest), so a uniform brightening or darkening is no cast but a
    green or blue tint is. Averaged over the images.
    """
    casts = []
    for out, gt in zip(outputs, gts):
        offset = out.reshape(-1, 3).astype(np.float64).mean(0) - gt.reshape(-1, 3).astype(np.float64).mean(0)
        casts.append(offset.max() - offset.min())
    return float(np.mean(casts))


def identity_drift(networks, data_root):
    """How far each network moves the unpaired real clear images (the identity term's target, Eq. 8).

    Needs no ground truth: the clear images are DA's own training inputs. Per network, the mean absolute
    change in grey levels and the mean change of each channel's mean (B, G, R: negative = darker), over
    ``real/clear``. A student that drifts from the identity darkens or tints everything it restores.
    """
    folder = osp.join(data_root, 'real', 'clear')
    clear = [cv2.imread(osp.join(folder, name)) for name in sorted(os.listdir(folder))]
    drift = {}
    for column, net in networks.items():
        change = [restore_image(net, img).astype(np.float64) - img for img in clear]
        drift[column] = {'mean_abs': float(np.mean([np.abs(c).mean() for c in change])),
                         'channel_shift': np.mean([c.reshape(-1, 3).mean(0) for c in change], 0).tolist()}
    return drift


def teacher_followed(student, teachers, data_root, split='val'):
    """Which teacher the student imitates on each image: its recognition of the degradation type.

    Knowledge transfer (arXiv 2307.05075 Eq. 1) trains one blind student to output, for an image of type
    i, what teacher i outputs, so the student has to tell the types apart from the images alone. Per
    image of each type of ``split``, the teacher whose output is closest to the student's (highest PSNR
    between the two outputs: no ground truth), and how many dB the student's PSNR (against the ground
    truth) is below the own-type teacher's. Teachers that barely change an image give nearly the same
    output on it (the deraining and deblurring teachers on a blurred image), so the gap, not the count,
    says what a wrong choice costs.

    Returns:
        ``{type: {'counts': {teacher: images}, 'below_teacher': {'own': dB, 'other': dB}, 'worst':
        [image, followed teacher, dB]}}``: ``below_teacher`` averages over the images where the student
        follows the own teacher / another one (None if there are none); ``worst`` is the image where the
        student is farthest below its teacher.
    """
    followed = {}
    for kind in KINDS:
        counts, below, per_image = dict.fromkeys(teachers, 0), {'own': [], 'other': []}, []
        for name, lq, gt in read_pairs(data_root, split, kind):
            out = restore_image(student, lq)
            by_teacher = {t: restore_image(net, lq) for t, net in teachers.items()}
            nearest = max(by_teacher, key=lambda t: calculate_psnr(out, by_teacher[t], crop_border=0))
            counts[nearest] += 1
            gap = calculate_psnr(by_teacher[kind], gt, crop_border=0) - calculate_psnr(out, gt, crop_border=0)
            below['own' if nearest == kind else 'other'].append(gap)
            per_image.append([name, nearest, float(gap)])
        followed[kind] = {'counts': counts,
                          'below_teacher': {k: float(np.mean(v)) if v else None for k, v in below.items()},
                          'worst': max(per_image, key=lambda record: record[2])}
    return followed


def seam_ratio(img, reach=(2, 3, 4)):
    """How much MPRNet's patch borders show in one image: 1.0 means not at all (GT-free).

    MPRNet's stage 1 restores the four quarters of the image separately and stage 2 its two halves
    (arXiv 2102.02808 §3.1); a network that has not learned to hide their borders leaves a step along
    the middle row and column. Per axis, the median along the border of the absolute step between the
    two pixel rows (columns) that meet at the middle, divided by the mean of the same medians ``reach``
    further from it; the two axes are averaged. A seam runs the border's whole length, so it raises the
    median; an edge or a rain streak that happens to lie on the middle row or column covers a part of it
    and does not (a mean along the border would read such streaks as a seam: docs/findings.md, "Demo
    teachers and KT student"). A natural image gives about 1; the ground truth's ratio is the reference.
    """
    img = np.asarray(img, dtype=np.float64)
    ratios = []
    for axis in (0, 1):
        steps = np.abs(np.diff(img, axis=axis))
        if steps.ndim == 3:
            steps = steps.mean(axis=2)  # over channels
        steps = np.median(np.moveaxis(steps, axis, 0), axis=1)  # steps[i]: between rows i and i + 1
        border = img.shape[axis] // 2 - 1
        if border - max(reach) < 0 or border + max(reach) >= len(steps):
            raise ValueError(f'seam_ratio needs at least {2 * max(reach) + 2} pixels per side; got {img.shape}')
        around = np.mean([steps[border + d] for r in reach for d in (-r, r)])
        ratios.append(steps[border] / max(around, 1e-6))
    return float(np.mean(ratios))


def add_seam_ratio(scores, outputs):
    """Add ``seam`` (the mean :func:`seam_ratio` of its outputs) to every column's per-type scores; return
    the ground truth's, the reference, per type."""
    def mean_ratio(images):
        return float(np.mean([seam_ratio(img) for img in images]))

    for column, by_type in scores.items():
        for kind in by_type:
            by_type[kind]['seam'] = mean_ratio(outputs[column][kind])
    return {kind: mean_ratio(images) for kind, images in outputs['ground truth'].items()}


def add_color_cast(scores, outputs):
    """Add ``cast`` (:func:`color_cast` against the ground truth) to every column's per-type scores."""
    for column, by_type in scores.items():
        for kind in by_type:
            by_type[kind]['cast'] = color_cast(outputs[column][kind], outputs['ground truth'][kind])


def ladder_run(opt, out_dir, data_root, split):
    """Train one run of an ablation ladder and score it on ``split`` (the real split also gets the
    no-reference scores and the colour cast); returns its per-type scores."""
    net = load_stage_network(opt, train_stage(opt, out_dir))
    real = split == 'real'
    scores, outputs = score_networks({'row': net}, data_root, split, no_reference=real)
    if real:
        add_color_cast(scores, outputs)
    return scores['row']


def _single_threaded_worker():
    torch.set_num_threads(1)


def train_ladder(rows, build, seeds, out_dir, data_root, split, prefix, jobs=1, untrained=None):
    """Train every (label, variant) row of an ablation ladder once per seed; ``{label: [scores per seed]}``.

    ``build(variant, name)`` returns the option dict of a row; a row whose variant is ``None`` is not
    trained and gets ``untrained`` (e.g. the KT student's scores in the DA ladder) for every seed. With
    ``jobs > 1`` the runs go to that many single-threaded worker processes: these small networks are
    bound by per-operator overhead, so two one-thread processes finish sooner than one two-thread process.
    """
    tasks = []
    for i, (label, variant) in enumerate(rows):
        for seed in seeds:
            if variant is not None:
                opt = build(variant, f'{prefix}_{i}_seed{seed}')
                opt['manual_seed'] = seed
                opt['datasets'].pop('val', None)  # scored after training, on the same images
                tasks.append((label, opt))
    if jobs > 1:
        with ProcessPoolExecutor(jobs, mp_context=get_context('spawn'), initializer=_single_threaded_worker) as pool:
            futures = [pool.submit(ladder_run, opt, out_dir, data_root, split) for _, opt in tasks]
            scores = [future.result() for future in futures]
    else:
        scores = [ladder_run(opt, out_dir, data_root, split) for _, opt in tasks]
    results = {label: ([] if variant is not None else [untrained] * len(seeds)) for label, variant in rows}
    for (label, _), row_scores in zip(tasks, scores):
        results[label].append(row_scores)
    return results


FINETUNE_LR_SCALE = 0.1  # a stage that starts from a shipped checkpoint fine-tunes at 1/10 of its learning rate


def start_from(opt, checkpoint, seed, scratch_lr):
    """Seed a stage's options and, given a shipped ``checkpoint``, start from it at a fine-tuning learning rate
    (a tenth of the option file's); without one, train from random weights at ``scratch_lr``."""
    opt['manual_seed'] = seed
    if checkpoint:
        opt['path']['pretrain_network_g'] = checkpoint
        set_learning_rate(opt, opt['train']['optim_g']['lr'] * FINETUNE_LR_SCALE)
    else:
        set_learning_rate(opt, scratch_lr)


def run_demo(out_dir='results/demo', data_root='datasets/demo', teacher_iters=60, kt_iters=150, da_iters=150,
             patch=48, batch=8, seed=0, kt_ablation=False, da_ablation=False, from_scratch=False, seeds=(0, 1, 2),
             kt_ablation_iters=300, da_ablation_iters=60, jobs=2):
    """Run the whole demo; returns the results dict the report is written from.

    Unless ``from_scratch``, the teachers and the KT student start from the checkpoints shipped in
    ``uniremoval/demo/checkpoints`` (:mod:`uniremoval.demo.pretrain`) and fine-tune at a tenth of their
    configured learning rate; each stage still trains in its own run. The ablation ladders train each row
    with every seed of ``seeds``, ``jobs`` runs at a time (:func:`train_ladder`): the KT ladder's students
    ``kt_ablation_iters`` iterations from random weights at :data:`KT_SCRATCH_LR`, the DA ladder's
    ``da_ablation_iters`` from this run's KT student.
    """
    t_start = time.time()
    out_dir, data_root = osp.abspath(out_dir), osp.abspath(data_root)
    os.makedirs(out_dir, exist_ok=True)
    timings, curves = {}, {}
    shipped = {} if from_scratch else shipped_checkpoints()

    def stage(name):
        timings[name] = time.time()
        print(f'[demo] {name}', flush=True)

    stage('data')
    if not osp.isfile(osp.join(data_root, 'manifest.json')):
        build_demo_data(data_root, seed=0)
    stage('teachers')
    teacher_opts = {k: teacher_options(k, data_root, teacher_iters, patch, batch) for k in KINDS}
    for kind, opt in teacher_opts.items():
        start_from(opt, shipped.get(kind), seed, SCRATCH_LR[kind])
    teacher_ckpts = {k: train_stage(opt, out_dir, curves) for k, opt in teacher_opts.items()}
    stage('knowledge transfer')
    kt_opt = kt_options(data_root, teacher_ckpts, kt_iters, patch, batch)
    start_from(kt_opt, shipped.get('kt'), seed, SCRATCH_LR['kt'])
    kt_ckpt = train_stage(kt_opt, out_dir, curves)
    stage('domain adaptation')
    da_opt = da_options(data_root, kt_ckpt, da_iters, patch, batch)
    da_opt['manual_seed'] = seed
    da_ckpt = train_stage(da_opt, out_dir, curves)

    stage('evaluation')
    teachers = {k: load_stage_network(teacher_opts[k], teacher_ckpts[k]) for k in KINDS}
    kt_net, da_net = load_stage_network(kt_opt, kt_ckpt), load_stage_network(da_opt, da_ckpt)
    synthetic, synthetic_out = score_networks(
        {'teacher (own type)': teachers, 'KT student': kt_net, 'DA student': da_net}, data_root, 'val')
    real, real_out = score_networks({'KT student': kt_net, 'DA student': da_net}, data_root, 'real',
                                    no_reference=True)
    add_color_cast(real, real_out)
    seam_reference = {'synthetic': add_seam_ratio(synthetic, synthetic_out), 'real': add_seam_ratio(real, real_out)}
    drift = identity_drift({'KT student': kt_net, 'DA student': da_net}, data_root)
    followed = teacher_followed(kt_net, teachers, data_root)
    for kind in KINDS:
        save_grid(synthetic_out, kind, osp.join(out_dir, f'grid_synthetic_{kind}.png'))
        save_grid(real_out, kind, osp.join(out_dir, f'grid_real_{kind}.png'))
    results = {'synthetic': synthetic, 'real': real, 'identity_on_clear': drift, 'seam_ground_truth': seam_reference,
               'kt_teacher_followed': followed,
               'curves': save_curves(curves, osp.join(out_dir, 'curves.png'))}
    results['shipped_checkpoints'] = {k: osp.basename(v) for k, v in shipped.items()}
    results['pretraining'] = read_manifest() if shipped else {}
    main_minutes = (time.time() - t_start) / 60

    if kt_ablation:
        stage('KT ablation')

        def build_kt(variant, name):  # Table IV trains the student from scratch: no shipped checkpoint
            opt = kt_options(data_root, teacher_ckpts, kt_ablation_iters, patch, batch, variant, name)
            set_learning_rate(opt, KT_SCRATCH_LR)
            return opt

        results['kt_ladder'] = train_ladder(KT_LADDER + KT_FIDELITY, build_kt, seeds, out_dir, data_root, 'val',
                                            'demo_kt_abl', jobs)
    if da_ablation:
        stage('DA ablation')

        def build_da(variant, name):
            return da_options(data_root, kt_ckpt, da_ablation_iters, patch, batch, variant, name)

        results['da_ladder'] = train_ladder(DA_LADDER + DA_FIDELITY, build_da, seeds, out_dir, data_root, 'real',
                                            'demo_da_abl', jobs, untrained=real['KT student'])

    stage('report')
    names = list(timings)
    results['minutes'] = {n: (timings[names[i + 1]] - timings[n]) / 60 for i, n in enumerate(names[:-1])}
    results['minutes']['total'] = (time.time() - t_start) / 60
    results['minutes']['main pipeline'] = main_minutes
    results['settings'] = dict(teacher_iters=teacher_iters, kt_iters=kt_iters, da_iters=da_iters, patch=patch,
                               batch=batch, seed=seed, seeds=list(seeds), kt_ablation_iters=kt_ablation_iters,
                               kt_ablation_lr=KT_SCRATCH_LR, da_ablation_iters=da_ablation_iters,
                               from_scratch=from_scratch, jobs=jobs, network=dict(kt_opt['network_g']),
                               learning_rates={**{k: opt['train']['optim_g']['lr'] for k, opt in teacher_opts.items()},
                                               'kt': kt_opt['train']['optim_g']['lr'],
                                               'da': da_opt['train']['optim_g']['lr']})
    for name, n_ladder in (('kt_ladder', len(KT_LADDER)), ('da_ladder', len(DA_LADDER))):
        if name in results:
            results[name + '_rows'] = n_ladder  # the paper's rows; the ones after them are alternatives
            results[name + '_summary'] = summarise_ladder(results[name], n_ladder)
            results[name + '_ordering_holds'] = ordering_holds(results[name + '_summary'], n_ladder)
    results['goals'] = demo_goals(results)
    with atomic_open(osp.join(out_dir, 'results.json'), 'w', encoding='utf-8') as f:
        json.dump(results, f, indent=2)
    write_report(results, out_dir)
    return results
