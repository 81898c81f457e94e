"""Training throughput of the demo's tiny networks: teacher, KT and DA steps, and what limits them.

The demo (``python -m uniremoval.demo``) trains a tiny MPRNet (n_feat 8, 2 CABs, ~107k
parameters) on 48x48 crops, batch 8, with the options of ``uniremoval/demo/configs/*.yml``: a teacher step
(``MPRNetModel``: Charbonnier + edge loss), a knowledge-transfer step (``UniRemovalKTModel``: three
frozen teachers, L1, image- and feature-grained contrastive losses) and a domain-adaptation step
(``UniRemovalDAModel``: student + UNet discriminator, GAN, identity and extended contrastive losses).
The models are built from those option files like ``bench_kt_step.py`` does (random teachers and
KT student saved to a temporary folder; the image-grained losses use the untrained VGG as in the
demo), and every step runs on one fixed synthetic batch, so data loading is left out here
(``bench_data.py`` measures it).

Reported, all measured in one process:

* iterations per second of each step, timed interleaved, and each step's time relative to the
  teacher step;
* threads: each step with ``torch.set_num_threads(1)`` and with 2 threads (interleaved): the
  speed-up from the second core;
* a ``torch.profiler`` profile of one step of each kind: number of operator calls (``aten::*``
  events, nested ones included), the share of the step's CPU time spent in the top operators
  (self time), and the mean self time per operator call: at this size most calls last a few
  microseconds, so the step cost is mostly per-operator overhead, not arithmetic;
* two cheap candidates outside the losses: Adam's ``foreach``/``fused`` implementations against
  the per-tensor loop that BasicSR gets on CPU (time, and parameter difference after 3 steps), and
  forward+backward in ``channels_last`` (time, gradient difference).

    python bench/bench_train_step.py --quick   # 2 repeats (development)
    python bench/bench_train_step.py           # make bench
"""
import argparse
import collections
import copy
import statistics
import sys
import tempfile
from os import path as osp

import torch
from torch.profiler import ProfilerActivity, profile

import uniremoval  # noqa: F401
from basicsr.archs import build_network
from basicsr.models import build_model
from uniremoval.options import parse_options

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import bench_util  # noqa: E402

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO = osp.join(REPO, 'uniremoval', 'demo', 'configs')


def _options(name, workdir, force=()):
    args = ['-opt', osp.join(DEMO, name)] + [a for f in force for a in ('--force_yml', f)]
    opt, _ = parse_options(args, root_path=workdir, is_train=True, check_paths=False)
    opt['num_gpu'] = 0
    opt['train']['iters_per_epoch'] = 100
    return opt


def _save_net(opt, path, seed):
    torch.manual_seed(seed)
    torch.save({'params': build_network(dict(opt['network_g'])).state_dict()}, path)
    return path


def build_models(workdir):
    """The demo's three trainable models, built from uniremoval/demo/configs/*.yml."""
    teacher = build_model(_options('train_teacher_tiny.yml', workdir))
    kt_opt = _options('kt_tiny.yml', workdir)
    for i, t in enumerate(kt_opt['teachers']):
        t['pretrain_path'] = _save_net(kt_opt, osp.join(workdir, f'teacher_{i}.pth'), 100 + i)
    kt = build_model(kt_opt)
    student = _save_net(kt_opt, osp.join(workdir, 'kt_student.pth'), 7)  # the DA student: the KT network
    da = build_model(_options('da_tiny.yml', workdir, force=[f'path:pretrain_network_g={student}']))
    return {'teacher': teacher, 'kt': kt, 'da': da}


def make_batches(batch, patch):
    g = torch.Generator().manual_seed(0)
    shape = (batch, 3, patch, patch)
    lq, gt, clear = (torch.rand(shape, generator=g) for _ in range(3))
    label = torch.arange(batch) % 3
    return {'teacher': {'lq': lq, 'gt': gt}, 'kt': {'lq': lq, 'gt': gt, 'label': label},
            'da': {'lq': lq, 'clear': clear, 'label': label}}


def step_fns(models, batches):
    counter = collections.Counter()

    def make(kind):
        def step():
            counter[kind] += 1
            models[kind].feed_data(batches[kind])
            models[kind].optimize_parameters(counter[kind] + 1)  # DA: discriminator steps from iteration 2

        return step

    return {kind: make(kind) for kind in models}


def with_threads(fn, n):
    def run():
        before = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            fn()
        finally:
            torch.set_num_threads(before)

    return run


