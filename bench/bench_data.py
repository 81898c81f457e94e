"""Data pipeline: images per second from LMDB against PNG folders, and whether the loader keeps the model busy.

A small paired set (``--images`` synthetic photos-like images of ``--size`` pixels, PNG) is written
to a temporary folder and packed into BasicSR LMDBs with ``datasets_prep/pack.py pairs`` (the
project's packer, PNG-compressed values as BasicSR's own LMDBs). Then, in one process:

1. **Read speed**: BasicSR's ``PairedImageDataset`` (decode, random 48x48 crop, flips/rotations, to
   tensor; the demo's teacher dataset) reads every pair of the set from the PNG folders
   (``io_backend: disk``) and from the LMDBs (``io_backend: lmdb``), interleaved, several passes:
   pairs per second of each and the ratio LMDB / PNG.
2. **Loader vs model**: the demo's tiny teacher step (``uniremoval/demo/configs/train_teacher_tiny.yml``,
   batch 8, 48x48) trained from a ``DataLoader`` over the PNG folders with 0, 1 and 2 workers:
   the time the loop waits in ``next(loader)`` as a share of the whole iteration. A share near 0
   means the loader keeps the model busy.

    python bench/bench_data.py --quick
    python bench/bench_data.py          # make bench
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from os import path as osp

import cv2
import numpy as np
import torch

import uniremoval  # noqa: F401
from basicsr.data import build_dataset
from basicsr.models import build_model
from uniremoval.options import parse_options

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import bench_util  # noqa: E402

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO_CONFIGS = osp.join(REPO, 'uniremoval', 'demo', 'configs')


def write_images(root, count, size, seed=0):
    """``count`` smooth, textured image pairs (gt, and a hazier lq) as PNG in root/gt and root/lq."""
    rng = np.random.default_rng(seed)
    for sub in ('gt', 'lq'):
        os.makedirs(osp.join(root, sub), exist_ok=True)
    for i in range(count):
        low = rng.uniform(0, 255, size=(size // 16, size // 16, 3)).astype(np.float32)
        gt = cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC) + rng.normal(0, 8, (size, size, 3))
        gt = np.clip(gt, 0, 255)
        lq = np.clip(0.6 * gt + 0.4 * 220, 0, 255)
        cv2.imwrite(osp.join(root, 'gt', f'{i:04d}.png'), gt.astype(np.uint8))
        cv2.imwrite(osp.join(root, 'lq', f'{i:04d}.png'), lq.astype(np.uint8))


def pack_lmdb(root, out):
    cmd = [sys.executable, osp.join(REPO, 'datasets_prep', 'pack.py'), 'pairs', '--lq', osp.join(root, 'lq'), '--gt',
           osp.join(root, 'gt'), '--out', out, '--split', 'train', '--workers', '1', '--no-progress']
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return osp.join(out, 'train_lq.lmdb'), osp.join(out, 'train_gt.lmdb')


def dataset_opt(backend, lq, gt, patch):
    opt = {'name': f'bench_{backend}', 'type': 'PairedImageDataset', 'dataroot_gt': gt, 'dataroot_lq': lq,
           'filename_tmpl': '{}', 'io_backend': {'type': backend}, 'gt_size': patch, 'use_hflip': True,
           'use_rot': True, 'phase': 'train', 'scale': 1}
    return opt


def read_all(dataset):
    def run():
        for i in range(len(dataset)):
            dataset[i]

    return run


def loader_share(model, dataset, workers, batch, iters):
    """Mean share of each iteration spent waiting for the loader, and iterations per second."""
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True,
        persistent_workers=workers > 0, generator=torch.Generator().manual_seed(0))
    it = iter(loader)
    waits, totals = [], []
    for i in range(iters + 1):
        start = time.perf_counter()
        try:
            data = next(it)
        except StopIteration:
            it = iter(loader)
            data = next(it)
        got = time.perf_counter()
        model.feed_data(data)
        model.optimize_parameters(i + 1)
        end = time.perf_counter()
        if i > 0:  # the first batch includes starting the workers
            waits.append(got - start)
            totals.append(end - start)
    del it, loader
    return {'wait_share': sum(waits) / sum(totals), 'iters_per_s': len(totals) / sum(totals),
            'median_wait_s': statistics.median(waits), 'median_iter_s': statistics.median(totals)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--images', type=int, default=48)
    parser.add_argument('--size', type=int, default=256)
    parser.add_argument('--patch', type=int, default=48, help='crop size (the demo: 48)')
    parser.add_argument('--batch', type=int, default=8, help='the demo: 8')
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--iters', type=int, default=12, help='training iterations per worker count')
    parser.add_argument('--workers', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--quick', action='store_true', help='16 images, 2 passes, 4 iterations (provisional)')
    parser.add_argument('--no-write', action='store_true')
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.repeats, args.iters = 16, 2, 4
    info = bench_util.machine_info()
    with tempfile.TemporaryDirectory() as tmp:
        png = osp.join(tmp, 'png')
        write_images(png, args.images, args.size)
        lmdb_lq, lmdb_gt = pack_lmdb(png, osp.join(tmp, 'lmdb'))
        sets = {'png': build_dataset(dataset_opt('disk', osp.join(png, 'lq'), osp.join(png, 'gt'), args.patch)),
                'lmdb': build_dataset(dataset_opt('lmdb', lmdb_lq, lmdb_gt, args.patch))}
        times = bench_util.interleaved({k: read_all(d) for k, d in sets.items()}, args.repeats, warmup=1)
        rate = {k: args.images / statistics.median(v) for k, v in times.items()}
        opt, _ = parse_options(['-opt', osp.join(DEMO_CONFIGS, 'train_teacher_tiny.yml')], root_path=tmp,
                               is_train=True, check_paths=False)
        opt['num_gpu'] = 0
        torch.manual_seed(0)
        model = build_model(opt)
        loaders = {w: loader_share(model, sets['png'], w, args.batch, args.iters) for w in args.workers}
    print(f'{args.images} pairs of {args.size}x{args.size} PNG, {args.patch}x{args.patch} crops, median of '
          f'{args.repeats} passes')
    print(f"  pairs/s  PNG folders {rate['png']:.1f}   LMDB {rate['lmdb']:.1f}   "
          f"LMDB/PNG x{rate['lmdb'] / rate['png']:.2f}")
    for w, r in loaders.items():
        print(f"  num_workers {w}: waiting for data {100 * r['wait_share']:.1f}% of the iteration, "
              f"{r['iters_per_s']:.2f} it/s (tiny teacher, batch {args.batch})")
    if not args.no_write:
        path = bench_util.write_result(
            'data_pipeline', {
                'what': 'PairedImageDataset pairs/s from LMDB vs PNG folders (interleaved); share of each tiny-teacher '
                        'iteration spent waiting for the DataLoader',
                'settings': {'images': args.images, 'size': args.size, 'patch': args.patch, 'batch': args.batch,
                             'repeats': args.repeats, 'iters': args.iters},
                'pairs_per_s': rate, 'ratio_lmdb_over_png': rate['lmdb'] / rate['png'],
                'read_time_s': {k: bench_util.summarize(v) for k, v in times.items()},
                'loader': {f'num_workers_{w}': r for w, r in loaders.items()}
            },
            quick=args.quick, info=info)
        print(f'  written to {path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
