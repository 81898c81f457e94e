"""Cost of one knowledge-transfer step vs one plain supervised student step (Uni-Removal §III-B).

Both steps run on the same batch and the same student in one process, interleaved, so the printed
time ratio does not depend on how fast or busy the machine is. Peak memory: on CUDA
``torch.cuda.max_memory_allocated`` per step kind; on CPU, in a fresh child process per step kind
that builds the same model and runs only that kind of step, the kernel's resident-memory high-water
mark (``VmHWM``, reset through ``/proc/self/clear_refs`` once the model and batch are built) over the
first steps, minus the resident memory just before them. The first step is included on purpose: the
allocator keeps what a step freed, so later steps reuse it and a rise measured after a warm-up step
reads zero. What it counts is the step's working set: activations, gradients, optimiser state.

Losses and weights as in ``uniremoval/demo/configs/kt_tiny.yml`` (untrained VGG; relu1_1-relu3_1 unless --paper).

    python bench/bench_kt_step.py                    # tiny MPRNet, CPU-friendly (6x3x32x32)
    python bench/bench_kt_step.py --batch 8 --patch 48   # the demo's KT batch (make bench)
    python bench/bench_kt_step.py --paper --patch 256 --batch 16 --device cuda   # paper's size

The KT and plain steps run interleaved (``bench_util.interleaved``) with the KT step on the
image-grained loss's reference path (every image through VGG in one call with autograd, as before
the fast path) and three of the KT step's parts timed alone beside them (teachers' forward,
image-grained loss forward+backward, student forward+backward), so the printout says where the
extra time goes. The result is written to
``bench/results/kt_step_<tiny|paper>_<device>.json``.
"""
import argparse
import gc
import os
import statistics
import subprocess
import sys
import tempfile
from os import path as osp

import torch

import uniremoval  # noqa: F401
from basicsr.archs import build_network
from basicsr.models import build_model
from uniremoval.models.uniremoval_model import batch_as_set
from uniremoval.options import parse_options

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import bench_util  # noqa: E402

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
PAPER_NET = dict(type='MPRNet', n_feat=40, scale_unetfeats=20, scale_orsnetfeats=16, num_cab=8)


def build_kt_model(args, workdir):
    opt, _ = parse_options(['-opt', osp.join(REPO, 'uniremoval', 'demo', 'configs', 'kt_tiny.yml')], root_path=workdir,
                           check_paths=False)
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


def part_fns(model, batch):
    """The KT step's parts, each alone: teachers' forward, image-grained loss (VGG), student fwd+bwd."""
    model.feed_data(batch)

    def teachers():
        model.teacher_targets(model.lq, model.labels)

    def image_cl():
        out = batch['gt'].clone().requires_grad_(True)  # stands in for the student's output
        model.cri_image_cl(out, batch['gt'], batch_as_set(model.lq)).backward()

    def student():
        stages, _ = model.restore_stages_with_feats(model.net_g, model.lq)
        stages[0].mean().backward()
        model.optimizer_g.zero_grad()

    return {'part_teachers_fwd': teachers, 'part_image_cl_fwd_bwd': image_cl, 'part_student_fwd_bwd': student}


def one_vgg_call(loss):
    """The image-grained loss's VGG features as before the split: every image in ONE call with autograd."""

    def features(parts):
        sizes = [x.shape[0] for x in parts]
        out = loss.vgg(torch.cat(parts, dim=0))
        split = {name: torch.split(f, sizes, dim=0) for name, f in out.items()}
        return [{name: chunks[i] for name, chunks in split.items()} for i in range(len(parts))]

    return features


def reference_kt_step(model, batch, it):
    """The KT step with the image-grained loss's reference path (one VGG call on all images)."""
    fast = model.cri_image_cl._vgg_features
    model.cri_image_cl._vgg_features = one_vgg_call(model.cri_image_cl)
    try:
        kt_step(model, batch, it)
    finally:
        model.cri_image_cl._vgg_features = fast


STEPS = {'kt': kt_step, 'plain': plain_step, 'kt_reference_one_vgg_call': reference_kt_step}


PAGE_MIB = os.sysconf('SC_PAGE_SIZE') / 2**20


def rss_mib():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * PAGE_MIB


def high_water_mib():
    """The kernel's peak resident memory of this process (``VmHWM``), in MiB."""
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) / 1024
    raise RuntimeError('no VmHWM in /proc/self/status')


