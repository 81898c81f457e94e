"""``uniremoval-export-onnx``: export a trained network to ONNX and check it against PyTorch.

The command layer over :mod:`uniremoval.onnx_export`. Exit status: 0 exported (and within the
tolerance), 1 exported but the check failed, 2 a usage or set-up error.
"""
import sys
import time

from uniremoval.commands.common import add_option_file_argument, new_parser
from uniremoval.onnx_export import DEFAULT_OPSET, PARITY_TOLERANCE, OnnxNetwork, export_onnx, max_abs_difference
from uniremoval.restoration import SetupError, load_network, resolve_network_settings, setup_errors
from uniremoval.utils.errors import run_command

PROG = 'uniremoval-export-onnx'


def build_arg_parser():
    parser = new_parser(
        PROG, 'Export a trained restoration network (MPRNet, NAFNet, MSBDN, CNN-ADS, ...) to ONNX with '
        'dynamic height and width, and check it against PyTorch.',
        epilog='Exit status: 0 exported (and within the tolerance), 1 exported but the check failed, 2 setup error.')
    parser.add_argument('-w', '--weights', help='checkpoint (.pth); default: path:pretrain_network_g of --opt')
    add_option_file_argument(parser, 'BasicSR option file: its network_g and pixel_range are used '
                             '(default: MPRNet 40/20/16, num_cab 8, pixel range [0, 1])', required=False)
    parser.add_argument('--param-key', help='checkpoint entry (default params_ema, falling back to params)')
    parser.add_argument('--pixel-range', choices=['0,1', '-1,1'], metavar='{0,1 | -1,1}',
                        help='network pixel range (overrides --opt; default 0,1)')
    parser.add_argument('-o', '--output', required=True, help='the .onnx file to write')
    parser.add_argument('--opset', type=int, default=DEFAULT_OPSET, help=f'ONNX opset (default {DEFAULT_OPSET})')
    parser.add_argument('--tolerance', type=float, default=PARITY_TOLERANCE,
                        help=f'largest allowed |ONNX Runtime - PyTorch| of the check (default {PARITY_TOLERANCE})')
    parser.add_argument('--no-check', action='store_true', help='skip the check against PyTorch')
    return parser


def main(argv=None):
    """Run ``uniremoval-export-onnx``; returns the exit status."""
    return run_command(_export, build_arg_parser().parse_args(argv), PROG)


def _export(args):
    with setup_errors():  # whatever fails before the file is written is a set-up error
        if not args.output.lower().endswith('.onnx'):
            raise SetupError(f'-o {args.output}: expected a file name ending in .onnx')
        network_opt, pixel_range, checkpoint, param_key = resolve_network_settings(
            args.opt, args.weights, args.param_key, args.pixel_range)
        net = load_network(checkpoint, network_opt, param_key, 'cpu')
        started = time.perf_counter()
        meta = export_onnx(net, args.output, pixel_range, args.opset)
    print(f'wrote {args.output} ({meta["network"]}, size multiple {meta["size_multiple"]}, '
          f'{time.perf_counter() - started:.1f} s)')
    if args.no_check:
        return 0
    multiple, smallest = meta['size_multiple'], meta['min_size']
    sizes = [(smallest + multiple + 3, smallest + 2 * multiple + 5), (smallest + 3 * multiple, smallest + multiple)]
    worst = max_abs_difference(net, OnnxNetwork(args.output), sizes, pixel_range)
    ok = worst <= args.tolerance
    print(f'check: max |onnxruntime - pytorch| = {worst:.2e} at sizes {sizes} '
          f'({"within" if ok else "ABOVE"} the tolerance {args.tolerance:g})')
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
