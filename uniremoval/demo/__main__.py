"""``make demo`` / ``python -m uniremoval.demo``: Uni-Removal's whole pipeline at toy scale on CPU.

The command line of :func:`uniremoval.demo.pipeline.run_demo`; see :mod:`uniremoval.demo`.
"""
import argparse
import os
import sys
from os import path as osp

import torch

from uniremoval.commands.common import add_version_argument
from uniremoval.demo.pipeline import run_demo


def build_arg_parser():
    parser = argparse.ArgumentParser(prog='python -m uniremoval.demo', description=__doc__.split('\n')[0])
    add_version_argument(parser)
    parser.add_argument('--out', default='results/demo', help='report and experiments folder')
    parser.add_argument('--data', default='datasets/demo', help='demo dataset folder (built if missing)')
    parser.add_argument('--teacher-iters', type=int, default=60)
    parser.add_argument('--kt-iters', type=int, default=150)
    parser.add_argument('--da-iters', type=int, default=150)
    parser.add_argument('--patch', type=int, default=48)
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--kt-ablation', action='store_true', help='also train the KT ladder (Table IV) per seed')
    parser.add_argument('--da-ablation', action='store_true', help='also train the DA ladder (Table V) per seed')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2], help='seeds of the ablation ladders')
    parser.add_argument('--kt-ablation-iters', type=int, default=300,
                        help='iterations of each KT ladder run (from random weights)')
    parser.add_argument('--da-ablation-iters', type=int, default=60,
                        help='iterations of each DA ladder run (from the KT student)')
    parser.add_argument('--jobs', type=int, default=min(2, os.cpu_count() or 1),
                        help='ladder runs trained at a time (single-threaded processes)')
    parser.add_argument('--from-scratch', action='store_true',
                        help='train every stage from random weights instead of the shipped demo checkpoints, '
                             'at the learning rates of their first runs (uniremoval.demo.options.SCRATCH_LR)')
    return parser


def main(argv=None):
    args = build_arg_parser().parse_args(argv)
    torch.manual_seed(args.seed)
    run_demo(args.out, args.data, args.teacher_iters, args.kt_iters, args.da_iters, args.patch, args.batch,
             args.seed, args.kt_ablation, args.da_ablation, args.from_scratch, tuple(args.seeds),
             args.kt_ablation_iters, args.da_ablation_iters, args.jobs)
    print(f"[demo] report: {osp.join(osp.abspath(args.out), 'report.html')} (and report.md)")
    return 0


if __name__ == '__main__':
    sys.exit(main())
