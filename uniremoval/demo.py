"""``make demo`` / ``python -m uniremoval.demo``: Uni-Removal's pipeline at toy scale on CPU.

1. builds the embedded haze/rain/blur dataset (:mod:`uniremoval.data.demo_data`, photos that ship
   with scikit-image, scikit-learn and matplotlib; nothing is downloaded);
2. trains one tiny MPRNet teacher per degradation type with ``basicsr train``'s pipeline
   (``options/demo/train_teacher_tiny.yml``);
3. distils the three teachers into one student with the knowledge-transfer stage
   (``options/demo/kt_tiny.yml``, §III-B of arXiv 2307.05075);
4. evaluates every stage on the validation split (PSNR/SSIM per type: the degraded input, each
   teacher on its own type, the KT student), saves input/output/ground-truth grids and writes
   ``<out>/report.md``.

The numbers show the pipeline working end to end on ~100k-parameter networks trained for minutes;
they are not the paper's (see the README).
"""
import argparse
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
from basicsr.archs import build_network
from basicsr.metrics import calculate_psnr, calculate_ssim
from basicsr.utils import img2tensor, tensor2img
from uniremoval.data.demo_data import KINDS, build_demo_data
from uniremoval.options import load_option_file
from uniremoval.train import train_pipeline
from uniremoval.utils.checkpoint import load_state_dict_file

OPTIONS_DIR = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'options', 'demo')


def _write_options(opt, folder):
    os.makedirs(folder, exist_ok=True)
    path = osp.join(folder, f"{opt['name']}.yml")
    with open(path, 'w', encoding='utf-8') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    return path


