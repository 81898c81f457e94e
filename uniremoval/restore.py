"""``uniremoval-restore``: restore an image or a folder of images of any size with a trained network.

Usage::

    uniremoval-restore -i INPUT -o OUTPUT -w CHECKPOINT [--opt OPTIONS.yml] [--param-key KEY]
                       [--tile 512] [--tile-overlap 32] [--tile-batch 1] [--multiple 1]
                       [--device auto|cpu|cuda|cuda:N] [--pixel-range 0,1|-1,1]
                       [--ext png] [--suffix _restored] [--jpeg-quality 95] [--quiet]

* Network: ``network_g`` and ``pixel_range`` of a BasicSR option file (``--opt``), otherwise the
  paper's MPRNet (``n_feat`` 40, ``scale_unetfeats`` 20, ``scale_orsnetfeats`` 16, ``num_cab`` 8) in
  [0, 1]. The checkpoint may be a BasicSR one (``params_ema``, falling back to ``params``), an
  official MPRNet one (``state_dict``, ``module.`` prefixes allowed) or a bare state dict; it is
  loaded with ``weights_only=True`` and ``strict=True``. Without ``-w``, the option file's
  ``path: pretrain_network_g`` (and ``param_key_g``) are used.
* Images larger than ``--tile`` are restored tile by tile with smooth overlap blending (see
  :mod:`uniremoval.utils.tiling`), so memory stays bounded; smaller images, or ``--tile 0``, are
  restored whole.
* Inputs are read unchanged: 8-bit and 16-bit images stay 8/16-bit (unless the output format is
  8-bit only: JPEG, BMP, WebP), grey images stay grey, an alpha channel is copied untouched, and the
  output has the input's height and width.
* Outputs: with a folder (or a single file and an existing folder / a name without an image
  extension) as ``-o``, each image is written there under its own name plus ``--suffix``, with its
  own extension or ``--ext``; with one input file and ``-o`` ending in an image extension, that is
  the output file. Files are written under a temporary name and renamed into place.
* Unreadable or corrupt files are reported with the reason and skipped. Exit status: 0 when every
  image was restored, 1 when some failed (the others are written; the summary names the failures),
  2 for a usage or setup error (bad arguments, no input image, unusable checkpoint or options).

The same pipeline is available from python: :func:`load_network` and :func:`restore_image`.
"""
import argparse
import logging
import os
import sys
from os import path as osp

import cv2
import numpy as np
import torch
from basicsr.utils.registry import ARCH_REGISTRY
from tqdm import tqdm

from uniremoval.models.mprnet_model import parse_pixel_range
from uniremoval.options import OptionsError, load_option_file
from uniremoval.utils.atomic_io import atomic_open
from uniremoval.utils.checkpoint import load_state_dict_file
from uniremoval.utils.tiling import tiled_forward

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.tif', '.tiff', '.bmp', '.webp')
EIGHT_BIT_EXTENSIONS = ('.jpg', '.jpeg', '.bmp', '.webp')
NO_ALPHA_EXTENSIONS = ('.jpg', '.jpeg')

# The paper's network: MPRNet in its deraining configuration (Uni-Removal §IV-A1).
DEFAULT_NETWORK = {'type': 'MPRNet', 'n_feat': 40, 'scale_unetfeats': 20, 'scale_orsnetfeats': 16, 'num_cab': 8}

logger = logging.getLogger('uniremoval.restore')


class SetupError(RuntimeError):
    """A problem with the command line, the options or the checkpoint (exit status 2)."""


# ------------------------------------------------------------------------------------------
# Network
# ------------------------------------------------------------------------------------------
def load_network(checkpoint, network_opt=None, param_key='params_ema', device='cpu'):
    """Build a registered network and load a checkpoint into it strictly.

    Args:
        checkpoint (str): ``.pth`` file (BasicSR, official MPRNet or bare state dict).
        network_opt (dict | None): ``network_g``-style options (``type`` plus arguments);
            default :data:`DEFAULT_NETWORK`.
        param_key (str | None): see :func:`~uniremoval.utils.checkpoint.load_state_dict_file`;
            ``'params_ema'`` falls back to ``'params'``, then to ``'state_dict'``.
        device: where the network is put.

    Returns:
        nn.Module: the network in eval mode.
    """
    network_opt = dict(DEFAULT_NETWORK if network_opt is None else network_opt)
    arch = network_opt.pop('type', None)
    if arch is None:
        raise SetupError(f'network options {network_opt} lack the key "type"')
    try:
        net = ARCH_REGISTRY.get(arch)(**network_opt)
    except (KeyError, TypeError, ValueError) as e:
        raise SetupError(f'cannot build network {arch} with {network_opt}: {e}') from e
    state = load_state_dict_file(checkpoint, param_key)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise SetupError(f'checkpoint {checkpoint} does not match network {arch} {network_opt} '
                         f'(give the training option file with --opt): {e}') from e
    return net.to(device).eval()


