"""ONNX export of the restoration networks and inference through ONNX Runtime (the deployment engine).

* :func:`export_onnx` writes one ``.onnx`` file for a network (MPRNet, NAFNet, MSBDN-DFF/RDFF, CNN-ADS
  with its classifier, or any registered image-to-image network) with dynamic batch, height and width.
  The graph is :class:`RestorationGraph`: [0, 1] RGB in, the final restored image in [0, 1] out (the
  network's ``pixel_range`` mapping of :mod:`uniremoval.utils.pixel_range` is folded in, stage outputs
  other than the final one are dropped).
* :class:`OnnxNetwork` runs such a file with ONNX Runtime and is a drop-in ``net`` for
  :func:`uniremoval.restoration.restore_image` (``uniremoval-restore --engine onnxruntime``).
* ``uniremoval-export-onnx`` (:mod:`uniremoval.commands.export_onnx`) exports a checkpoint and checks it.

Dynamic sizes: the networks pad their input to a multiple of their downsampling factor themselves
(:func:`uniremoval.utils.padding.pad_to_multiple`: MPRNet 8, NAFNet ``padder_size``, MSBDN 16), then
split (MPRNet's halves and quarters) and crop with sizes computed from the input shape. The TorchScript
tracer records those shape computations as graph operations only when they actually happen, so the
network is traced on an example whose sides are *not* multiples (``k * multiple - 1``): the padding
amounts, the split points and the crop are then operations of the graph, evaluated for every input
size, and one file serves every height and width (tested at several sizes against PyTorch). Python
branches are frozen at their traced value: the reflect/replicate choice of ``pad_to_multiple``
(reflect, valid when each side is larger than its padding) and MSBDN's small-input branch (sides of at
least 17). :class:`OnnxNetwork` therefore pads inputs smaller than the file's ``min_size`` itself,
as the PyTorch networks do, before running them, and crops the result (:func:`small_input_rule`).

Requires the optional dependencies ``onnx`` and ``onnxruntime`` (``pip install uniremoval[onnx]``);
imported only when used.
"""
import io
import json
import sys
import warnings

import numpy as np
import torch
from torch import nn

from uniremoval.utils.atomic_io import atomic_open
from uniremoval.utils.errors import UsageError
from uniremoval.utils.padding import pad_to_multiple
from uniremoval.utils.pixel_range import final_output, from_network_range, to_network_range

INPUT_NAME = 'input'
OUTPUT_NAME = 'output'
DEFAULT_OPSET = 17
METADATA_KEY = 'uniremoval'
# Parity of ONNX Runtime against PyTorch eager (float32), the bound of tests/test_onnx_export.py.
PARITY_TOLERANCE = 1e-4


class OnnxSetupError(UsageError, RuntimeError):
    """ONNX export or ONNX Runtime cannot be used (missing package, unreadable file, bad provider)."""


def _import_onnx():
    try:
        import onnx
    except ImportError as e:
        raise OnnxSetupError('ONNX export needs the package onnx: pip install "uniremoval[onnx]"') from e
    return onnx


def _import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as e:
        raise OnnxSetupError('the onnxruntime engine needs the package onnxruntime: '
                             'pip install "uniremoval[onnx]"') from e
    return onnxruntime


# ------------------------------------------------------------------------------------------
# Size constraints of the networks
# ------------------------------------------------------------------------------------------
def _restoration_backbone(net):
    """The image network inside a wrapper (CNN-ADS keeps its UM in ``backbone``)."""
    return getattr(net, 'backbone', net) if isinstance(getattr(net, 'backbone', None), nn.Module) else net


def size_multiple(net):
    """Side multiple that ``net`` pads its input to: ``net.padder_size`` (NAFNet), ``net.size_multiple``
    or the ``SIZE_MULTIPLE`` of its arch module (MPRNet 8, MSBDN 16); 1 when none is known."""
    net = _restoration_backbone(net)
    for attr in ('size_multiple', 'padder_size'):
        value = getattr(net, attr, None)
        if isinstance(value, int) and value >= 1:
            return value
    return int(getattr(sys.modules.get(type(net).__module__), 'SIZE_MULTIPLE', 1))


