"""Inference efficiency of the restoration networks: achieved FLOP/s against the measured conv peak.

For each network (MPRNet in the deraining and the deblurring configuration, NAFNet and MSBDN when
their archs are registered) and image size, batch 1, the script times side by side, interleaved
in one process (``bench_util.interleaved``):

* ``peak_conv``: one large dense 3x3 convolution (256 -> 256 channels at 64x64 on CPU; 512 -> 512 at
  128x128 with ``--full``), the machine's practical convolution peak, timed in the same rounds as
  the networks so that both see the same machine state; in fp32 NCHW (the reference peak), fp32
  channels_last and bf16;
* the network in several variants, all plain torch calls on the same weights:
  ``eager`` (fp32, ``torch.no_grad()``, the reference), ``inference_mode``, ``channels_last``
  (weights and input in NHWC, inference mode), ``bf16_autocast`` (``torch.autocast`` bfloat16,
  inference mode) and ``compile`` (``torch.compile`` in a child process with a time limit on the
  compilation; the reason is recorded when it fails or takes too long).

FLOPs are counted once per network and size with forward hooks on every ``nn.Conv2d``,
``nn.ConvTranspose2d`` and ``nn.Linear`` (2 x multiply-adds; bias, activations, attention
multiplications and interpolation are not counted, so the figure is the *convolution* FLOP/s).
Reported per variant: achieved FLOP/s / peak FLOP/s (the fp32 NCHW peak, and the better of the
NCHW and channels_last peaks; bf16 also against the bf16 conv peak), speed-up over eager, and the
output difference to eager (max abs, and PSNR for bf16, on outputs clamped to [0, 1]). Networks
have random weights (speed does not depend on them; the bf16 PSNR of a trained network can differ).

    python bench/bench_inference.py --quick    # MPRNet-derain at 64x64, a minute (development)
    python bench/bench_inference.py            # every network, CPU sizes (CPU_SIZES), make bench
    python bench/bench_inference.py --full     # 256x256 and 512x512, CUDA if available (paper size)

Result: ``bench/results/inference_<quick|cpu|full>.json``.
"""
import argparse
import copy
import json
import math
import statistics
import subprocess
import sys
import time
from os import path as osp

import torch
from torch import nn

import uniremoval  # noqa: F401  (registers the archs)
from basicsr.utils.registry import ARCH_REGISTRY
from uniremoval.utils.pixel_range import final_output

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import bench_util  # noqa: E402

# official configurations (uniremoval_arch.py, nafnet_arch.py, msbdn_arch.py docstrings)
NETWORKS = {
    'mprnet_derain': dict(type='MPRNet', n_feat=40, scale_unetfeats=20, scale_orsnetfeats=16, num_cab=8),
    'mprnet_deblur': dict(type='MPRNet', n_feat=96, scale_unetfeats=48, scale_orsnetfeats=32, num_cab=8),
    # NAFNet-GoPro-width32 (official options/test/GoPro/NAFNet-width32.yml)
    'nafnet_w32': dict(type='NAFNet', width=32, enc_blk_nums=[1, 1, 1, 28], middle_blk_num=1,
                       dec_blk_nums=[1, 1, 1, 1]),
    'msbdn_dff': dict(type='MSBDNDFF'),
}
VARIANTS = ('eager', 'inference_mode', 'channels_last', 'bf16_autocast', 'compile')
# image sizes of the default (CPU, make bench) run: a forward of MPRNet-deblur at 256x256 is ~0.8 TFLOP,
# half a minute per call on 2 cores; the paper sizes (256, 512) are for --full on a GPU
CPU_SIZES = {'mprnet_derain': [128], 'mprnet_deblur': [64], 'nafnet_w32': [128], 'msbdn_dff': [128]}


def count_conv_flops(net, x):
    """FLOPs (2 x multiply-adds) of the conv/linear layers of ``net(x)``, counted with forward hooks."""
    total = [0]

    def hook(module, inputs, output):
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            kh, kw = module.kernel_size
            if isinstance(module, nn.Conv2d):  # every output element: in/groups * kh * kw multiply-adds
                total[0] += 2 * output.numel() * (module.in_channels // module.groups) * kh * kw
            else:  # every input element scatters into out/groups * kh * kw outputs
                total[0] += 2 * inputs[0].numel() * (module.out_channels // module.groups) * kh * kw
        elif isinstance(module, nn.Linear):
            total[0] += 2 * output.numel() * module.in_features

    layers = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, layers)]
    try:
        with torch.no_grad():
            net(x)
    finally:
        for h in handles:
            h.remove()
    return total[0]


