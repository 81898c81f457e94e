"""Shared helpers of the benchmark suite: interleaved timing, summaries, machine facts, JSON results.

Every figure of the suite is a ratio of two timings taken side by side in one process: the
callables of one comparison run in turn, round after round (the order rotates every round so that
none always runs right after another), so a machine that is busy or changes its clock speed slows
all of them alike and the ratio of their medians stays meaningful where absolute times do not.

Results go to ``bench/results/<name>.json`` through :func:`uniremoval.utils.atomic_io.atomic_open`
(small, sorted, indented JSON that diffs well). Each file records the machine (CPU, cores, torch
threads, load average before the run) and whether it was ``provisional``: measured on a busy
machine or with the ``--quick`` settings, i.e. not a figure to quote.
"""
import json
import os
import platform
import statistics
import sys
import time
from os import path as osp

import torch

from uniremoval.utils.atomic_io import atomic_open

RESULTS_DIR = osp.join(osp.dirname(osp.abspath(__file__)), 'results')


def synchronize(device):
    """Wait for queued device work (CUDA kernels run asynchronously); a no-op on CPU."""
    if str(device).startswith('cuda'):
        torch.cuda.synchronize()


def time_call(fn, device='cpu'):
    """Seconds taken by ``fn()`` (device work included); returns (seconds, fn's result)."""
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return time.perf_counter() - start, result


def interleaved(fns, repeats, warmup=1, device='cpu'):
    """Time the callables of ``fns`` (name -> callable) side by side.

    Each callable runs ``warmup`` times first (lazy allocations, caches, compilation), then
    ``repeats`` rounds follow; in each round every callable runs once, in an order rotated by
    one each round.

    Returns:
        dict: name -> list of ``repeats`` durations in seconds (in round order).
    """
    if repeats < 1:
        raise ValueError(f'repeats must be >= 1, got {repeats}')
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times = {name: [] for name in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(time_call(fns[name], device)[0])
    return times


def summarize(samples):
    """Median, min, max and relative spread ((max - min) / median) of a list of durations."""
    if not samples:
        raise ValueError('no samples to summarize')
    med = statistics.median(samples)
    return {
        'median_s': med,
        'min_s': min(samples),
        'max_s': max(samples),
        'spread': (max(samples) - min(samples)) / med if med > 0 else 0.0,
        'n': len(samples)
    }


def ratios(times, baseline):
    """Median time of every entry of ``times`` divided by the median time of ``times[baseline]``."""
    if baseline not in times:
        raise KeyError(f'baseline {baseline!r} is not one of the timed entries {sorted(times)}')
    base = statistics.median(times[baseline])
    return {name: statistics.median(t) / base for name, t in times.items()}


def machine_info():
    """Facts that make a result interpretable: CPU, cores, threads, torch, load before the run."""
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            names = [line.split(':', 1)[1].strip() for line in f if line.startswith('model name')]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    info = {
        'cpu': cpu,
        'cpu_count': os.cpu_count(),
        'torch': torch.__version__,
        'torch_threads': torch.get_num_threads(),
        'python': sys.version.split()[0],
    }
    if hasattr(os, 'getloadavg'):
        info['loadavg_1min'] = round(os.getloadavg()[0], 2)
    if torch.cuda.is_available():
        info['cuda_device'] = torch.cuda.get_device_name(0)
    return info


def is_busy(info=None, threshold=0.5):
    """True when the 1-minute load average exceeds ``threshold`` per core (other work competes)."""
    info = info or machine_info()
    load = info.get('loadavg_1min')
    return load is not None and load > threshold * (info.get('cpu_count') or 1)


def write_result(name, payload, quick=False, results_dir=None, info=None):
    """Write ``payload`` (a JSON-able dict) to ``<results_dir>/<name>.json``, atomically.

    Adds ``machine`` (:func:`machine_info`, or ``info`` taken before the run, when the load
    average still reflects the other work only) and ``provisional`` (quick settings or a busy
    machine) plus its reason. Returns the path written.
    """
    info = info or machine_info()
    reasons = []
    if quick:
        reasons.append('quick settings (--quick)')
    if is_busy(info):
        reasons.append(f"busy machine (load {info.get('loadavg_1min')} on {info.get('cpu_count')} cores)")
    record = dict(payload)
    record['machine'] = info
    record['provisional'] = bool(reasons)
    record['provisional_reason'] = '; '.join(reasons)
    record['date_utc'] = time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())
    path = osp.join(results_dir or RESULTS_DIR, f'{name}.json')
    with atomic_open(path, 'w', encoding='utf-8') as f:
        json.dump(_rounded(record), f, indent=1, sort_keys=True)
        f.write('\n')
    return path


def _rounded(obj, digits=4):
    """Floats rounded to ``digits`` significant digits (small, stable diffs)."""
    if isinstance(obj, float):
        return float(f'{obj:.{digits}g}')
    if isinstance(obj, dict):
        return {str(k): _rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_rounded(v, digits) for v in obj]
    return obj
