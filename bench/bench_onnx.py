"""ONNX Runtime against PyTorch eager for the restoration networks (issue [10], item 3).

Each network is exported once with :func:`uniremoval.onnx_export.export_onnx` (dynamic height and width)
and run at each size, batch 1, by PyTorch eager (``torch.inference_mode``, float32) and by ONNX Runtime
(CPUExecutionProvider, or CUDA with ``--device cuda`` when onnxruntime-gpu is installed) with the same
number of threads. The two engines run interleaved (eager, onnxruntime, eager, ...) after one warm-up
call each, so the ratio of the medians does not depend on how busy the machine is. The largest
absolute difference of the two outputs is recorded beside the speed ratio.

    OMP_NUM_THREADS=1 python bench/bench_onnx.py            # demo-size networks, 256x256: a minute or two
    python bench/bench_onnx.py --full --threads 8           # the papers' networks at 256 and 512

Written to ``bench/results/onnx.json``: per network and size the median milliseconds of each engine,
``speedup_onnxruntime_over_eager`` (eager time / onnxruntime time; above 1: onnxruntime is faster), the
largest absolute difference, and the export time. Self-contained: imports only the package.
"""
import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from os import path as osp

import torch

import uniremoval  # noqa: F401  (registration)
from basicsr.archs import build_network
from uniremoval.onnx_export import OnnxNetwork, RestorationGraph, export_onnx
from uniremoval.utils.atomic_io import atomic_open

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
RESULTS = osp.join(REPO, 'bench', 'results', 'onnx.json')

NAFNET_TINY = {'type': 'NAFNet', 'img_channel': 3, 'width': 8, 'middle_blk_num': 1, 'enc_blk_nums': [1, 1],
               'dec_blk_nums': [1, 1]}
QUICK = {
    'MPRNet-demo (shipped rain teacher)': 'shipped',
    'NAFNet-tiny': NAFNET_TINY,
    'MSBDN-DFF-tiny': {'type': 'MSBDNDFF', 'num_feat': 4, 'res_blocks': 2},
}
NAFNET_GOPRO = {'type': 'NAFNet', 'img_channel': 3, 'width': 32, 'middle_blk_num': 1, 'enc_blk_nums': [1, 1, 1, 28],
                'dec_blk_nums': [1, 1, 1, 1]}
FULL = {
    'MPRNet-derain (40/20/16)': {'type': 'MPRNet', 'n_feat': 40, 'scale_unetfeats': 20, 'scale_orsnetfeats': 16,
                                 'num_cab': 8},
    'MPRNet-deblur (96/48/32)': {'type': 'MPRNet', 'n_feat': 96, 'scale_unetfeats': 48, 'scale_orsnetfeats': 32,
                                 'num_cab': 8},
    'NAFNet-GoPro-width32': NAFNET_GOPRO,
    'MSBDN-DFF': {'type': 'MSBDNDFF'},
}


def build(spec):
    if spec == 'shipped':
        from uniremoval.demo.shipped import CHECKPOINT_DIR, checkpoint_file
        from uniremoval.options import load_option_file
        from uniremoval.restoration import load_network
        opt = load_option_file(osp.join(CHECKPOINT_DIR, 'pretrain_teacher_rain.yml'))
        return load_network(checkpoint_file('rain'), opt['network_g'])
    torch.manual_seed(0)
    return build_network(dict(spec)).eval()


def bench_one(name, net, sizes, reps, device, workdir):
    path = osp.join(workdir, 'net.onnx')
    started = time.perf_counter()
    export_onnx(net, path)
    export_s = time.perf_counter() - started
    onnx_net = OnnxNetwork(path, device=device, threads=torch.get_num_threads())
    graph = RestorationGraph(net.to(device)).eval()
    rows = []
    for size in sizes:
        x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)

        def eager():
            with torch.inference_mode():
                out = graph(x)
            if device.type == 'cuda':
                torch.cuda.synchronize()
            return out

        times = {'eager': [], 'onnxruntime': []}
        outputs = {'eager': eager(), 'onnxruntime': onnx_net(x)}  # warm-up
        for _ in range(reps):
            for engine, fn in (('eager', eager), ('onnxruntime', lambda: onnx_net(x))):
                started = time.perf_counter()
                outputs[engine] = fn()
                times[engine].append(time.perf_counter() - started)
        eager_ms = statistics.median(times['eager']) * 1e3
        ort_ms = statistics.median(times['onnxruntime']) * 1e3
        row = {'network': name, 'size': size, 'eager_ms': round(eager_ms, 2), 'onnxruntime_ms': round(ort_ms, 2),
               'speedup_onnxruntime_over_eager': round(eager_ms / ort_ms, 3),
               'max_abs_diff': float((outputs['eager'].float() - outputs['onnxruntime'].float()).abs().max()),
               'export_s': round(export_s, 2), 'parameters': sum(p.numel() for p in net.parameters())}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--full', action='store_true', help="the papers' networks (default: demo-size ones)")
    parser.add_argument('--sizes', type=int, nargs='+', help='square sizes (default 256; --full: 256 512)')
    parser.add_argument('--reps', type=int, default=5, help='timed calls per engine and size (default 5)')
    parser.add_argument('--threads', type=int, default=int(os.environ.get('OMP_NUM_THREADS', 1)))
    parser.add_argument('--networks', nargs='+', help='only the networks whose names contain one of these')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--results', default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sizes = args.sizes or ([256, 512] if args.full else [256])
    networks = FULL if args.full else QUICK
    if args.networks:
        networks = {k: v for k, v in networks.items() if any(part in k for part in args.networks)}
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for name, spec in networks.items():
            rows += bench_one(name, build(spec), sizes, args.reps, device, workdir)
    import onnxruntime
    report = {'mode': 'full' if args.full else 'quick', 'device': str(device), 'threads': args.threads,
              'reps': args.reps, 'torch': torch.__version__, 'onnxruntime': onnxruntime.__version__,
              'machine': platform.processor() or platform.machine(), 'results': rows}
    os.makedirs(osp.dirname(args.results), exist_ok=True)
    with atomic_open(args.results, 'w', encoding='utf-8') as f:
        json.dump(report, f, indent=2)
    print(f'wrote {args.results}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
