"""The library behind ``uniremoval-app``, without any user interface: load a model, restore uploaded files.

It uses the functions ``uniremoval-restore`` uses (:func:`~uniremoval.restoration.load_network`,
:func:`~uniremoval.restoration.resolve_network_settings`, :func:`~uniremoval.restoration.read_image`,
:func:`~uniremoval.restoration.restore_image`, :func:`~uniremoval.restoration.write_image`, the ONNX Runtime
engine of :mod:`uniremoval.onnx_export`), so both give the same pixels for the same checkpoint and tile
settings. What it adds on top:

* :func:`demo_model_settings`: the shipped demo network (the KT student of ``uniremoval/demo/checkpoints``),
  the default model, so a fresh install restores images with nothing downloaded.
* :func:`load_model`: a :class:`Model` from a checkpoint (``.pth``: BasicSR, official MPRNet, ADS; ``.onnx``)
  and an optional option file, on a device, with the engine ``pytorch`` or ``onnxruntime``.
* :func:`restore_file`: one file -> :class:`Result` (restored array, PNG written in a folder, seconds, the ADS
  classifier's probabilities), never raising for a bad image: the error message is in the result, so a
  batch goes on with its other images.
* :func:`classifier_probabilities`: for an ADS network with a classifier, ``softmax(classifier(x))`` of
  the whole image per degradation name. Other networks (MPRNet teachers, the KT/DA students) report
  nothing: which teacher a student imitates is not something the network states.
"""
import time
from dataclasses import dataclass, field
from os import path as osp

import numpy as np
import torch

from uniremoval.archs.ads_arch import ADSNet
from uniremoval.demo.shipped import CHECKPOINT_DIR, checkpoint_file
from uniremoval.options import load_option_file
from uniremoval.restoration import (SetupError, load_network, read_image, resolve_device, resolve_network_settings,
                                    restore_image, write_image)
from uniremoval.utils.pixel_range import parse_pixel_range, to_network_range
from uniremoval.utils.tiling import tile_starts

DEMO_STAGE = 'kt'
DEMO_OPTIONS = 'pretrain_kt_student.yml'
ENGINES = ('pytorch', 'onnxruntime')


@dataclass
class Model:
    """A loaded network: ``net`` (an ``nn.Module`` or an ONNX Runtime network), its pixel range, the engine,
    the checkpoint it came from, and the device."""
    net: object
    pixel_range: tuple
    engine: str
    checkpoint: str
    device: torch.device
    description: str = ''


@dataclass
class Result:
    """What restoring one file gave: ``image`` (same shape and dtype as the input) and ``output`` (the PNG
    written), or ``error`` (a one-line message naming the file); ``seconds`` of restoration;
    ``probabilities`` ``{degradation: p}`` for an ADS network with a classifier, else ``{}``."""
    name: str
    image: np.ndarray = None
    output: str = None
    error: str = None
    seconds: float = 0.0
    probabilities: dict = field(default_factory=dict)

    @property
    def ok(self):
        return self.error is None