def _set_schedule(opt, iters, patch, batch):
    opt['datasets']['train'].update(gt_size=patch, batch_size_per_gpu=batch)
    opt['train']['total_iter'] = iters
    opt['train']['scheduler']['periods'] = [iters]
    opt['val']['val_freq'] = iters
    opt['logger'].update(save_checkpoint_freq=iters, print_freq=max(1, iters // 10))


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
    """The tiny KT config with demo-data paths and the given teacher checkpoints.

    ``temperature`` overrides both contrastive temperatures; ``image_cl`` / ``feature_cl`` False drop
    those terms (the KT ablation).
    """
    opt = load_option_file(osp.join(OPTIONS_DIR, 'kt_tiny.yml'))
    for phase in ('train', 'val'):
        for source in opt['datasets'][phase]['sources']:
            source['dataroot_gt'] = osp.join(data_root, phase, source['name'], 'gt')
            source['dataroot_lq'] = osp.join(data_root, phase, source['name'], 'lq')
    for teacher in opt['teachers']:
        teacher['pretrain_path'] = teacher_ckpts[teacher['name']]
    if temperature is not None:
        for key in ('image_cl_opt', 'feature_cl_opt'):
            opt['train'][key]['temperature'] = temperature
    for key, keep in (('image_cl_opt', image_cl), ('feature_cl_opt', feature_cl)):
        if not keep:
            del opt['train'][key]
    if name:
        opt['name'] = name
    _set_schedule(opt, iters, patch, batch)
    return opt


# Uni-Removal's KT ablation at demo scale (Table VI of the paper ablates the loss terms): equal
# iterations, same seed and data order; (label, temperature, image CL, feature CL).
KT_ABLATION = (
    ('L1 to teacher only', None, False, False),
    ('+ image CL, t=1e-6', 1e-6, True, False),
    ('+ image + feature CL, t=1e-6 (paper)', 1e-6, True, True),
    ('+ image CL, t=0.1', 0.1, True, False),
    ('+ image + feature CL, t=0.1', 0.1, True, True),
)


def evaluate_network(opt, checkpoint, data_root, split='val'):
    """Per-type (PSNR, SSIM) of the network of ``opt`` loaded from ``checkpoint`` on a demo split."""
    net = load_network(opt, checkpoint)
    scores = {}
    for kind in KINDS:
        pairs = read_pairs(data_root, split, kind)
        scores[kind] = psnr_ssim([(restore(net, lq), gt) for _, lq, gt in pairs])
    return scores


def run_kt_ablation(data_root, teacher_ckpts, out_dir, iters, patch, batch, paper_result=None):
    """Train every KT_ABLATION variant (reusing ``paper_result`` for the paper's setting); returns rows."""
    rows = []
    for i, (label, temperature, image_cl, feature_cl) in enumerate(KT_ABLATION):
        if paper_result is not None and temperature == 1e-6 and image_cl and feature_cl:
            rows.append((label, paper_result))
            continue
        print(f'[demo] KT ablation {i + 1}/{len(KT_ABLATION)}: {label} ({iters} iterations)', flush=True)
        opt = kt_options(data_root, teacher_ckpts, iters, patch, batch, temperature, image_cl, feature_cl,
                         name=f'demo_kt_ablation_{i}')
        train_pipeline(['-opt', _write_options(opt, osp.join(out_dir, 'options'))], root_path=out_dir)
        ckpt = osp.join(out_dir, 'experiments', opt['name'], 'models', 'net_g_latest.pth')
        rows.append((label, evaluate_network(opt, ckpt, data_root)))
    return rows


def load_network(opt, checkpoint):
    net = build_network(dict(opt['network_g']))
    net.load_state_dict(load_state_dict_file(checkpoint), strict=True)
    return net.eval()


def read_pairs(data_root, split, kind):
    """(name, lq, gt) uint8 BGR images of one split/type of the demo data."""
    folder = osp.join(data_root, split, kind)
    names = sorted(os.listdir(osp.join(folder, 'gt')))
    return [(n, cv2.imread(osp.join(folder, 'lq', n)), cv2.imread(osp.join(folder, 'gt', n))) for n in names]


@torch.no_grad()
def restore(net, img):
    """Restore one uint8 BGR image with an MPRNet-style network (final output first)."""
    tensor = img2tensor(img.astype(np.float32) / 255., bgr2rgb=True, float32=True).unsqueeze(0)
    return tensor2img(net(tensor)[0])


def psnr_ssim(pairs_or_outputs):
    """Mean PSNR/SSIM (RGB, crop_border 0, BasicSR's functions) over (output, gt) uint8 pairs."""
    psnr = [calculate_psnr(o, g, crop_border=0) for o, g in pairs_or_outputs]
    ssim = [calculate_ssim(o, g, crop_border=0) for o, g in pairs_or_outputs]
    return float(np.mean(psnr)), float(np.mean(ssim))


def save_grid(rows, path, labels):
    """Save rows of equally sized uint8 BGR images as one PNG, with a label bar on top."""
    h, w = rows[0][0].shape[:2]
    bar = np.full((18, w * len(labels), 3), 255, np.uint8)
    for i, label in enumerate(labels):
        cv2.putText(bar, label, (i * w + 3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    grid = np.concatenate([bar] + [np.concatenate(r, axis=1) for r in rows], axis=0)
    cv2.imwrite(path, grid)


def run_demo(out_dir='results/demo', data_root='datasets/demo', teacher_iters=250, kt_iters=250, patch=48, batch=8,
             n_grid=3, seed=0, kt_ablation=False):
    """Run the whole demo; returns the results dict that the report is written from."""
    t_start = time.time()
    out_dir, data_root = osp.abspath(out_dir), osp.abspath(data_root)
    os.makedirs(out_dir, exist_ok=True)
    if not osp.isfile(osp.join(data_root, 'manifest.json')):
        print(f'[demo] 1/4 building the demo dataset in {data_root}', flush=True)
        build_demo_data(data_root, seed=seed)
    else:
        print(f'[demo] 1/4 reusing the demo dataset in {data_root}', flush=True)
    opt_dir = osp.join(out_dir, 'options')

    teacher_ckpts, teacher_opts = {}, {}
    for i, kind in enumerate(KINDS):
        print(f'[demo] 2/4 training the {kind} teacher ({i + 1}/{len(KINDS)}, {teacher_iters} iterations)', flush=True)
        opt = teacher_options(kind, data_root, teacher_iters, patch, batch)
        train_pipeline(['-opt', _write_options(opt, opt_dir)], root_path=out_dir)
        teacher_ckpts[kind] = osp.join(out_dir, 'experiments', opt['name'], 'models', 'net_g_latest.pth')
        teacher_opts[kind] = opt

    print(f'[demo] 3/4 knowledge transfer into one student ({kt_iters} iterations)', flush=True)
    kt_opt = kt_options(data_root, teacher_ckpts, kt_iters, patch, batch)
    train_pipeline(['-opt', _write_options(kt_opt, opt_dir)], root_path=out_dir)
    student_ckpt = osp.join(out_dir, 'experiments', kt_opt['name'], 'models', 'net_g_latest.pth')

    print('[demo] 4/4 evaluating and writing the report', flush=True)
    student = load_network(kt_opt, student_ckpt)
    results = {'types': {}, 'settings': dict(teacher_iters=teacher_iters, kt_iters=kt_iters, patch=patch,
                                             batch=batch, seed=seed)}
    for kind in KINDS:
        teacher = load_network(teacher_opts[kind], teacher_ckpts[kind])
        pairs = read_pairs(data_root, 'val', kind)
        by_teacher = [restore(teacher, lq) for _, lq, _ in pairs]
        by_student = [restore(student, lq) for _, lq, _ in pairs]
        gts = [gt for _, _, gt in pairs]
        results['types'][kind] = {
            'n': len(pairs),
            'input': psnr_ssim([(lq, gt) for _, lq, gt in pairs]),
            'teacher': psnr_ssim(list(zip(by_teacher, gts))),
            'kt_student': psnr_ssim(list(zip(by_student, gts))),
        }
        grid = [[lq, t, s, gt] for (_, lq, gt), t, s in list(zip(pairs, by_teacher, by_student))[:n_grid]]
        save_grid(grid, osp.join(out_dir, f'grid_{kind}.png'), ['input', 'teacher', 'KT student', 'ground truth'])
    if kt_ablation:
        paper = {k: tuple(v['kt_student']) for k, v in results['types'].items()}
        results['kt_ablation'] = run_kt_ablation(data_root, teacher_ckpts, out_dir, kt_iters, patch, batch, paper)
    results['minutes'] = (time.time() - t_start) / 60
    with open(osp.join(out_dir, 'results.json'), 'w', encoding='utf-8') as f:
        json.dump(results, f, indent=2)
    write_report(results, out_dir)
    return results


def write_report(results, out_dir):
    """Write ``report.md`` (tables and image grids) from the results dict."""
    rows = ['| type | images | input | teacher (own type) | KT student |', '|---|---|---|---|---|']
    for kind, r in results['types'].items():
        cells = [f'{r[k][0]:.2f} / {r[k][1]:.3f}' for k in ('input', 'teacher', 'kt_student')]
        rows.append(f"| {kind} | {r['n']} | " + ' | '.join(cells) + ' |')
    means = [np.mean([r[k][0] for r in results['types'].values()]) for k in ('input', 'teacher', 'kt_student')]
    rows.append('| mean PSNR | | ' + ' | '.join(f'{m:.2f}' for m in means) + ' |')
    s = results['settings']
    text = [
        '# uniremoval demo report', '',
        f"Uni-Removal at toy scale on CPU ({results['minutes']:.1f} min): three tiny MPRNet teachers "
        f"({s['teacher_iters']} iterations each) and their knowledge transfer into one student "
        f"({s['kt_iters']} iterations), {s['patch']}x{s['patch']} patches, batch {s['batch']}.", '',
        '## PSNR (dB) / SSIM on the validation split', '',
        'RGB, no border crop, BasicSR `calculate_psnr` / `calculate_ssim`. "input" is the degraded image itself.', '',
        *rows, '',
        'These ~100k-parameter networks trained for minutes show the pipeline working end to end, not the '
        "paper's numbers.", '',
        '## Restored images', '']
    if results.get('kt_ablation'):
        kinds = list(results['types'])
        abl = ['| KT variant | ' + ' | '.join(kinds) + ' | mean PSNR |', '|---|' + '---|' * (len(kinds) + 1)]
        for label, scores in results['kt_ablation']:
            cells = [f'{scores[k][0]:.2f} / {scores[k][1]:.3f}' for k in kinds]
            abl.append(f'| {label} | ' + ' | '.join(cells) + f" | {np.mean([scores[k][0] for k in kinds]):.2f} |")
        text[-2:-2] = ['## Knowledge-transfer ablation (PSNR / SSIM of the student)', '',
                       f"Equal iterations ({s['kt_iters']}), same seed and data order.", '', *abl, '']
    for kind in results['types']:
        text += [f'### {kind}', '', f'![{kind}](grid_{kind}.png)', '']
    with open(osp.join(out_dir, 'report.md'), 'w', encoding='utf-8') as f:
        f.write('\n'.join(text))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default='results/demo', help='report and experiments folder')
    parser.add_argument('--data', default='datasets/demo', help='demo dataset folder (built if missing)')
    parser.add_argument('--teacher-iters', type=int, default=250)
    parser.add_argument('--kt-iters', type=int, default=250)
    parser.add_argument('--patch', type=int, default=48)
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--kt-ablation', action='store_true',
                        help='also train the KT loss/temperature ablation (4 more KT runs)')
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    run_demo(args.out, args.data, args.teacher_iters, args.kt_iters, args.patch, args.batch, seed=args.seed,
             kt_ablation=args.kt_ablation)
    print(f"[demo] report: {osp.join(osp.abspath(args.out), 'report.md')}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
