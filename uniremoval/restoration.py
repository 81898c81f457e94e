"""Restoring images with a trained network, from python: the library behind ``uniremoval-restore``.

* :func:`load_network` builds a registered network (default: the paper's MPRNet, ``n_feat`` 40,
  ``scale_unetfeats`` 20, ``scale_orsnetfeats`` 16, ``num_cab`` 8) and loads a checkpoint strictly:
  a BasicSR one (``params_ema``, falling back to ``params``), an official MPRNet one (``state_dict``,
  ``module.`` prefixes allowed) or a bare state dict, read with ``weights_only=True``.
* :func:`network_function` wraps a network as a function of [0, 1] images returning its final output
  in [0, 1] (:mod:`uniremoval.utils.pixel_range`), under ``torch.inference_mode``, optionally with the
  channels-last and bfloat16 fast paths.
* :func:`resolve_network_settings` reads network options, pixel range and checkpoint from an option
  file and command-line values (``uniremoval-restore``, ``uniremoval-export-onnx``). ONNX export and
  the ONNX Runtime engine (a drop-in ``net`` for :func:`restore_image`) are in
  :mod:`uniremoval.onnx_export`.
* :func:`restore_image` restores one image array of any size, tile by tile with smooth overlap blending
  (:mod:`uniremoval.utils.tiling`) when it is larger than ``tile``. Bit depth, grey and alpha are kept.
* :func:`read_image`, :func:`write_image` and :func:`list_images` read (unchanged), write (atomically,
  in the format of the extension) and list image files.

The command line, with output planning and logging, is :mod:`uniremoval.commands.restore`; the evaluation
(:mod:`uniremoval.evaluation`) and the demo use this module. Problems with the network options or the
checkpoint raise :class:`SetupError`.
"""
import logging
import os
import warnings
from contextlib import contextmanager
from os import path as osp

import cv2
import numpy as np
import torch
from PIL import Image

from basicsr.utils.registry import ARCH_REGISTRY
from uniremoval.options import load_option_file
from uniremoval.utils.atomic_io import atomic_open
from uniremoval.utils.checkpoint import load_state_dict_file
from uniremoval.utils.checkpoint_record import RecordConflict, merge_setting, read_record
from uniremoval.utils.display import shown
from uniremoval.utils.errors import UsageError
from uniremoval.utils.pixel_range import final_output, from_network_range, parse_pixel_range, to_network_range
from uniremoval.utils.state_dict_check import StateDictMismatchError, check_state_dict
from uniremoval.utils.tiling import tiled_bands

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.tif', '.tiff', '.bmp', '.webp')
EIGHT_BIT_EXTENSIONS = ('.jpg', '.jpeg', '.bmp', '.webp')
NO_ALPHA_EXTENSIONS = ('.jpg', '.jpeg')

# The paper's network: MPRNet in its deraining configuration (Uni-Removal §IV-A1).
DEFAULT_NETWORK = {'type': 'MPRNet', 'n_feat': 40, 'scale_unetfeats': 20, 'scale_orsnetfeats': 16, 'num_cab': 8}

logger = logging.getLogger('uniremoval.restoration')


# Whole-image float copies cost about 80 bytes a pixel: this budget keeps a restore within 24 GiB.
DEFAULT_MAX_PIXELS = 2 ** 28


class SetupError(UsageError, RuntimeError):
    """A problem with the network options or the checkpoint (for ``uniremoval-restore`` also with its
    arguments): exit status 2 of the command."""


@contextmanager
def setup_errors():
    """Report what fails while a command sets up (reading files, building and loading the network)
    as a :class:`SetupError`, exit status 2; usage errors pass unchanged."""
    try:
        yield
    except UsageError:
        raise
    except (OSError, RuntimeError, KeyError) as e:
        raise SetupError(str(e) or type(e).__name__) from e


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
    for key, value in state.items():
        if torch.is_tensor(value) and value.is_floating_point() and not torch.isfinite(value).all():
            raise SetupError(f'checkpoint {shown(checkpoint)}: weight {key} holds NaN or inf')
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        try:  # the missing / unexpected / wrong-shape keys, counted, naming the file
            check_state_dict(net, state, checkpoint)
        except StateDictMismatchError as mismatch:
            raise SetupError(f'{mismatch} (network {arch}; give the training option file with --opt)') from e
        raise SetupError(f'checkpoint {checkpoint} does not match network {arch} {network_opt} '
                         f'(give the training option file with --opt): {e}') from e
    return net.to(device).eval()