def peak_conv(full, device):
    """A large single 3x3 convolution: (callable fp32, callable fp32 channels_last, callable bf16, FLOPs, text)."""
    channels, size = (512, 128) if full else (256, 64)
    conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False).to(device).eval()
    x = torch.rand(1, channels, size, size, device=device)
    flops = 2 * channels * channels * 9 * size * size
    conv_cl = copy.deepcopy(conv).to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)

    def fp32():
        with torch.inference_mode():
            conv(x)

    def fp32_cl():
        with torch.inference_mode():
            conv_cl(x_cl)

    def bf16():
        with torch.inference_mode(), torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16):
            conv(x)

    return fp32, fp32_cl, bf16, flops, f'{channels}->{channels} 3x3 at {size}x{size}'


def psnr(a, b):
    mse = (a.clamp(0, 1) - b.clamp(0, 1)).double().square().mean().item()
    return float('inf') if mse == 0 else 10 * math.log10(1 / mse)


def variant_fns(net, x, device):
    """The eager-mode variants: name -> (callable returning the final output in fp32)."""
    dev_type = torch.device(device).type
    net_cl = copy.deepcopy(net).to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)

    def eager():
        with torch.no_grad():
            return final_output(net(x))

    def inference_mode():
        with torch.inference_mode():
            return final_output(net(x))

    def channels_last():
        with torch.inference_mode():
            return final_output(net_cl(x_cl))

    def bf16_autocast():
        with torch.inference_mode(), torch.autocast(device_type=dev_type, dtype=torch.bfloat16):
            return final_output(net(x)).float()

    return {'eager': eager, 'inference_mode': inference_mode, 'channels_last': channels_last,
            'bf16_autocast': bf16_autocast}


def build(name, device):
    opt = dict(NETWORKS[name])
    torch.manual_seed(0)
    return ARCH_REGISTRY.get(opt.pop('type'))(**opt).to(device).eval()


def test_image(size, device):
    """A smooth picture with edges in [0, 1] (1, 3, size, size)."""
    g = torch.Generator().manual_seed(0)
    low = torch.rand(1, 3, 8, 8, generator=g)
    img = torch.nn.functional.interpolate(low, size=(size, size), mode='bicubic', align_corners=False)
    img[..., size // 4:size // 2, size // 3:size // 2] = 0.9
    return img.clamp(0, 1).to(device)


def measure(name, size, args):
    """Interleaved timing of the peak conv and the eager variants of one network at one size."""
    net = build(name, args.device)
    x = test_image(size, args.device)
    flops = count_conv_flops(net, x)
    fns = variant_fns(net, x, args.device)
    ref = fns['eager']()
    diffs = {}
    for v, fn in fns.items():
        out = fn()
        diffs[v] = {'max_abs_diff_vs_eager': (out.float() - ref).abs().max().item(),
                    'psnr_vs_eager_db': psnr(out.float(), ref)}
    peak32, peak32_cl, peak16, peak_flops, peak_desc = peak_conv(args.full, args.device)
    timed = dict(fns)
    timed['peak_conv_fp32'] = peak32
    timed['peak_conv_fp32_channels_last'] = peak32_cl
    timed['peak_conv_bf16'] = peak16
    times = bench_util.interleaved(timed, args.repeats, warmup=1, device=args.device)
    med = {k: statistics.median(v) for k, v in times.items()}
    peak_fp32 = peak_flops / med['peak_conv_fp32']
    peak_bf16 = peak_flops / med['peak_conv_bf16']
    peak_best = max(peak_fp32, peak_flops / med['peak_conv_fp32_channels_last'])
    row = {'network': name, 'size': size, 'conv_gflops': flops / 1e9, 'peak_conv': peak_desc,
           'peak_fp32_gflops_per_s': peak_fp32 / 1e9, 'peak_bf16_gflops_per_s': peak_bf16 / 1e9,
           'peak_fp32_channels_last_gflops_per_s': peak_flops / med['peak_conv_fp32_channels_last'] / 1e9,
           'variants': {}}
    for v in fns:
        achieved = flops / med[v]
        row['variants'][v] = dict(
            diffs[v], fraction_of_fp32_peak=achieved / peak_fp32, fraction_of_best_fp32_peak=achieved / peak_best,
            speedup_vs_eager=med['eager'] / med[v], time_s=bench_util.summarize(times[v]))
    row['variants']['bf16_autocast']['fraction_of_bf16_peak'] = (flops / med['bf16_autocast']) / peak_bf16
    return row


def compile_child(name, size, args):
    """torch.compile in a child process with a time limit; its interleaved eager vs compiled timing."""
    cmd = [sys.executable, __file__, '--compile-child', name, '--sizes', str(size), '--repeats', str(args.repeats),
           '--device', args.device] + (['--full'] if args.full else [])
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.compile_timeout)
    except subprocess.TimeoutExpired:
        return {'ok': False, 'reason': f'compilation + timing took over {args.compile_timeout} s (--compile-timeout)'}
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        return {'ok': False, 'reason': f'torch.compile failed: {lines[-1] if lines else proc.returncode}'}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result['child_wall_s'] = time.perf_counter() - start
    return result