def network_function(net, pixel_range=(0.0, 1.0)):
    """Wrap ``net`` as a function of [0, 1] images returning its final output in [0, 1].

    ``net`` may return a tensor or a list of stage outputs, final first (MPRNet). ``pixel_range``
    is the network's input/output range: ``(0, 1)`` or ``(-1, 1)``.
    """
    low, high = (float(v) for v in pixel_range)

    def fn(x):
        out = net(x * (high - low) + low)
        if isinstance(out, (list, tuple)):
            out = out[0]
        return (out - low) / (high - low)

    return fn


def _module_device(net):
    if isinstance(net, torch.nn.Module):
        for tensor in net.parameters():
            return tensor.device
    return torch.device('cpu')


# ------------------------------------------------------------------------------------------
# One image
# ------------------------------------------------------------------------------------------
def _split_channels(img):
    """(colour or grey (H, W, 1|3), alpha (H, W, 1) or None) of an (H, W) or (H, W, C) image."""
    if img.ndim == 2:
        return img[..., None], None
    if img.ndim == 3 and img.shape[2] in (1, 3):
        return img, None
    if img.ndim == 3 and img.shape[2] in (2, 4):
        return img[..., :-1], img[..., -1:]
    raise ValueError(f'expected an (H, W) or (H, W, C) image with C in 1..4, got shape {img.shape}')


def _to_unit_float(img):
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255
    if img.dtype == np.uint16:
        return img.astype(np.float32) / 65535
    if img.dtype in (np.float16, np.float32, np.float64):
        return img.astype(np.float32)
    raise ValueError(f'unsupported image dtype {img.dtype} (expected uint8, uint16 or float in [0, 1])')


def _from_unit_float(img, dtype):
    img = np.clip(img, 0, 1)
    if dtype == np.uint8:
        return np.round(img * 255).astype(np.uint8)
    if dtype == np.uint16:
        return np.round(img * 65535).astype(np.uint16)
    return img.astype(dtype)


def restore_image(net, img, tile=0, overlap=32, batch=1, multiple=1, pixel_range=(0.0, 1.0), device=None,
                  bgr=True, progress=False):
    """Restore one image array with ``net``; returns an array of the same shape and dtype.

    Args:
        net (callable): a network (or any function) taking (B, 3, h, w) RGB tensors in
            ``pixel_range`` and returning such a tensor or a list of them, final first.
        img (ndarray): (H, W) grey, (H, W, 1|3) grey/colour, or (H, W, 2|4) with alpha last;
            uint8, uint16, or float in [0, 1]. Colour channels in BGR order (as cv2 reads) unless
            ``bgr=False``.
        tile, overlap, batch, multiple: tiling, see :func:`~uniremoval.utils.tiling.tiled_forward`
            (``tile=0``: the whole image in one call).
        pixel_range (tuple): the network's range, ``(0, 1)`` or ``(-1, 1)``.
        device: where the network runs; default: the device of ``net``'s parameters. The full image
            stays on the CPU, only tiles move.
        progress (bool): tqdm bar over the tiles of a large image.

    Grey images go through the network as three equal channels and come back as the channel mean;
    the alpha channel is copied unchanged; the result is clipped to the input's range.
    """
    img = np.asarray(img)
    colour, alpha = _split_channels(img)
    grey = colour.shape[2] == 1
    x = _to_unit_float(colour)
    x = np.repeat(x, 3, axis=2) if grey else (x[..., ::-1] if bgr else x)
    tensor = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]
    device = _module_device(net) if device is None else device
    out = tiled_forward(network_function(net, pixel_range), tensor, tile, overlap, batch=batch, multiple=multiple,
                        device=device, progress=progress)
    out = out[0].float().cpu().numpy().transpose(1, 2, 0)
    out = out.mean(axis=2, keepdims=True) if grey else (out[..., ::-1] if bgr else out)
    out = _from_unit_float(out, colour.dtype)
    if alpha is not None:
        out = np.concatenate([out, alpha], axis=2)
    elif img.ndim == 2:
        out = out[..., 0]
    return np.ascontiguousarray(out)