def network_function(net, pixel_range=(0.0, 1.0), channels_last=False, bf16=False):
    """Wrap ``net`` as a function of [0, 1] images returning its final output in [0, 1] (float32).

    ``net`` may return a tensor or a list of stage outputs, final first (MPRNet;
    :func:`~uniremoval.utils.pixel_range.final_output`). ``pixel_range`` is the network's
    input/output range: ``(0, 1)`` or ``(-1, 1)`` (:func:`~uniremoval.utils.pixel_range.to_network_range`).

    Inference fast paths (``uniremoval-restore --channels-last / --bf16``; the function always runs
    under ``torch.inference_mode()``):

    * ``channels_last``: the network's parameters (converted in place; harmless for other uses) and
      every input in NHWC memory format, which oneDNN/cuDNN convolutions prefer. Same arithmetic:
      equal to the default within float32 rounding (``tests/test_inference_fast_paths.py``: 1e-5).
    * ``bf16``: ``torch.autocast`` with bfloat16 on the input's device (CPU or CUDA): convolutions in
      bfloat16, 8 bits of mantissa, so results differ visibly (the test requires at least 35 dB PSNR
      against float32 on a real photo with a trained network); the output is returned as float32.
    """
    pixel_range = tuple(float(v) for v in pixel_range)
    if channels_last and isinstance(net, torch.nn.Module):
        net.to(memory_format=torch.channels_last)

    def fn(x):
        with torch.inference_mode():
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            if bf16:
                with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16):
                    out = final_output(net(to_network_range(x, pixel_range)))
            else:
                out = final_output(net(to_network_range(x, pixel_range)))
            return check_engine_output(x, from_network_range(out.float().contiguous(), pixel_range))

    return fn


def check_engine_output(x, out):
    """Return ``out`` if it meets the engine contract for input ``x`` (B, 3, h, w): a tensor of the
    same batch, height and width, 3 channels, all values finite; raise ``ValueError`` naming both
    shapes otherwise. Both engines (PyTorch and ONNX Runtime) pass through :func:`network_function`.
    """
    if not torch.is_tensor(out) or out.ndim != 4 or out.shape[0] != x.shape[0] or out.shape[1] != x.shape[1] \
            or out.shape[2:] != x.shape[2:]:
        shape = tuple(out.shape) if hasattr(out, 'shape') else type(out).__name__
        raise ValueError(f'the network returned shape {shape} for an input of shape {tuple(x.shape)} '
                         '(expected the same batch, channels, height and width)')
    if not torch.isfinite(out).all():
        raise ValueError('the network returned NaN or inf values')
    return out


def resolve_network_settings(opt_file=None, weights=None, param_key=None, pixel_range=None):
    """(network options, pixel range, checkpoint, param key) of ``uniremoval-restore`` and
    ``uniremoval-export-onnx``: ``network_g``, ``pixel_range`` and ``path: pretrain_network_g`` /
    ``param_key_g`` of the option file ``opt_file`` unless given (``pixel_range``: ``'0,1'`` or ``'-1,1'``).
    """
    network_opt, range_, checkpoint = None, None, weights
    file_range = None
    if opt_file:
        opt = load_option_file(opt_file)
        network_opt = opt.get('network_g')
        if not isinstance(network_opt, dict):
            raise SetupError(f'option file {opt_file} has no network_g mapping')
        try:
            file_range = parse_pixel_range(opt) if 'pixel_range' in opt else None
        except ValueError as e:
            raise SetupError(f'{opt_file}: {e}') from e
        paths = opt.get('path') or {}
        checkpoint = checkpoint or paths.get('pretrain_network_g')
        if param_key is None and not weights:
            param_key = paths.get('param_key_g')
    flag_range = tuple(float(v) for v in pixel_range.split(',')) if pixel_range else None
    if not checkpoint:
        raise SetupError('no checkpoint: give -w CHECKPOINT (or --opt with path:pretrain_network_g)')
    record, official = _checkpoint_record(checkpoint)
    where = f'checkpoint {shown(checkpoint)}'
    try:
        network_opt = merge_setting('network_g', record and record['network_g'], network_opt, None, where,
                                    shown(opt_file or ''))
        range_ = merge_setting('pixel_range', record and tuple(record['pixel_range']), file_range, flag_range, where,
                               shown(opt_file or ''))
    except RecordConflict as e:
        raise SetupError(str(e)) from e
    range_ = tuple(float(v) for v in (range_ or (0.0, 1.0)))
    if official and range_ != (0.0, 1.0):
        logger.warning('%s is an official checkpoint (state_dict, no record): official MPRNet weights work in '
                       'pixel range [0, 1], not %s', shown(checkpoint), list(range_))
    return network_opt, range_, checkpoint, param_key or 'params_ema'


def _checkpoint_record(checkpoint):
    """(record or None, whether the file is an official state_dict checkpoint) of a .pth file; (None, False)
    for ONNX files and files that cannot be read here (load_network reports those)."""
    if checkpoint.lower().endswith('.onnx') or not osp.isfile(checkpoint):
        return None, False
    try:
        ckpt = torch.load(checkpoint, map_location='cpu', weights_only=True)
    except Exception:  # noqa: BLE001  (load_network names the file and the reason)
        return None, False
    try:
        record = read_record(ckpt, f'checkpoint {shown(checkpoint)}')
    except RecordConflict as e:
        raise SetupError(str(e)) from e
    return record, record is None and isinstance(ckpt, dict) and 'state_dict' in ckpt


