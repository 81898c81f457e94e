"""Cost of one knowledge-transfer step vs one plain supervised student step (Uni-Removal §III-B).

Both steps run on the same batch and the same student in one process, interleaved, so the printed
time ratio does not depend on how fast or busy the machine is. Peak memory: on CUDA
``torch.cuda.max_memory_allocated`` per step kind; on CPU, in a fresh child process per step kind
that builds the same model and runs only that kind of step, the highest resident memory sampled
(every 0.2 ms from a thread) while the steps run, minus the resident memory just before them.

Losses and weights as in ``options/demo/kt_tiny.yml`` (untrained VGG; relu1_1-relu3_1 unless --paper).

    python bench/bench_kt_step.py                    # tiny MPRNet, CPU-friendly
    python bench/bench_kt_step.py --paper --patch 256 --batch 16 --device cuda   # paper's size
"""
import argparse
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from os import path as osp

import torch

import uniremoval  # noqa: F401
from basicsr.archs import build_network
from basicsr.models import build_model
from uniremoval.options import parse_options

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
PAPER_NET = dict(type='MPRNet', n_feat=40, scale_unetfeats=20, scale_orsnetfeats=16, num_cab=8)


def build_kt_model(args, workdir):
    opt, _ = parse_options(['-opt', osp.join(REPO, 'options', 'demo', 'kt_tiny.yml')], root_path=workdir)
    if args.paper:  # paper-size student/teachers, and the image-grained loss's default VGG layers
        opt['network_g'] = dict(PAPER_NET)
        opt['train']['image_cl_opt'].pop('layer_weights', None)
    opt['num_gpu'] = 1 if args.device == 'cuda' else 0
    opt['train']['iters_per_epoch'] = 100
    for i, teacher in enumerate(opt['teachers']):
        teacher['pretrain_path'] = osp.join(workdir, f'teacher_{i}.pth')
        torch.save({'params': build_network(dict(opt['network_g'])).state_dict()}, teacher['pretrain_path'])
    return build_model(opt)


def make_batch(args, device):
    g = torch.Generator().manual_seed(0)
    shape = (args.batch, 3, args.patch, args.patch)
    return {'lq': torch.rand(shape, generator=g).to(device), 'gt': torch.rand(shape, generator=g).to(device),
            'label': (torch.arange(args.batch) % 3).to(device)}


def kt_step(model, batch, it):
    model.feed_data(batch)
    model.optimize_parameters(it)


def plain_step(model, batch, it):
    """Supervised student step: L1(student, gt), same network and optimizer."""
    model.optimizer_g.zero_grad()
    out = model.net_g(batch['lq'])[0]
    torch.nn.functional.l1_loss(out, batch['gt']).backward()
    model.optimizer_g.step()


STEPS = {'kt': kt_step, 'plain': plain_step}


def timed(fn, model, batch, it, device):
    if device == 'cuda':
        torch.cuda.synchronize()
    t = time.perf_counter()
    fn(model, batch, it)
    if device == 'cuda':
        torch.cuda.synchronize()
    return time.perf_counter() - t


PAGE_MIB = os.sysconf('SC_PAGE_SIZE') / 2**20


def rss_mib():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * PAGE_MIB


class RssSampler(threading.Thread):
    """Samples this process's resident memory until stopped; ``peak`` is the highest value seen."""

    def __init__(self, interval=2e-4):
        super().__init__(daemon=True)
        self.interval, self.peak, self._stop_event = interval, rss_mib(), threading.Event()

    def run(self):
        while not self._stop_event.is_set():
            self.peak = max(self.peak, rss_mib())
            time.sleep(self.interval)

    def stop(self):
        self._stop_event.set()
        self.join()
        return self.peak


def child_step_peak_mib(args, kind):
    """Rise of peak RSS (MiB) caused by ``kind`` steps, measured in a fresh child process."""
    cmd = [sys.executable, __file__, '--only', kind, '--patch', str(args.patch), '--batch', str(args.batch),
           '--device', 'cpu'] + (['--paper'] if args.paper else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return float(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--patch', type=int, default=32)
    parser.add_argument('--batch', type=int, default=6)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--paper', action='store_true', help="paper-size MPRNet (40/20/16) instead of the tiny one")
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--only', choices=sorted(STEPS), help=argparse.SUPPRESS)  # child mode for CPU memory
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as workdir:
        model = build_kt_model(args, workdir)
        batch = make_batch(args, args.device)
        if args.only:
            STEPS[args.only](model, batch, 1)  # warm-up: lazy allocations, optimizer state
            gc.collect()
            before = rss_mib()
            sampler = RssSampler()
            sampler.start()
            for it in range(2, 4):
                STEPS[args.only](model, batch, it)
            print(sampler.stop() - before)
            return 0
        for kind in ('kt', 'plain'):  # warm-up
            STEPS[kind](model, batch, 1)
        times = {'kt': [], 'plain': []}
        peaks = {}
        for it in range(2, 2 + args.repeats):
            for kind in ('kt', 'plain'):
                if args.device == 'cuda':
                    torch.cuda.reset_peak_memory_stats()
                times[kind].append(timed(STEPS[kind], model, batch, it, args.device))
                if args.device == 'cuda':
                    peaks[kind] = max(peaks.get(kind, 0), torch.cuda.max_memory_allocated() / 2**20)
    if args.device == 'cpu':
        peaks = {kind: child_step_peak_mib(args, kind) for kind in ('kt', 'plain')}
    kt, plain = statistics.median(times['kt']), statistics.median(times['plain'])
    size = 'paper-size (40/20/16)' if args.paper else 'tiny (8/4/4)'
    print(f'KT step vs plain student step, {size} MPRNet, batch {args.batch}x3x{args.patch}x{args.patch}, '
          f'{args.device}, median of {args.repeats}')
    print(f'  time   KT {kt * 1e3:8.1f} ms   plain {plain * 1e3:8.1f} ms   ratio {kt / plain:5.2f}x')
    mem = 'peak allocated (CUDA)' if args.device == 'cuda' else 'peak RSS rise during the steps (CPU)'
    print(f"  memory KT {peaks['kt']:8.1f} MiB  plain {peaks['plain']:8.1f} MiB  ratio "
          f"{peaks['kt'] / peaks['plain']:5.2f}x   ({mem})")
    return 0


if __name__ == '__main__':
    sys.exit(main())