def reset_high_water():
    """Reset ``VmHWM`` to the current resident memory (Linux 4.0+); raise if the kernel refuses."""
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')
    if high_water_mib() > rss_mib() + 1:
        raise RuntimeError('could not reset the resident-memory high-water mark (/proc/self/clear_refs)')


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
    parser.add_argument('--quick', action='store_true', help='3 repeats; the result is marked provisional')
    parser.add_argument('--no-write', action='store_true', help='print only, write no bench/results/*.json')
    parser.add_argument('--only', choices=sorted(STEPS), help=argparse.SUPPRESS)  # child mode for CPU memory
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats = min(args.repeats, 3)
    info = bench_util.machine_info()
    with tempfile.TemporaryDirectory() as workdir:
        model = build_kt_model(args, workdir)
        batch = make_batch(args, args.device)
        if args.only:
            gc.collect()
            reset_high_water()
            before = rss_mib()
            for it in range(1, 4):
                STEPS[args.only](model, batch, it)
            rise = high_water_mib() - before
            if rise < 1:
                raise RuntimeError(f'{args.only} steps raised the peak resident memory by {rise:.2f} MiB only: '
                                   'the measurement is broken')
            print(rise)
            return 0
        peaks = {}

        def step(kind):
            def run():
                if args.device == 'cuda':
                    torch.cuda.reset_peak_memory_stats()
                STEPS[kind](model, batch, 2)
                if args.device == 'cuda':
                    peaks[kind] = max(peaks.get(kind, 0), torch.cuda.max_memory_allocated() / 2**20)

            return run

        fns = {kind: step(kind) for kind in STEPS}
        fns.update(part_fns(model, batch))
        times = bench_util.interleaved(fns, args.repeats, warmup=1, device=args.device)
    if args.device == 'cpu':
        peaks = {kind: child_step_peak_mib(args, kind) for kind in STEPS}
    kt, plain = statistics.median(times['kt']), statistics.median(times['plain'])
    size = 'paper-size (40/20/16)' if args.paper else 'tiny (8/4/4)'
    print(f'KT step vs plain student step, {size} MPRNet, batch {args.batch}x3x{args.patch}x{args.patch}, '
          f'{args.device}, median of {args.repeats}')
    print(f'  time   KT {kt * 1e3:8.1f} ms   plain {plain * 1e3:8.1f} ms   ratio {kt / plain:5.2f}x')
    mem = 'peak allocated (CUDA)' if args.device == 'cuda' else 'peak RSS rise during the steps (CPU)'
    print(f"  memory KT {peaks['kt']:8.1f} MiB  plain {peaks['plain']:8.1f} MiB  ratio "
          f"{peaks['kt'] / peaks['plain']:5.2f}x   ({mem}); reference image-loss path "
          f"{peaks['kt_reference_one_vgg_call'] / peaks['plain']:5.2f}x")
    ref = statistics.median(times['kt_reference_one_vgg_call'])
    print(f'  KT step with the reference image-loss path (one VGG call with autograd on all images): '
          f'{ref / plain:5.2f}x plain; the split VGG calls save {100 * (1 - kt / ref):.0f}% of the KT step')
    parts = {name: statistics.median(t) / plain for name, t in times.items() if name.startswith('part_')}
    print('  parts, each alone (x plain step): ' + ', '.join(f'{k[5:]} {v:.2f}' for k, v in parts.items()))
    if not args.no_write:
        name = f"kt_step_{'paper' if args.paper else 'tiny'}_{args.device}"
        path = bench_util.write_result(
            name, {
                'what': 'KT step (Uni-Removal III-B) vs plain supervised student step, same batch, interleaved',
                'settings': {'net': size, 'batch': [args.batch, 3, args.patch, args.patch], 'device': args.device,
                             'repeats': args.repeats},
                'time_ratio_kt_over_plain': kt / plain,
                'time_ratio_kt_reference_one_vgg_call_over_plain': ref / plain,
                'memory_ratio_kt_over_plain': peaks['kt'] / peaks['plain'],
                'memory_ratio_kt_reference_one_vgg_call_over_plain':
                peaks['kt_reference_one_vgg_call'] / peaks['plain'],
                'memory_mib': peaks, 'memory_kind': mem,
                'time_s': {k: bench_util.summarize(v) for k, v in times.items()},
                'part_ratios_over_plain': parts,
                'target': 'time ratio <= 1.5 (issue [10] item 4)'
            },
            quick=args.quick, info=info)
        print(f'  written to {path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