def resolve_device(name, label='--device', allow_auto=True):
    """The ``torch.device`` named ``name`` (``cpu``, ``cuda``, ``cuda:N``; with ``allow_auto`` also
    ``auto``: CUDA when available); :class:`SetupError` starting with ``label`` otherwise, or when CUDA
    is named but not available. ``uniremoval-restore`` and the web page share it."""
    if allow_auto and name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise SetupError(f'{label} {name}: {e}') from e
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise SetupError(f'{label} {name}: CUDA is not available')
    if device.type not in ('cpu', 'cuda'):
        choices = 'auto, cpu, cuda or cuda:N' if allow_auto else 'cpu, cuda or cuda:N'
        raise SetupError(f'{label} must be {choices}, got {name}')
    return device


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


def check_input_values(img):
    """Raise ``ValueError`` if a float image holds NaN / inf or values outside [0, 1] (named in the message)."""
    if img.dtype.kind != 'f':
        return
    finite = np.isfinite(img)
    if not finite.all():
        raise ValueError(f'{int(img.size - np.count_nonzero(finite))} NaN or inf values in the image')
    low, high = float(img.min()), float(img.max())
    if low < 0 or high > 1:
        raise ValueError(f'float image values range over [{low:g}, {high:g}], expected [0, 1]')


def restore_image(net, img, tile=0, overlap=32, batch=1, multiple=1, pixel_range=(0.0, 1.0), device=None,
                  bgr=True, progress=False, channels_last=False, bf16=False, align=1):
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
        channels_last, bf16 (bool): inference fast paths, see :func:`network_function`.
        align (int): tile alignment, see :func:`~uniremoval.utils.tiling.tiled_forward`.

    Grey images go through the network as three equal channels and come back as the channel mean;
    the alpha channel is copied unchanged; the result is clipped to the input's range.

    Memory: the image is never converted whole. Each tile is read from ``img`` and converted to float
    on its own, the blended result comes back in bands of tile rows
    (:func:`~uniremoval.utils.tiling.tiled_bands`), and each band is converted to ``img``'s dtype into
    the preallocated result. So a tiled restore holds the image and the result in their own bit
    depth plus float sums for one band (a tile height by the image width) and the network's working
    set for ``batch`` tiles. The result equals converting the whole image to float, running
    :func:`~uniremoval.utils.tiling.tiled_forward` and converting back, bit for bit.
    """
    img = np.asarray(img)
    check_input_values(img)
    colour, alpha = _split_channels(img)
    grey = colour.shape[2] == 1
    _to_unit_float(colour[:0, :0])  # an unsupported dtype fails before the network runs
    result = np.empty(img.shape, dtype=colour.dtype)
    result_colour = result[..., None] if img.ndim == 2 else result[..., :colour.shape[2]]

    def read(n, rows, cols):
        x = _to_unit_float(colour[rows][:, cols])
        x = np.repeat(x, 3, axis=2) if grey else (x[..., ::-1] if bgr else x)
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))

    device = _module_device(net) if device is None else device
    fn = network_function(net, pixel_range, channels_last=channels_last, bf16=bf16)
    for _, top, bottom, band in tiled_bands(fn, read, (1, 3) + colour.shape[:2], tile, overlap, batch=batch,
                                            multiple=multiple, device=device, progress=progress, align=align):
        out = band.float().cpu().numpy().transpose(1, 2, 0)
        out = out.mean(axis=2, keepdims=True) if grey else (out[..., ::-1] if bgr else out)
        result_colour[top:bottom] = _from_unit_float(out, colour.dtype)
    if alpha is not None:
        result[..., -1:] = alpha
    return result


# ------------------------------------------------------------------------------------------
# Files
# ------------------------------------------------------------------------------------------
def image_size(path):
    """(width, height) from the image header without decoding the pixels, or None if PIL cannot read it."""
    try:
        with Image.open(path) as im:
            return im.size
    except Image.DecompressionBombError:
        raise
    except Exception:  # noqa: BLE001  (a format PIL lacks: OpenCV decodes it; its own limit is 2^30 pixels)
        return None


def check_pixel_budget(path, max_pixels=DEFAULT_MAX_PIXELS):
    """Raise ``ValueError`` naming the size and the budget if the header of ``path`` declares more than
    ``max_pixels`` pixels (``0``: no budget). Runs before any pixel is decoded."""
    if not max_pixels:
        return
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', Image.DecompressionBombWarning)
        old, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            size = image_size(path)
        finally:
            Image.MAX_IMAGE_PIXELS = old
    if size and size[0] * size[1] > max_pixels:
        raise ValueError(f'image of {size[0]}x{size[1]} = {size[0] * size[1]} pixels exceeds the pixel budget of '
                         f'{max_pixels} (--max-pixels)')


def read_image(path, max_pixels=DEFAULT_MAX_PIXELS):
    """Read an image unchanged (bit depth, grey, alpha); raises ``ValueError`` naming the reason.

    The header is checked against ``max_pixels`` (:func:`check_pixel_budget`) before decoding.
    """
    check_pixel_budget(path, max_pixels)
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