def profile_step(fn, top=6):
    """Operator count, top operators by self CPU time (share of the step) and mean self time per call."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = [e for e in prof.key_averages() if e.key.startswith('aten::')]
    calls = sum(e.count for e in events)
    total = sum(e.self_cpu_time_total for e in prof.key_averages())
    ranked = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)
    return {
        'aten_calls': calls,
        'mean_self_us_per_aten_call': sum(e.self_cpu_time_total for e in events) / max(calls, 1),
        'top_ops_share': {e.key: e.self_cpu_time_total / total for e in ranked[:top]},
        'top_ops_calls': {e.key: e.count for e in ranked[:top]},
        'conv_share': sum(e.self_cpu_time_total for e in events if 'conv' in e.key) / total,
    }


def optimizer_variants(net, repeats):
    """Adam as BasicSR builds it on CPU (``foreach`` unset: the per-tensor loop) vs ``foreach`` vs ``fused``.

    Same gradients, same start; returns per variant the time ratio to the default and the largest
    parameter difference to the default after 3 steps (the fast variants are the same update)."""
    params0 = [p.detach().clone() for p in net.parameters()]
    g = torch.Generator().manual_seed(1)
    grads = [torch.randn(p.shape, generator=g) for p in params0]
    variants = {'default': {}, 'foreach': {'foreach': True}, 'fused': {'fused': True}}
    states = {}
    for name, kw in variants.items():
        params = [p.clone().requires_grad_(True) for p in params0]
        for p, gr in zip(params, grads):
            p.grad = gr.clone()
        states[name] = (params, torch.optim.Adam(params, lr=2e-4, **kw))
    for _, opt in states.values():
        for _ in range(3):
            opt.step()
    diffs = {name: max((a - b).abs().max().item() for a, b in zip(states[name][0], states['default'][0]))
             for name in variants}
    times = bench_util.interleaved({name: opt.step for name, (_, opt) in states.items()}, repeats, warmup=1)
    rel = bench_util.ratios(times, 'default')
    return {name: {'time_ratio_vs_default': rel[name], 'max_param_diff_vs_default_after_3_steps': diffs[name]}
            for name in variants}


def channels_last_fwd_bwd(net, batch, patch, repeats):
    """Forward+backward of the tiny MPRNet in NCHW (default) vs channels_last: time ratio, gradient difference."""
    net_cl = copy.deepcopy(net).to(memory_format=torch.channels_last)
    x = torch.rand(batch, 3, patch, patch, generator=torch.Generator().manual_seed(2))
    x_cl = x.contiguous(memory_format=torch.channels_last)

    def run(n, inp):
        n.zero_grad(set_to_none=True)
        n(inp)[0].mean().backward()

    times = bench_util.interleaved({'nchw': lambda: run(net, x), 'channels_last': lambda: run(net_cl, x_cl)}, repeats)
    diff = max((a.grad - b.grad).abs().max().item() for a, b in zip(net.parameters(), net_cl.parameters()))
    scale = max(a.grad.abs().max().item() for a in net.parameters())
    return {'time_ratio_channels_last_vs_nchw': bench_util.ratios(times, 'nchw')['channels_last'],
            'max_grad_diff': diff, 'max_grad': scale}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--batch', type=int, default=8, help='the demo: 8')
    parser.add_argument('--patch', type=int, default=48, help='the demo: 48')
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--quick', action='store_true', help='2 repeats (provisional)')
    parser.add_argument('--no-write', action='store_true')
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats = 2
    info = bench_util.machine_info()
    with tempfile.TemporaryDirectory() as workdir:
        models = build_models(workdir)
        fns = step_fns(models, make_batches(args.batch, args.patch))
        times = bench_util.interleaved(fns, args.repeats, warmup=1)
        threads = {}
        for kind, fn in fns.items():
            threads[kind] = bench_util.interleaved({1: with_threads(fn, 1), 2: with_threads(fn, 2)},
                                                   max(2, args.repeats // 2), warmup=0)
        profiles = {kind: profile_step(fn) for kind, fn in fns.items()}
        optim = optimizer_variants(models['teacher'].net_g, args.repeats)
        chl = channels_last_fwd_bwd(models['teacher'].net_g, args.batch, args.patch, max(2, args.repeats // 2))
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {'what': 'demo training steps (uniremoval/demo/configs/*.yml), one fixed batch, interleaved',
              'settings': {'batch': [args.batch, 3, args.patch, args.patch], 'repeats': args.repeats},
              'steps': {}}
    print(f'demo training steps, batch {args.batch}x3x{args.patch}x{args.patch}, median of {args.repeats}, '
          f'{torch.get_num_threads()} threads')
    for kind in fns:
        t1, t2 = (statistics.median(threads[kind][n]) for n in (1, 2))
        p = profiles[kind]
        result['steps'][kind] = {
            'iters_per_s': 1 / med[kind], 'time_ratio_vs_teacher_step': med[kind] / med['teacher'],
            'time_s': bench_util.summarize(times[kind]), 'speedup_2_threads_vs_1': t1 / t2, 'profile': p}
        top = ', '.join(f'{k[6:]} {100 * v:.0f}%' for k, v in list(p['top_ops_share'].items())[:4])
        print(f'  {kind:8s} {1 / med[kind]:6.2f} it/s  x{med[kind] / med["teacher"]:.2f} teacher step  '
              f'2 threads x{t1 / t2:.2f}  {p["aten_calls"]} aten calls, {p["mean_self_us_per_aten_call"]:.0f} us '
              f'self each; conv {100 * p["conv_share"]:.0f}%; top: {top}')
    result['adam_variants'] = optim
    result['channels_last_fwd_bwd'] = chl
    print('  Adam step (BasicSR default = per-tensor loop): ' + ', '.join(
        f"{k} x{v['time_ratio_vs_default']:.2f} (max diff {v['max_param_diff_vs_default_after_3_steps']:.1e})"
        for k, v in optim.items()))
    print(f"  channels_last fwd+bwd: x{chl['time_ratio_channels_last_vs_nchw']:.2f} time vs NCHW, max grad diff "
          f"{chl['max_grad_diff']:.1e} (max grad {chl['max_grad']:.1e})")
    if not args.no_write:
        path = bench_util.write_result('train_step_demo', result, quick=args.quick, info=info)
        print(f'written to {path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
