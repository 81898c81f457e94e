"""``uniremoval-restore``: restore an image or a folder of images of any size with a trained network.

The command layer over :mod:`uniremoval.restoration`: flags, output planning, progress and the
exit status (0 every image restored, 1 some failed and the rest were written, 2 a usage or set-up
error, by :mod:`uniremoval.utils.errors`). The network is ``network_g`` and ``pixel_range`` of a
BasicSR option file (``-opt``), or the paper's MPRNet in [0, 1]; the checkpoint a BasicSR, official
MPRNet or bare state dict (``weights_only=True``, strict), or an ``.onnx`` file for the ONNX Runtime
engine. Output names are the input's base name plus ``--suffix`` and stay in the output folder, which
is created and checked for writing before anything is loaded. Images are written under a temporary
name and renamed into place. Details: ``docs/evaluation.md``.
"""
import logging
import os
import sys
import tempfile
from os import path as osp

import torch
from tqdm import tqdm

from uniremoval import restoration
from uniremoval.commands.common import add_option_file_argument, new_parser
from uniremoval.restoration import (DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, SetupError, list_images, load_network,
                                    read_image, resolve_device, resolve_network_settings, restore_image, setup_errors,
                                    write_image)
from uniremoval.utils.display import shown
from uniremoval.utils.errors import run_command

PROG = 'uniremoval-restore'
logger = logging.getLogger('uniremoval.restore')


# ------------------------------------------------------------------------------------------
# Output planning
# ------------------------------------------------------------------------------------------
def plan_outputs(input_path, output, ext=None, suffix=''):
    """[(input file, output file)] for an input file or folder and ``-o`` (see the module docstring)."""
    if any(sep and sep in suffix for sep in (os.sep, os.altsep, '/')):
        raise SetupError(f'--suffix {suffix!r} must not contain a path separator')
    if ext is not None:
        ext = ext.lower() if ext.startswith('.') else '.' + ext.lower()
        if ext not in IMAGE_EXTENSIONS:
            raise SetupError(f'--ext {ext} is not one of {", ".join(IMAGE_EXTENSIONS)}')
    output_is_file = not osp.isdir(output) and osp.splitext(output)[1].lower() in IMAGE_EXTENSIONS
    if osp.isdir(input_path):
        if output_is_file:
            raise SetupError(f'-o {output} looks like an image file, but the input {input_path} is a folder')
        inputs = list_images(input_path)
        if not inputs:
            raise SetupError(f'no image ({", ".join(IMAGE_EXTENSIONS)}) in {input_path}')
    elif osp.isfile(input_path):
        inputs = [input_path]
        if output_is_file:
            return [(input_path, output)]
    else:
        raise SetupError(f'input {input_path} does not exist')
    plan = []
    for path in inputs:
        stem, own_ext = osp.splitext(osp.basename(path))
        plan.append((path, osp.join(output, stem + suffix + (ext or own_ext))))
    folder = osp.abspath(output)
    outside = [out for _, out in plan if osp.dirname(osp.abspath(out)) != folder]
    if outside:  # cannot happen with names from os.listdir and a checked suffix; kept as the guarantee
        raise SetupError(f'output {outside[0]} would be written outside the output folder {output}')
    targets = [osp.abspath(out) for _, out in plan]
    clashes = sorted({t for t in targets if targets.count(t) > 1})
    if clashes:
        raise SetupError(f'several inputs would be written to {clashes[0]}; use --suffix or keep the extensions')
    return plan


def is_same_file(in_path, out_path):
    """Whether writing ``out_path`` would replace ``in_path``: the same resolved path, or an existing file
    with the same identity (reached through a symlink, a hard link, a bind mount or a relative path)."""
    if osp.realpath(in_path) == osp.realpath(out_path):
        return True
    try:
        return osp.samefile(in_path, out_path)
    except OSError:  # the output does not exist yet
        return False


def check_output_folders(plan):
    """Create the output folder(s) of ``plan`` and check that a file can be created in each (a
    temporary file, removed at once); raises :class:`SetupError` naming the folder otherwise."""
    for folder in sorted({osp.dirname(osp.abspath(out)) for _, out in plan}):
        try:
            os.makedirs(folder, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix='.uniremoval-write-check.', suffix='.tmp', dir=folder)
            os.close(fd)
            os.remove(probe)
        except OSError as e:
            raise SetupError(f'output folder {folder} is not writable: {e.strerror or e}') from e