# ------------------------------------------------------------------------------------------
# Files
# ------------------------------------------------------------------------------------------
def read_image(path):
    """Read an image unchanged (bit depth, grey, alpha); raises ``ValueError`` naming the reason."""
    try:
        data = np.fromfile(path, dtype=np.uint8)  # works with any file name, unlike cv2.imread on Windows
    except OSError as e:
        raise ValueError(f'cannot read file: {e}') from e
    if data.size == 0:
        raise ValueError('empty file')
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError('cannot decode image (corrupt or unsupported format)')
    return img


def _encodable(img, path):
    """Convert ``img`` to what the format of ``path``'s extension can store, warning about lost information."""
    ext = osp.splitext(path)[1].lower()
    if img.ndim == 3 and img.shape[2] == 2:  # grey + alpha: OpenCV writes BGRA
        img = np.concatenate([np.repeat(img[..., :1], 3, axis=2), img[..., 1:]], axis=2)
    if ext in NO_ALPHA_EXTENSIONS and img.ndim == 3 and img.shape[2] == 4:
        logger.warning('%s: %s cannot store an alpha channel: it is dropped', path, ext)
        img = img[..., :3]
    if ext in EIGHT_BIT_EXTENSIONS and img.dtype != np.uint8:
        if img.dtype == np.uint16:
            logger.warning('%s: %s stores 8 bits per channel: the 16-bit result is reduced to 8 bits', path, ext)
        img = _from_unit_float(_to_unit_float(img), np.uint8)
    elif ext == '.png' and img.dtype not in (np.uint8, np.uint16):
        img = _from_unit_float(_to_unit_float(img), np.uint16)
    return img


def write_image(path, img, jpeg_quality=95):
    """Encode ``img`` in the format of ``path``'s extension and write it atomically (temporary file
    in the same folder, renamed into place)."""
    ext = osp.splitext(path)[1].lower()
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if ext in ('.jpg', '.jpeg') else []
    ok, encoded = cv2.imencode(ext, _encodable(img, path), params)
    if not ok:
        raise ValueError(f'OpenCV cannot encode a {img.dtype} image of shape {img.shape} as {ext}')
    with atomic_open(path, 'wb') as f:
        f.write(encoded.tobytes())


def list_images(folder):
    """Image files directly in ``folder`` (by extension, hidden files skipped), sorted."""
    names = sorted(os.listdir(folder))
    return [osp.join(folder, n) for n in names
            if not n.startswith('.') and osp.splitext(n)[1].lower() in IMAGE_EXTENSIONS
            and osp.isfile(osp.join(folder, n))]


def plan_outputs(input_path, output, ext=None, suffix=''):
    """[(input file, output file)] for an input file or folder and ``-o`` (see the module docstring)."""
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
    targets = [osp.abspath(out) for _, out in plan]
    clashes = sorted({t for t in targets if targets.count(t) > 1})
    if clashes:
        raise SetupError(f'several inputs would be written to {clashes[0]}; use --suffix or keep the extensions')
    return plan


# ------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------
def build_arg_parser():
    parser = argparse.ArgumentParser(
        prog='uniremoval-restore',
        description='Restore an image or a folder of images with a trained Uni-Removal / MPRNet network.',
        epilog='Exit status: 0 all restored, 1 some images failed (others written), 2 usage/setup error.')
    parser.add_argument('-i', '--input', required=True, help='image file or folder of images')
    parser.add_argument('-o', '--output', required=True,
                        help='output folder, or output file when the input is one file and this ends in an '
                        'image extension')
    parser.add_argument('-w', '--weights', help='checkpoint (.pth); default: path:pretrain_network_g of --opt')
    parser.add_argument('--opt', help='BasicSR option file: its network_g and pixel_range are used '
                        '(default: MPRNet 40/20/16, num_cab 8, pixel range [0, 1])')
    parser.add_argument('--param-key', help='checkpoint entry: params_ema (default, falls back to params, then '
                        'state_dict), params or state_dict; default from --opt path:param_key_g if set')
    parser.add_argument('--pixel-range', choices=['0,1', '-1,1'], metavar='{0,1 | -1,1}',
                        help='network pixel range (overrides --opt; default 0,1)')
    parser.add_argument('--tile', type=int, default=512,
                        help='tile size for large images, 0 = whole image (default: 512)')
    parser.add_argument('--tile-overlap', type=int, default=32, help='overlap between tiles (default: 32)')
    parser.add_argument('--tile-batch', type=int, default=1, help='tiles per forward pass (default: 1)')
    parser.add_argument('--multiple', type=int, default=1,
                        help='reflect-pad network inputs to multiples of this (default: 1; MPRNet pads itself)')
    parser.add_argument('--device', default='auto', help='auto (CUDA if available), cpu, cuda or cuda:N')
    parser.add_argument('--ext', help='output extension, e.g. png (default: the input\'s)')
    parser.add_argument('--suffix', default='', help='appended to output file names, e.g. _restored')
    parser.add_argument('--jpeg-quality', type=int, default=95, help='JPEG output quality (default: 95)')
    parser.add_argument('-q', '--quiet', action='store_true', help='no progress bars')
    return parser