def small_input_rule(net):
    """(min_size, small_multiple): inputs with a side below ``min_size`` take another path in PyTorch
    than the traced one (MSBDN: sides <= ``MIN_SIZE - SIZE_MULTIPLE`` = 16 pad to ``MIN_SIZE`` = 32;
    any network: sides below its size multiple are replicate-padded). :class:`OnnxNetwork` pads them
    itself, as PyTorch does, with ``pad_to_multiple(x, small_multiple)``."""
    net = _restoration_backbone(net)
    multiple = size_multiple(net)
    module_min = int(getattr(sys.modules.get(type(net).__module__), 'MIN_SIZE', 0))
    if module_min > multiple:
        return max(multiple, module_min - multiple + 1), module_min
    return multiple, multiple


# ------------------------------------------------------------------------------------------
# Export
# ------------------------------------------------------------------------------------------
class RestorationGraph(nn.Module):
    """What is exported: ``net``'s final output for a [0, 1] image, in [0, 1].

    Args:
        net (nn.Module): returns a tensor or a list of stage outputs, final first (MPRNet).
        pixel_range (tuple): the network's range, ``(0, 1)`` or ``(-1, 1)``.
    """

    def __init__(self, net, pixel_range=(0.0, 1.0)):
        super().__init__()
        self.net = net
        self.pixel_range = tuple(float(v) for v in pixel_range)

    def forward(self, x):
        return from_network_range(final_output(self.net(to_network_range(x, self.pixel_range))), self.pixel_range)


def _index_add_symbolic(g, self, dim, index, source, alpha=None):
    """``aten::index_add`` as ONNX ``ScatterElements`` with ``reduction='add'`` (opset >= 16).

    The exporter's own translation scatters without accumulating, so repeated indices (CNN-ADS: a
    filter selected for several degradations gets the sum of their contributions,
    :class:`uniremoval.ads.adaptive_conv.AdaptiveConv2d`) would keep only one of them.
    """
    from torch.onnx import symbolic_helper

    dim = symbolic_helper._parse_arg(dim, 'i')
    rank = symbolic_helper._get_tensor_rank(source)
    if rank is None:
        raise OnnxSetupError('ONNX export of index_add needs a source of known rank')
    dim = dim % rank
    if alpha is not None and symbolic_helper._maybe_get_const(alpha, 'f') not in (1, 1.0):
        source = g.op('Mul', source, alpha)
    shape = [1] * rank
    shape[dim] = -1
    index = g.op('Reshape', index, g.op('Constant', value_t=torch.tensor(shape, dtype=torch.long)))
    index = g.op('Expand', index, g.op('Shape', source))
    return g.op('ScatterElements', self, index, source, axis_i=dim, reduction_s='add')


def example_size(net):
    """(height, width) of the tracing example: ``k * multiple - 1`` pixels, so padding is traced."""
    multiple = size_multiple(net)
    base = max(64, small_input_rule(net)[1] + multiple)
    rows = -(-base // multiple) + 1
    if multiple == 1:
        return base, base + 8
    return rows * multiple - 1, (rows + 1) * multiple - 1


def export_onnx(net, path, pixel_range=(0.0, 1.0), opset=DEFAULT_OPSET, network_name=None):
    """Export ``net`` (eval mode, CPU) as an ONNX file with dynamic batch, height and width.

    The file is written atomically and carries metadata (``metadata_props['uniremoval']``, JSON):
    the network name, its size multiple and minimum side, the opset and ``pixel_range`` (already
    folded into the graph: the file maps [0, 1] to [0, 1]).

    Returns:
        dict: the metadata written.
    """
    onnx = _import_onnx()
    net = net.eval().cpu()
    graph = RestorationGraph(net, pixel_range).eval()
    height, width = example_size(net)
    example = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0))
    buffer = io.BytesIO()
    dynamic = {0: 'batch', 2: 'height', 3: 'width'}
    if opset < 16:
        raise OnnxSetupError(f'opset {opset}: at least 16 is needed (ScatterElements with reduction)')
    torch.onnx.register_custom_op_symbolic('aten::index_add', _index_add_symbolic, opset)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # The tracer warns about every Python branch on a shape; they are documented in the module.
            warnings.simplefilter('ignore')
            torch.onnx.export(graph, (example, ), buffer, dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_axes={INPUT_NAME: dynamic, OUTPUT_NAME: dynamic}, do_constant_folding=True)
    finally:
        torch.onnx.unregister_custom_op_symbolic('aten::index_add', opset)
    model = onnx.load_from_string(buffer.getvalue())
    smallest, small_multiple = small_input_rule(net)
    meta = {'network': network_name or type(net).__name__, 'size_multiple': size_multiple(net),
            'min_size': smallest, 'small_multiple': small_multiple, 'opset': opset,
            'pixel_range': list(graph.pixel_range),
            'io': '[0, 1] RGB (N, 3, H, W) float32 -> final restored image in [0, 1]'}
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta)
    onnx.checker.check_model(model)
    with atomic_open(str(path), 'wb') as f:
        f.write(model.SerializeToString())
    return meta