# ------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------
def build_arg_parser():
    parser = new_parser(PROG, 'Restore an image or a folder of images with a trained Uni-Removal / MPRNet network.',
                        epilog='Exit status: 0 all restored, 1 some images failed (others written), 2 usage/setup '
                        'error.')
    parser.add_argument('-i', '--input', required=True, help='image file or folder of images')
    parser.add_argument('-o', '--output', required=True,
                        help='output folder, or output file when the input is one file and this ends in an '
                        'image extension')
    parser.add_argument('-w', '--weights', help='checkpoint (.pth); default: path:pretrain_network_g of --opt')
    add_option_file_argument(parser, 'BasicSR option file: its network_g and pixel_range are used '
                             '(default: MPRNet 40/20/16, num_cab 8, pixel range [0, 1])', required=False)
    parser.add_argument('--param-key', help='checkpoint entry: params_ema (default, falls back to params, then '
                        'state_dict), params or state_dict; default from --opt path:param_key_g if set')
    parser.add_argument('--pixel-range', choices=['0,1', '-1,1'], metavar='{0,1 | -1,1}',
                        help='network pixel range (overrides --opt; default 0,1)')
    parser.add_argument('--tile', type=int, default=512,
                        help='tile size for large images, 0 = whole image (default: 512)')
    parser.add_argument('--max-pixels', type=int, default=DEFAULT_MAX_PIXELS,
                        help='refuse images whose header declares more pixels, before decoding '
                        f'(default: {DEFAULT_MAX_PIXELS}; 0: no limit)')
    parser.add_argument('--tile-overlap', type=int, default=32, help='overlap between tiles (default: 32)')
    parser.add_argument('--tile-batch', type=int, default=1, help='tiles per forward pass (default: 1)')
    parser.add_argument('--multiple', type=int, default=1,
                        help='reflect-pad network inputs to multiples of this (default: 1; MPRNet pads itself)')
    parser.add_argument('--device', default='auto', help='auto (CUDA if available), cpu, cuda or cuda:N')
    parser.add_argument('--ext', help='output extension, e.g. png (default: the input\'s)')
    parser.add_argument('--suffix', default='', help='appended to output file names, e.g. _restored')
    parser.add_argument('--jpeg-quality', type=int, default=95, help='JPEG output quality (default: 95)')
    parser.add_argument('-q', '--quiet', action='store_true', help='no progress bars')
    parser.add_argument('--engine', choices=['auto', 'pytorch', 'onnxruntime'], default='auto',
                        help='auto (default): onnxruntime for an .onnx file (uniremoval-export-onnx), else pytorch')
    parser.add_argument('--channels-last', action='store_true',
                        help='pytorch engine: channels-last (NHWC) memory format (equal within float32 rounding)')
    parser.add_argument('--bf16', action='store_true',
                        help='pytorch engine: bfloat16 autocast (results differ slightly)')
    return parser


class _TqdmHandler(logging.Handler):
    """Log records printed with ``tqdm.write`` so they do not break progress bars."""

    def emit(self, record):
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001  (logging must never raise)
            self.handleError(record)


def _load_engine(args, device):
    """(network or :class:`~uniremoval.onnx_export.OnnxNetwork`, pixel range) from the arguments."""
    network_opt, pixel_range, checkpoint, param_key = resolve_network_settings(
        args.opt, args.weights, args.param_key, args.pixel_range)
    is_onnx = checkpoint.lower().endswith('.onnx')
    engine = args.engine if args.engine != 'auto' else ('onnxruntime' if is_onnx else 'pytorch')
    if engine == 'pytorch':
        if is_onnx:
            raise SetupError(f'{checkpoint} is an ONNX file: use --engine onnxruntime (or auto)')
        return load_network(checkpoint, network_opt, param_key, device), pixel_range
    from uniremoval.onnx_export import OnnxNetwork, OnnxSetupError
    if not is_onnx:
        raise SetupError(f'--engine onnxruntime runs an .onnx file, got -w {checkpoint} '
                         '(write one with uniremoval-export-onnx)')
    if args.channels_last or args.bf16:
        raise SetupError('--channels-last and --bf16 are options of the pytorch engine')
    try:
        return OnnxNetwork(checkpoint, device), OnnxNetwork.pixel_range  # the file maps [0, 1] to [0, 1]
    except OnnxSetupError as e:
        raise SetupError(str(e)) from e


def main(argv=None):
    """Run the command; returns the exit status (0 all restored, 1 some failed, 2 setup error)."""
    args = build_arg_parser().parse_args(argv)
    handler = _TqdmHandler()
    handler.setFormatter(logging.Formatter('uniremoval-restore: %(levelname)s: %(message)s'))
    loggers = (logger, restoration.logger)  # the command's errors and the library's warnings (write_image)
    for log in loggers:
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    try:
        return run_command(_run, args, PROG)
    finally:
        for log in loggers:
            log.removeHandler(handler)


def _run(args):
    with setup_errors():  # whatever fails before the first image is a set-up error
        if args.tile < 0 or args.tile_overlap < 0 or args.tile_batch < 1 or args.multiple < 1:
            raise SetupError('--tile and --tile-overlap must be >= 0, --tile-batch and --multiple >= 1')
        if args.tile and args.tile_overlap >= args.tile:
            raise SetupError(f'--tile-overlap ({args.tile_overlap}) must be smaller than --tile ({args.tile})')
        device = resolve_device(args.device)
        plan = plan_outputs(args.input, args.output, args.ext, args.suffix)
        check_output_folders(plan)
        net, pixel_range = _load_engine(args, device)

    restored, failed = [], []
    for in_path, out_path in tqdm(plan, desc='images', unit='img', disable=args.quiet or len(plan) == 1):
        name = osp.basename(in_path)
        try:
            if is_same_file(in_path, out_path):
                raise ValueError('the output would overwrite the input (use another folder, --suffix or --ext)')
            img = read_image(in_path, args.max_pixels)
            out = restore_image(net, img, tile=args.tile, overlap=args.tile_overlap, batch=args.tile_batch,
                                multiple=args.multiple, pixel_range=pixel_range, device=device,
                                progress=not args.quiet, channels_last=args.channels_last, bf16=args.bf16)
            write_image(out_path, out, args.jpeg_quality)
            restored.append(name)
        except Exception as e:  # noqa: BLE001  (report and go on with the next image)
            reason = str(e) or type(e).__name__
            if isinstance(e, torch.cuda.OutOfMemoryError):
                torch.cuda.empty_cache()
                reason = 'out of GPU memory; try a smaller --tile or --tile-batch'
            logger.error('%s: %s', shown(in_path), reason)
            failed.append(name)

    summary = f'restored {len(restored)}, failed {len(failed)}'
    print(summary + (': ' + ', '.join(failed) if failed else '') + f' (output: {args.output})')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
