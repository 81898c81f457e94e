"""Tiled against whole-image restoration through the restoration library (issue [10], item 5).

One large image (default 3840x2160, "4K": scikit-image's astronaut resized, with synthetic rain of
:mod:`uniremoval.data.degradations`) is restored by :func:`uniremoval.restoration.restore_image` with a
TRAINED network (the demo's shipped rain teacher, an MPRNet; ``--checkpoint``/``--opt`` for another)
untiled and tiled (``--tile``, ``--tile-overlap``, each ``--tile-batch``). Every configuration runs in
a fresh child process, so its peak resident memory (``ru_maxrss``) is its own; the memory before the
restoration (imports, network, input image) is reported beside it. The children run one after the
other and each times only its own restoration, so the throughput ratio tiled/untiled compares runs
made minutes apart: on a busy machine repeat it (``--repeat``; the medians are used).

Written to ``bench/results/tiling_<W>x<H>.json`` (one file per size, so a quick run never replaces the
4K figures): per configuration peak and baseline memory (MiB), seconds,
megapixels per second, and against the untiled output the largest and mean absolute difference (grey
levels, 0-255, worst channel) and the PSNR of both against the clean image. Why tiled differs from
untiled with MPRNet (its input split into halves and quarters): see ``tests/test_tiling_parity.py``.

    OMP_NUM_THREADS=1 python bench/bench_tiling.py                     # 4K, about 5 minutes per repeat
    OMP_NUM_THREADS=1 python bench/bench_tiling.py --size 1000x1000   # quick
    python bench/bench_tiling.py --untiled-max 2000x2000   # untiled only up to this size: larger
                                                           # images report the untiled run as skipped
"""
import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from os import path as osp

import numpy as np

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
RESULTS_DIR = osp.join(REPO, 'bench', 'results')


def _size(text):
    width, height = (int(v) for v in text.lower().split('x'))
    return width, height


def make_image(width, height):
    """(degraded, clean) float32 RGB in [0, 1] of the given size, from a real photograph."""
    import cv2

    from uniremoval.data.degradations import degrade
    from uniremoval.demo.data import load_photos
    photo = load_photos(['astronaut'])[0]['astronaut'][..., ::-1]
    clean = np.clip(cv2.resize(photo, (width, height), interpolation=cv2.INTER_CUBIC).astype(np.float32) / 255, 0, 1)
    return np.clip(degrade(clean, 'rain', 0), 0, 1).astype(np.float32), clean


def child(args):
    """Restore the image once with one configuration; print a JSON line, save the output."""
    import torch

    import uniremoval  # noqa: F401
    from uniremoval.options import load_option_file
    from uniremoval.restoration import load_network, restore_image
    torch.set_num_threads(args.threads)
    network_opt = load_option_file(args.opt)['network_g']
    net = load_network(args.checkpoint, network_opt)
    lq = np.load(args.input)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    out = restore_image(net, lq, tile=args.tile, overlap=args.tile_overlap, batch=args.tile_batch[0], bgr=False)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    np.save(args.output, out)
    print(json.dumps({'seconds': seconds, 'peak_mib': peak, 'baseline_mib': baseline}))


def run_child(args, workdir, tile, overlap, batch, tag):
    out = osp.join(workdir, f'{tag}.npy')
    cmd = [sys.executable, osp.abspath(__file__), '--child', '--input', osp.join(workdir, 'lq.npy'), '--output', out,
           '--checkpoint', args.checkpoint, '--opt', args.opt, '--tile', str(tile), '--tile-overlap', str(overlap),
           '--tile-batch', str(batch), '--threads', str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f'{tag} failed: {proc.stderr[-2000:]}')
    return json.loads(proc.stdout.strip().splitlines()[-1]), out