# ------------------------------------------------------------------------------------------
# Inference through ONNX Runtime
# ------------------------------------------------------------------------------------------
class OnnxNetwork:
    """An exported ``.onnx`` file run by ONNX Runtime, callable like a network on (B, 3, h, w) tensors in
    [0, 1] (its ``pixel_range`` is therefore ``(0, 1)``); returns a float32 tensor on the input's device.

    Args:
        path (str): the file written by :func:`export_onnx`.
        device: ``cpu`` (CPUExecutionProvider) or ``cuda[:N]`` (CUDAExecutionProvider, when installed).
        threads (int | None): intra-op threads; default ``torch.get_num_threads()``.
    """

    pixel_range = (0.0, 1.0)

    def __init__(self, path, device='cpu', threads=None):
        ort = _import_onnxruntime()
        device = torch.device(device)
        if device.type == 'cuda':
            if 'CUDAExecutionProvider' not in ort.get_available_providers():
                raise OnnxSetupError(f'onnxruntime has no CUDAExecutionProvider (available: '
                                     f'{ort.get_available_providers()}); install onnxruntime-gpu or use --device cpu')
            providers = [('CUDAExecutionProvider', {'device_id': device.index or 0}), 'CPUExecutionProvider']
        elif device.type == 'cpu':
            providers = ['CPUExecutionProvider']
        else:
            raise OnnxSetupError(f'onnxruntime engine: unsupported device {device}')
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as e:  # noqa: BLE001  (ONNX Runtime raises its own exception types)
            raise OnnxSetupError(f'cannot load ONNX file {path}: {e}') from e
        self.path = str(path)
        meta = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        self.metadata = json.loads(meta) if meta else {}
        self.size_multiple = int(self.metadata.get('size_multiple', 1))
        self.min_size = int(self.metadata.get('min_size', 1))
        self.small_multiple = int(self.metadata.get('small_multiple', self.size_multiple))
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x):
        if x.dim() != 4:
            raise ValueError(f'expected a (B, C, H, W) tensor, got shape {tuple(x.shape)}')
        height, width = x.shape[-2:]
        if min(height, width) < self.min_size:  # PyTorch's path for small inputs (see small_input_rule)
            x = pad_to_multiple(x, self.small_multiple)
        array = np.ascontiguousarray(x.detach().float().cpu().numpy())
        out = torch.from_numpy(self.session.run(None, {self.input_name: array})[0])
        if out.shape[-2:] == x.shape[-2:]:  # crop only the padding; any other shape is left for the contract check
            out = out[..., :height, :width]
        return out.to(x.device)

    def __repr__(self):
        return f'OnnxNetwork({self.path!r}, {self.session.get_providers()[0]})'


def max_abs_difference(net, onnx_net, sizes, pixel_range=(0.0, 1.0), seed=0):
    """Largest |ONNX Runtime - PyTorch| over random [0, 1] images of the given (height, width) sizes."""
    graph = RestorationGraph(net, pixel_range).eval()
    generator = torch.Generator().manual_seed(seed)
    worst = 0.0
    for height, width in sizes:
        x = torch.rand(1, 3, height, width, generator=generator)
        with torch.inference_mode():
            reference = graph(x)
        worst = max(worst, (onnx_net(x) - reference).abs().max().item())
    return worst
