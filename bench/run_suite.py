"""Run the benchmark suite (``make bench``) and print its summary table of ratios.

Each benchmark runs in a fresh process (no memory, thread-pool or allocator state carried from
one to the next) and writes ``bench/results/<name>.json``; this script then reads those files
and prints the markdown table of ``docs/findings.md`` ("Benchmarks") (``--table-only`` prints it from the
existing files without running anything).

    python bench/run_suite.py            # CPU settings, under 10 minutes on 2 quiet cores (make bench)
    python bench/run_suite.py --quick    # development: every benchmark at toy settings (provisional)
    python bench/run_suite.py --full     # paper-size settings on a GPU (inference at 256/512, KT at 16x256x256)
"""
import argparse
import json
import os
import subprocess
import sys
import time
from os import path as osp

HERE = osp.dirname(osp.abspath(__file__))
RESULTS = osp.join(HERE, 'results')

# (script, arguments for the default CPU run, for --quick, for --full)
SUITE = [
    ('bench_inference.py', [], ['--quick'], ['--full']),
    # the demo's KT batch (8x3x48x48), then the paper-size MPRNet on a CPU-sized batch
    ('bench_kt_step.py', ['--batch', '8', '--patch', '48', '--repeats', '7'], ['--quick'],
     ['--paper', '--patch', '256', '--batch', '16']),
    ('bench_kt_step.py', ['--paper', '--patch', '64', '--batch', '3', '--repeats', '3'], None, None),
    ('bench_train_step.py', [], ['--quick'], []),
    ('bench_data.py', [], ['--quick'], []),
    ('bench_nr_metrics.py', [], ['--quick'], None),
    # items 3 and 5 of issue [10], other authors' scripts (run when present; their own JSON layouts)
    ('bench_onnx.py', [], ['--sizes', '64'], ['--full']),
    ('bench_tiling.py', ['--size', '1000x1000'], None, []),
    ('bench_ads.py', [], ['--quick'], ['--full']),  # item 7: CNN-ADS vs its UM vs a naive per-sample merge
]


def run(mode):
    env = dict(os.environ)
    env.setdefault('PYTHONUNBUFFERED', '1')
    timings = []
    for script, default, quick, full in SUITE:
        args = {'default': default, 'quick': quick, 'full': full}[mode]
        if args is None or not osp.exists(osp.join(HERE, script)):
            continue
        cmd = [sys.executable, osp.join(HERE, script)] + args
        print(f"\n=== {' '.join([script] + args)}", flush=True)
        start = time.perf_counter()
        proc = subprocess.run(cmd, env=env)
        timings.append((script, args, time.perf_counter() - start, proc.returncode))
        if proc.returncode != 0:
            print(f'!!! {script} exited with {proc.returncode}', flush=True)
    print('\nwall time per benchmark: ' + ', '.join(f"{s} {' '.join(a)} {t:.0f} s" for s, a, t, _ in timings))
    return 1 if any(rc for *_, rc in timings) else 0


def _load(name):
    path = osp.join(RESULTS, f'{name}.json')
    if not osp.exists(path):
        return None
    with open(path, encoding='utf-8') as f:
        return json.load(f)


def _flag(r):
    return ' (provisional)' if r.get('provisional') else ''