class _TqdmHandler(logging.Handler):
    """Log records printed with ``tqdm.write`` so they do not break progress bars."""

    def emit(self, record):
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001  (logging must never raise)
            self.handleError(record)


def _resolve_device(name):
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise SetupError(f'--device {name}: {e}') from e
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise SetupError(f'--device {name}: CUDA is not available')
    if device.type not in ('cpu', 'cuda'):
        raise SetupError(f'--device must be auto, cpu, cuda or cuda:N, got {name}')
    return device


def _network_settings(args):
    """(network options, pixel range, checkpoint, param key) from the arguments and --opt."""
    network_opt, pixel_range, checkpoint, param_key = None, (0.0, 1.0), args.weights, args.param_key
    if args.opt:
        opt = load_option_file(args.opt)
        network_opt = opt.get('network_g')
        if not isinstance(network_opt, dict):
            raise SetupError(f'option file {args.opt} has no network_g mapping')
        try:
            pixel_range = parse_pixel_range(opt)
        except ValueError as e:
            raise SetupError(f'{args.opt}: {e}') from e
        paths = opt.get('path') or {}
        checkpoint = checkpoint or paths.get('pretrain_network_g')
        if param_key is None and not args.weights:
            param_key = paths.get('param_key_g')
    if args.pixel_range:
        pixel_range = tuple(float(v) for v in args.pixel_range.split(','))
    if not checkpoint:
        raise SetupError('no checkpoint: give -w CHECKPOINT (or --opt with path:pretrain_network_g)')
    return network_opt, pixel_range, checkpoint, param_key or 'params_ema'


def main(argv=None):
    """Run the command; returns the exit status (0 all restored, 1 some failed, 2 setup error)."""
    args = build_arg_parser().parse_args(argv)
    handler = _TqdmHandler()
    handler.setFormatter(logging.Formatter('uniremoval-restore: %(levelname)s: %(message)s'))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        return _run(args)
    finally:
        logger.removeHandler(handler)


def _run(args):
    try:
        if args.tile < 0 or args.tile_overlap < 0 or args.tile_batch < 1 or args.multiple < 1:
            raise SetupError('--tile and --tile-overlap must be >= 0, --tile-batch and --multiple >= 1')
        if args.tile and args.tile_overlap >= args.tile:
            raise SetupError(f'--tile-overlap ({args.tile_overlap}) must be smaller than --tile ({args.tile})')
        device = _resolve_device(args.device)
        plan = plan_outputs(args.input, args.output, args.ext, args.suffix)
        network_opt, pixel_range, checkpoint, param_key = _network_settings(args)
        net = load_network(checkpoint, network_opt, param_key, device)
    except (SetupError, OptionsError, OSError, RuntimeError, KeyError) as e:
        logger.error('%s', e)
        return 2

    restored, failed = [], []
    for in_path, out_path in tqdm(plan, desc='images', unit='img', disable=args.quiet or len(plan) == 1):
        name = osp.basename(in_path)
        try:
            if osp.abspath(in_path) == osp.abspath(out_path):
                raise ValueError('the output would overwrite the input (use another folder, --suffix or --ext)')
            img = read_image(in_path)
            out = restore_image(net, img, tile=args.tile, overlap=args.tile_overlap, batch=args.tile_batch,
                                multiple=args.multiple, pixel_range=pixel_range, device=device,
                                progress=not args.quiet)
            write_image(out_path, out, args.jpeg_quality)
            restored.append(name)
        except Exception as e:  # noqa: BLE001  (report and go on with the next image)
            reason = str(e) or type(e).__name__
            if isinstance(e, torch.cuda.OutOfMemoryError):
                torch.cuda.empty_cache()
                reason = 'out of GPU memory; try a smaller --tile or --tile-batch'
            logger.error('%s: %s', in_path, reason)
            failed.append(name)

    summary = f'restored {len(restored)}, failed {len(failed)}'
    print(summary + (': ' + ', '.join(failed) if failed else '') + f' (output: {args.output})')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