def available_engines():
    """The engines installed: ``pytorch`` always, ``onnxruntime`` when it imports."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return ('pytorch', )
    return ENGINES


def available_devices():
    """``cpu`` and, when CUDA is available, ``cuda:N`` for each GPU."""
    return ['cpu'] + [f'cuda:{i}' for i in range(torch.cuda.device_count())]


def demo_model_settings():
    """(checkpoint, option file) of the shipped demo network (the KT student; an MPRNet in [0, 1])."""
    return checkpoint_file(DEMO_STAGE), osp.join(CHECKPOINT_DIR, DEMO_OPTIONS)


def load_model(checkpoint=None, opt_file=None, engine='auto', device='cpu', param_key=None):
    """Load a :class:`Model`, the way ``uniremoval-restore`` does.

    Args:
        checkpoint (str | None): ``.pth`` or ``.onnx``; None with no ``opt_file``: the shipped demo network.
        opt_file (str | None): BasicSR option file whose ``network_g`` and ``pixel_range`` describe the
            network; optional for an ``.onnx`` file and for the paper's default MPRNet.
        engine (str): ``auto`` (``onnxruntime`` for an ``.onnx`` file, else ``pytorch``), ``pytorch`` or
            ``onnxruntime``.
        device (str): ``cpu``, ``cuda`` or ``cuda:N``.

    Raises :class:`~uniremoval.restoration.SetupError` (a usage error) with a message naming the file.
    """
    if checkpoint is None and opt_file is None:
        checkpoint, opt_file = demo_model_settings()
        description = 'shipped demo network (KT student, MPRNet)'
    else:
        description = osp.basename(checkpoint or opt_file)
    device = resolve_device(device or 'cpu', label='device', allow_auto=False)
    network_opt, pixel_range, checkpoint, param_key = resolve_network_settings(opt_file, checkpoint, param_key)
    is_onnx = checkpoint.lower().endswith('.onnx')
    engine = engine if engine not in (None, 'auto') else ('onnxruntime' if is_onnx else 'pytorch')
    if engine not in ENGINES:
        raise SetupError(f'engine must be auto, pytorch or onnxruntime, got {engine}')
    if engine == 'pytorch':
        if is_onnx:
            raise SetupError(f'{checkpoint} is an ONNX file: choose the engine onnxruntime')
        if not osp.isfile(checkpoint):
            raise SetupError(f'checkpoint {checkpoint} does not exist')
        try:
            net = load_network(checkpoint, network_opt, param_key, device)
        except (OSError, KeyError, ValueError) as e:
            raise SetupError(f'cannot load {checkpoint}: {e}') from e
        return Model(net, pixel_range, engine, checkpoint, device, description)
    if not is_onnx:
        raise SetupError(f'the onnxruntime engine runs an .onnx file, got {checkpoint}')
    from uniremoval.onnx_export import OnnxNetwork, OnnxSetupError
    try:
        return Model(OnnxNetwork(checkpoint, device), OnnxNetwork.pixel_range, engine, checkpoint, device,
                     description)
    except OnnxSetupError as e:
        raise SetupError(str(e)) from e


def option_pixel_range(opt_file):
    """The ``pixel_range`` of an option file (a convenience for callers that show it)."""
    return parse_pixel_range(load_option_file(opt_file))


def count_tiles(height, width, tile, overlap):
    """How many tiles :func:`~uniremoval.restoration.restore_image` runs for an image (1 when ``tile`` is 0)."""
    if not tile:
        return 1
    return len(tile_starts(height, tile, overlap)) * len(tile_starts(width, tile, overlap))


class _CountingNetwork:
    """``net`` as a callable that reports each call (one per tile batch) to ``callback(done, total)``."""

    def __init__(self, net, total, callback):
        self.net, self.total, self.callback, self.done = net, total, callback, 0

    def __call__(self, x):
        out = self.net(x)
        self.done += x.shape[0]
        self.callback(min(self.done, self.total), self.total)
        return out


def classifier_probabilities(model, img):
    """``{degradation: probability}`` of the ADS classifier for the whole image ``img`` (BGR as read), or
    ``{}`` for a network without one (including the ONNX engine, which exports only the restoration)."""
    net = model.net
    if not isinstance(net, ADSNet) or net.classifier is None:
        return {}
    x = img.astype(np.float32) / (65535 if img.dtype == np.uint16 else 255 if img.dtype == np.uint8 else 1)
    if x.ndim == 2:
        x = x[..., None]
    x = np.repeat(x[..., :1], 3, axis=2) if x.shape[2] in (1, 2) else x[..., 2::-1]
    tensor = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None].to(model.device)
    with torch.inference_mode():
        p = net.predict_condition(to_network_range(tensor, model.pixel_range))[0].float().cpu().tolist()
    return dict(zip(net.degradations, p))


def restore_file(model, path, out_folder, tile=512, overlap=32, progress=None, name=None):
    """Restore the image file ``path`` with ``model`` into ``out_folder/<stem>_restored.png``.

    PNG keeps 8- and 16-bit inputs at their depth, grey and alpha. ``progress(done, total)`` is called after
    each tile. A file that is not an image, is truncated, has too many pixels or non-finite values, or fails in
    the network gives a :class:`Result` with ``error`` set; nothing is raised, so a batch goes on.
    """
    name = name or osp.basename(path)
    try:
        img = read_image(path)
        if img.dtype.kind == 'f' and not np.isfinite(img).all():
            raise ValueError('the image has NaN or infinite values')
        total = count_tiles(img.shape[0], img.shape[1], tile, overlap)
        net = _CountingNetwork(model.net, total, progress) if progress else model.net
        start = time.perf_counter()
        out = restore_image(net, img, tile=tile, overlap=overlap, pixel_range=model.pixel_range, device=model.device)
        probabilities = classifier_probabilities(model, img)
        seconds = time.perf_counter() - start
        output = osp.join(out_folder, osp.splitext(name)[0] + '_restored.png')
        write_image(output, out)
    except Exception as e:  # noqa: BLE001  (one bad image must not stop the batch)
        if isinstance(e, torch.cuda.OutOfMemoryError):
            torch.cuda.empty_cache()
            return Result(name, error=f'{name}: out of GPU memory; try a smaller tile size')
        return Result(name, error=f'{name}: {str(e) or type(e).__name__}')
    return Result(name, image=out, output=output, seconds=seconds, probabilities=probabilities)