def psnr(a, b):
    return float(-10 * np.log10(np.mean((np.clip(a, 0, 1) - b)**2)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--size', type=_size, default=(3840, 2160), help='WIDTHxHEIGHT (default 3840x2160)')
    parser.add_argument('--untiled-max', type=_size, help='skip the untiled run above this many pixels')
    parser.add_argument('--tile', type=int, default=512)
    parser.add_argument('--tile-overlap', type=int, default=32)
    parser.add_argument('--tile-batch', type=int, nargs='+', default=[1], help='tile batches to run (default 1)')
    parser.add_argument('--repeat', type=int, default=1, help='runs per configuration (medians reported)')
    parser.add_argument('--threads', type=int, default=int(os.environ.get('OMP_NUM_THREADS', 1)))
    parser.add_argument('--checkpoint', help='default: the shipped demo rain teacher')
    parser.add_argument('--opt', help="option file with the checkpoint's network_g")
    parser.add_argument('--results', help='result file (default bench/results/tiling_<W>x<H>.json)')
    # child mode
    parser.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--input', help=argparse.SUPPRESS)
    parser.add_argument('--output', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    from uniremoval.demo.shipped import CHECKPOINT_DIR, checkpoint_file
    from uniremoval.utils.atomic_io import atomic_open
    args.checkpoint = args.checkpoint or checkpoint_file('rain')
    args.opt = args.opt or osp.join(CHECKPOINT_DIR, 'pretrain_teacher_rain.yml')
    width, height = args.size
    args.results = args.results or osp.join(RESULTS_DIR, f'tiling_{width}x{height}.json')
    lq, clean = make_image(width, height)
    tiled = [(f'tile{args.tile}_batch{b}', args.tile, args.tile_overlap, b) for b in args.tile_batch]
    configs = [('untiled', 0, 0, 1)] + tiled
    if args.untiled_max and width * height > args.untiled_max[0] * args.untiled_max[1]:
        configs = configs[1:]
    rows = {}
    with tempfile.TemporaryDirectory() as workdir:
        np.save(osp.join(workdir, 'lq.npy'), lq)
        outputs = {}
        for repeat in range(args.repeat):
            for tag, tile, overlap, batch in configs:
                stats, outputs[tag] = run_child(args, workdir, tile, overlap, batch, tag)
                rows.setdefault(tag, []).append(stats)
                print(f'{tag} run {repeat + 1}: {stats["seconds"]:.1f} s, peak {stats["peak_mib"]:.0f} MiB '
                      f'(before restoring {stats["baseline_mib"]:.0f} MiB)', flush=True)
        images = {tag: np.load(path).astype(np.float32) for tag, path in outputs.items()}
    results = []
    for tag, tile, overlap, batch in configs:
        seconds = statistics.median(r['seconds'] for r in rows[tag])
        row = {'config': tag, 'tile': tile, 'overlap': overlap, 'tile_batch': batch, 'seconds': round(seconds, 2),
               'megapixels_per_s': round(width * height / 1e6 / seconds, 4),
               'peak_mib': round(statistics.median(r['peak_mib'] for r in rows[tag]), 1),
               'baseline_mib': round(statistics.median(r['baseline_mib'] for r in rows[tag]), 1),
               'psnr_vs_clean_db': round(psnr(images[tag], clean), 3)}
        if 'untiled' in images and tag != 'untiled':
            diff = np.abs(images[tag] - images['untiled']).max(axis=2) * 255
            untiled = results[0]
            row.update(max_diff_grey=round(float(diff.max()), 2), mean_diff_grey=round(float(diff.mean()), 4),
                       throughput_ratio_tiled_over_untiled=round(untiled['seconds'] / seconds, 3),
                       peak_ratio_tiled_over_untiled=round(row['peak_mib'] / untiled['peak_mib'], 3))
        results.append(row)
    report = {'size': f'{width}x{height}', 'network': osp.relpath(args.opt, REPO),
              'checkpoint': osp.relpath(args.checkpoint, REPO),
              'threads': args.threads, 'repeat': args.repeat, 'machine': platform.processor() or platform.machine(),
              'psnr_input_db': round(psnr(lq, clean), 3), 'results': results}
    os.makedirs(osp.dirname(args.results), exist_ok=True)
    with atomic_open(args.results, 'w', encoding='utf-8') as f:
        json.dump(report, f, indent=2)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