def table():
    """Markdown rows: figure, ratio, what it compares, source file."""
    rows = []
    for mode in ('cpu', 'full', 'quick'):
        r = _load(f'inference_{mode}')
        if not r:
            continue
        for row in r['rows']:
            v = row['variants']
            best = max((k for k in v if 'fraction_of_fp32_peak' in v[k]), key=lambda k: v[k]['fraction_of_fp32_peak'])
            rows.append((f"{row['network']} {row['size']}px eager: conv FLOP/s / 3x3-conv peak",
                         f"{v['eager']['fraction_of_fp32_peak']:.2f}", f'inference_{mode}{_flag(r)}'))
            fast = ('inference_mode', 'channels_last', 'bf16_autocast')
            rows.append((f"{row['network']} {row['size']}px speed-up vs eager: inference_mode / channels_last / bf16",
                         ' / '.join(f"{v[k]['speedup_vs_eager']:.2f}" for k in fast), f'inference_{mode}{_flag(r)}'))
            frac = v[best].get('fraction_of_best_fp32_peak', v[best]['fraction_of_fp32_peak'])
            rows.append((f"{row['network']} {row['size']}px best variant ({best}) / best (NCHW or channels_last) peak",
                         f'{frac:.2f}', f'inference_{mode}{_flag(r)}'))
            if v.get('compile', {}).get('ok'):
                rows.append((f"{row['network']} {row['size']}px torch.compile speed-up vs eager",
                             f"{v['compile']['speedup_vs_eager']:.2f}", f'inference_{mode}{_flag(r)}'))
    for name in ('kt_step_tiny_cpu', 'kt_step_paper_cpu', 'kt_step_paper_cuda', 'kt_step_tiny_cuda'):
        r = _load(name)
        if r:
            b = 'x'.join(map(str, r['settings']['batch']))
            rows.append((f'KT step / plain student step, time ({b})', f"{r['time_ratio_kt_over_plain']:.2f}",
                         name + _flag(r)))
            if 'time_ratio_kt_reference_one_vgg_call_over_plain' in r:
                rows.append((f'KT step, image loss on the reference path (one VGG call) / plain step, time ({b})',
                             f"{r['time_ratio_kt_reference_one_vgg_call_over_plain']:.2f}", name + _flag(r)))
            rows.append((f'KT step / plain student step, peak memory ({b})',
                         f"{r['memory_ratio_kt_over_plain']:.2f}", name + _flag(r)))
            if 'memory_ratio_kt_reference_one_vgg_call_over_plain' in r:
                rows.append((f'KT step, image loss on the reference path / plain step, peak memory ({b})',
                             f"{r['memory_ratio_kt_reference_one_vgg_call_over_plain']:.2f}", name + _flag(r)))
    r = _load('train_step_demo')
    if r:
        for kind, s in r['steps'].items():
            rows.append((f'demo {kind} step: time / teacher step ({s["iters_per_s"]:.2f} it/s)',
                         f"{s['time_ratio_vs_teacher_step']:.2f}", 'train_step_demo' + _flag(r)))
            rows.append((f'demo {kind} step: 2 threads / 1 thread speed-up', f"{s['speedup_2_threads_vs_1']:.2f}",
                         'train_step_demo' + _flag(r)))
        for k, v in r.get('adam_variants', {}).items():
            if k != 'default':
                rows.append((f'Adam {k} / per-tensor Adam step time', f"{v['time_ratio_vs_default']:.2f}",
                             'train_step_demo' + _flag(r)))
        c = r.get('channels_last_fwd_bwd')
        if c:
            rows.append(('tiny MPRNet fwd+bwd channels_last / NCHW time',
                         f"{c['time_ratio_channels_last_vs_nchw']:.2f}", 'train_step_demo' + _flag(r)))
    r = _load('data_pipeline')
    if r:
        rows.append(('pairs/s LMDB / PNG folders (PairedImageDataset)', f"{r['ratio_lmdb_over_png']:.2f}",
                     'data_pipeline' + _flag(r)))
        for k, v in r['loader'].items():
            rows.append((f'share of a demo teacher iteration waiting for data, {k}', f"{v['wait_share']:.2f}",
                         'data_pipeline' + _flag(r)))
    r = _load('nr_metrics')
    if r:
        for k, v in r['time_ratio_vs_niqe_best_of_runs'].items():
            if not k.startswith('niqe'):
                rows.append((f'{k} time / NIQE time', f'{v:.2f}', 'nr_metrics' + _flag(r)))
    r = _load('onnx')
    for row in (r or {}).get('results', []):
        if 'speedup_onnxruntime_over_eager' in row:
            rows.append((f"{row.get('network')} {row.get('size')}px: ONNX Runtime speed-up over PyTorch eager",
                         f"{row['speedup_onnxruntime_over_eager']:.2f}", 'onnx'))
    for name in sorted(n[:-5] for n in os.listdir(RESULTS) if n.startswith('tiling_')):
        r = _load(name)
        for row in r.get('results', []):
            if 'throughput_ratio_tiled_over_untiled' in row:
                rows.append((f"{r['size']} tiled ({row['config']}) / untiled restoration: throughput, peak memory",
                             f"{row['throughput_ratio_tiled_over_untiled']:.2f}, "
                             f"{row['peak_ratio_tiled_over_untiled']:.2f}", name))
    for name in sorted(n[:-5] for n in os.listdir(RESULTS) if n.startswith('ads_overhead_')):
        r = _load(name)
        for row in r['rows']:
            q = row['ratios_over_um']
            rows.append((f"CNN-ADS / UM time, NAFNet width {r['network']['width']} {row['size']}px batch "
                         f"{row['batch']} (q {row['q']}%, params x{row['parameter_overhead']:.3f}): ADS, "
                         f"ADS + classifier, naive merge",
                         f"{q['ads']:.2f}, {q['ads_classifier']:.2f}, {q['naive_merge']:.2f}", name + _flag(r)))
    lines = ['| figure | ratio | results file |', '|---|---|---|']
    lines += [f'| {a} | {b} | `{c}` |' for a, b, c in rows]
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument('--quick', action='store_true')
    mode.add_argument('--full', action='store_true')
    mode.add_argument('--table-only', action='store_true')
    args = parser.parse_args(argv)
    rc = 0
    if not args.table_only:
        rc = run('quick' if args.quick else 'full' if args.full else 'default')
    print('\n' + table())
    return rc


if __name__ == '__main__':
    sys.exit(main())