def run_compile_child(name, size, args):
    net = build(name, args.device)
    x = test_image(size, args.device)
    compiled = torch.compile(net)
    start = time.perf_counter()
    with torch.inference_mode():
        out = final_output(compiled(x))
    compile_s = time.perf_counter() - start
    with torch.no_grad():
        ref = final_output(net(x))

    def eager():
        with torch.no_grad():
            net(x)

    def comp():
        with torch.inference_mode():
            compiled(x)

    times = bench_util.interleaved({'eager': eager, 'compile': comp}, args.repeats, warmup=1, device=args.device)
    print(json.dumps({'ok': True, 'compile_s': compile_s,
                      'speedup_vs_eager': statistics.median(times['eager']) / statistics.median(times['compile']),
                      'max_abs_diff_vs_eager': (out - ref).abs().max().item()}))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true', help='MPRNet-derain at 64x64, 2 repeats (provisional)')
    parser.add_argument('--full', action='store_true', help='256 and 512, every network, CUDA if available')
    parser.add_argument('--networks', nargs='+', choices=sorted(NETWORKS))
    parser.add_argument('--sizes', type=int, nargs='+')
    parser.add_argument('--repeats', type=int)
    parser.add_argument('--device')
    parser.add_argument('--compile', nargs='*', metavar='NETWORK', dest='compile_networks',
                        help='try torch.compile on these networks (no name: mprnet_derain); off by default on CPU, '
                        'where compiling MPRNet took over 240 s; on by default with --full')
    parser.add_argument('--compile-timeout', type=float, default=240.0)
    parser.add_argument('--no-write', action='store_true')
    parser.add_argument('--compile-child', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.device = args.device or ('cuda' if args.full and torch.cuda.is_available() else 'cpu')
    if args.compile_networks is not None and not args.compile_networks:
        args.compile_networks = ['mprnet_derain']
    if args.quick:
        sizes, repeats, nets = {'mprnet_derain': [64]}, 2, ['mprnet_derain']
    elif args.full:
        sizes, repeats, nets = {n: [256, 512] for n in NETWORKS}, 5, list(NETWORKS)
        args.compile_networks = args.compile_networks if args.compile_networks is not None else list(NETWORKS)
    else:
        sizes, repeats, nets = dict(CPU_SIZES), 3, list(NETWORKS)
    args.compile_networks = args.compile_networks or []
    sizes = {n: args.sizes for n in NETWORKS} if args.sizes else sizes
    args.repeats = args.repeats or repeats
    if args.compile_child:
        run_compile_child(args.compile_child, args.sizes[0], args)
        return 0
    info = bench_util.machine_info()
    nets = [n for n in (args.networks or nets) if NETWORKS[n]['type'] in ARCH_REGISTRY]
    skipped = sorted(set(args.networks or NETWORKS) - set(nets))
    rows = []
    for name in nets:
        for size in sizes[name]:
            row = measure(name, size, args)
            if name not in args.compile_networks:
                row['variants']['compile'] = {'ok': False, 'reason': 'not tried (see --compile)'}
            else:
                row['variants']['compile'] = compile_child(name, size, args)
            rows.append(row)
            print(f"{name} {size}x{size}: {row['conv_gflops']:.1f} conv GFLOP, peak fp32 "
                  f"{row['peak_fp32_gflops_per_s']:.1f} GFLOP/s (channels_last "
                  f"{row['peak_fp32_channels_last_gflops_per_s']:.1f}), "
                  f"bf16 {row['peak_bf16_gflops_per_s']:.1f} GFLOP/s")
            for v, r in row['variants'].items():
                if 'fraction_of_fp32_peak' in r:
                    print(f"  {v:15s} {100 * r['fraction_of_fp32_peak']:5.1f}% of fp32 peak  "
                          f"x{r['speedup_vs_eager']:.2f} vs eager  max|diff| {r['max_abs_diff_vs_eager']:.2e}  "
                          f"PSNR vs eager {r['psnr_vs_eager_db']:.1f} dB")
                elif r.get('ok'):
                    print(f"  {v:15s} x{r['speedup_vs_eager']:.2f} vs eager (compiled in {r['compile_s']:.0f} s)  "
                          f"max|diff| {r['max_abs_diff_vs_eager']:.2e}")
                else:
                    print(f"  {v:15s} {r['reason']}")
    if not args.no_write:
        mode = 'quick' if args.quick else 'full' if args.full else 'cpu'
        path = bench_util.write_result(
            f'inference_{mode}', {
                'what': 'conv FLOP/s of each network and variant / FLOP/s of one large 3x3 conv, same run, batch 1',
                'settings': {'device': args.device, 'sizes': {n: sizes[n] for n in nets}, 'repeats': args.repeats},
                'networks_not_registered': skipped, 'rows': rows,
                'target': 'eager or best variant >= 50% of the fp32 peak for MPRNet (issue [10] item 1)'
            },
            quick=args.quick, info=info)
        print(f'written to {path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
