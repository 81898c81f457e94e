"""Adaptive discriminative filters for specific degradations (ADS, Park et al., CVPR 2023, step 4).

CNN-ADS replaces every masked convolution's weight by (slides, "Method: Step 4")::

    theta_ads = theta_um + sum_d c_d * theta_d * M_d

with ``theta_um`` the unified model (UM), ``theta_d`` the degradation-specific weights, ``M_d`` the
mask of degradation ``d`` (:mod:`uniremoval.ads.selection`) and ``c`` the degradation probabilities
the classifier predicts per image. The selection unit is the OUTPUT FILTER, so ``M_d`` of a layer
is a set of output-channel indices ``index_d`` and ``theta_d`` a dense ``weight_d`` of shape
``[n_d, C_in / groups, kh, kw]``. Convolution is linear in its weight, so

    conv(x, theta_ads) = conv(x, theta_um) + scatter_add_over_channels(c_d[b] * conv(x, weight_d))

and :class:`AdaptiveConv2d` runs the UM convolution plus ONE small convolution over all selected
filters: the extra cost is proportional to the selected weights, with no per-sample copy of the
weight. Biases are not adapted. Maskable layers (:func:`is_maskable_conv`): exactly ``nn.Conv2d``,
with ``groups == 1`` or depthwise.

:class:`AdaptiveConv2d` takes over the UM convolution's own ``weight``/``bias`` (the state-dict keys
are unchanged) and adds ``layer.weight_{d}`` (parameters) and ``layer.index_{d}`` (buffers),
``d = 0..k-1``; :func:`split_adaptive_state_dict` separates the two. The condition ``c`` ([B, k]) is
set per forward with :func:`adaptive_condition`. Details: ``docs/design.md``, "ADS".
"""
import re
from collections.abc import Mapping, Sequence
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.modules.utils import _pair

_SPECIFIC_KEY = re.compile(r'^(weight|index)_(\d+)$')


def is_maskable_conv(module):
    """True for the convolutions ADS can mask: exactly ``nn.Conv2d`` (or an :class:`AdaptiveConv2d`),
    with ``groups == 1`` or depthwise (``groups == in_channels == out_channels``)."""
    if type(module) is not nn.Conv2d and not isinstance(module, AdaptiveConv2d):
        return False
    return module.groups == 1 or module.in_channels == module.out_channels == module.groups


def filter_size(conv):
    """Number of weights of one output filter: ``C_in / groups * kh * kw``."""
    return conv.weight[0].numel()


def maskable_convs(net):
    """``{name: conv}`` of every maskable convolution of ``net`` in module order (plain ``nn.Conv2d``
    with groups 1 or depthwise, and already converted :class:`AdaptiveConv2d` layers)."""
    convs = {}
    for name, module in net.named_modules():
        if is_maskable_conv(module):
            convs[name] = module
    return convs


def check_masks(masks, net, what='masks'):
    """Raise a clear error unless ``masks`` (``{layer: indices}``) names maskable convolutions of ``net``
    with unique indices in ``[0, C_out)``."""
    convs = maskable_convs(net)
    for name, idx in masks.items():
        if name not in convs:
            raise KeyError(f'{what}: layer {name!r} is not a maskable convolution of {type(net).__name__} '
                           f'(it has {len(convs)}, e.g. {list(convs)[:3]})')
        idx = torch.as_tensor(idx)
        if idx.dim() != 1 or (idx.numel() and idx.dtype not in (torch.int64, torch.int32)):
            raise ValueError(f'{what}: indices of {name!r} must be a 1-D integer tensor, got {idx.dtype} '
                             f'{tuple(idx.shape)}')
        if idx.numel():
            c_out = convs[name].out_channels
            if int(idx.min()) < 0 or int(idx.max()) >= c_out:
                raise ValueError(f'{what}: indices of {name!r} must lie in [0, {c_out}), got '
                                 f'[{int(idx.min())}, {int(idx.max())}]')
            if idx.unique().numel() != idx.numel():
                raise ValueError(f'{what}: indices of {name!r} contain duplicates')


class AdaptiveConv2d(nn.Conv2d):
    """A UM convolution plus degradation-specific output filters (CNN-ADS, slides step 4).

    Args:
        base (nn.Conv2d): the UM convolution (``theta_um``); its ``weight`` and ``bias`` parameters
            become this module's (same tensors), so state-dict keys stay as in the UM.
        num_degradations (int): k, the number of degradation types.

    Per degradation ``d``: parameter ``weight_{d}`` ``[n_d, C_in/groups, kh, kw]`` (``theta_d`` on
    the selected filters) and buffer ``index_{d}`` (LongTensor ``[n_d]``, sorted output-channel
    indices: the mask ``M_d``). Set them with :meth:`set_selection`. The condition ``c`` ([B, k])
    comes from :func:`adaptive_condition`; forwarding with selected filters and no condition raises.
    """

    def __init__(self, base, num_degradations):
        if not is_maskable_conv(base):
            raise TypeError(f'AdaptiveConv2d: {base!r} is not a maskable convolution (plain nn.Conv2d with groups == 1 '
                            'or depthwise groups == in_channels == out_channels)')
        if int(num_degradations) < 1:
            raise ValueError(f'AdaptiveConv2d: num_degradations must be >= 1, got {num_degradations}')
        super().__init__(
            base.in_channels, base.out_channels, base.kernel_size, stride=base.stride, padding=base.padding,
            dilation=base.dilation, groups=base.groups, bias=base.bias is not None, padding_mode=base.padding_mode,
            device='meta', dtype=base.weight.dtype)
        self.weight = base.weight
        self.bias = base.bias
        self.num_degradations = int(num_degradations)
        self.condition = None  # set by adaptive_condition(); not part of the state dict
        shape = tuple(base.weight.shape[1:])
        for d in range(self.num_degradations):
            self.register_parameter(f'weight_{d}', nn.Parameter(base.weight.new_zeros((0, ) + shape)))
            self.register_buffer(f'index_{d}', torch.zeros(0, dtype=torch.long, device=base.weight.device))

    # -------------------------------------------------------------------------------- selection
    def specific_weight(self, d):
        return getattr(self, f'weight_{d}')

    def selected_index(self, d):
        return getattr(self, f'index_{d}')

    @property
    def num_selected(self):
        """Selected filters over all degradations (a filter chosen by two degradations counts twice)."""
        return sum(self.selected_index(d).numel() for d in range(self.num_degradations))

    def set_selection(self, d, indices, weight=None):
        """Select output filters ``indices`` for degradation ``d``; ``weight`` (``[n, C_in/groups, kh, kw]``)
        initialises ``theta_d`` on them (zeros if None). Replaces the parameter ``weight_{d}``."""
        if not 0 <= d < self.num_degradations:
            raise IndexError(f'AdaptiveConv2d: degradation index {d} out of range 0..{self.num_degradations - 1}')
        indices = torch.as_tensor(indices, dtype=torch.long).flatten().cpu()
        if indices.numel():
            if int(indices.min()) < 0 or int(indices.max()) >= self.out_channels:
                raise ValueError(f'AdaptiveConv2d: filter indices must lie in [0, {self.out_channels}), got '
                                 f'min {int(indices.min())}, max {int(indices.max())}')
            if indices.unique().numel() != indices.numel():
                raise ValueError('AdaptiveConv2d: filter indices contain duplicates')
        indices, order = torch.sort(indices)
        shape = (indices.numel(), ) + tuple(self.weight.shape[1:])
        if weight is None:
            weight = self.weight.new_zeros(shape)
        else:
            weight = torch.as_tensor(weight).detach()
            if tuple(weight.shape) != shape:
                raise ValueError(f'AdaptiveConv2d: specific weight for degradation {d} must have shape {shape}, '
                                 f'got {tuple(weight.shape)}')
            weight = weight[order.to(weight.device)].to(device=self.weight.device, dtype=self.weight.dtype).clone()
        self.register_parameter(f'weight_{d}', nn.Parameter(weight))
        self.register_buffer(f'index_{d}', indices.to(self.weight.device))

    def specific_parameters(self):
        return [self.specific_weight(d) for d in range(self.num_degradations)]

    # -------------------------------------------------------------------------------- forward
    def _conv(self, x, weight, groups):
        if self.padding_mode != 'zeros':
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return F.conv2d(x, weight, None, self.stride, _pair(0), self.dilation, groups)
        return F.conv2d(x, weight, None, self.stride, self.padding, self.dilation, groups)

    def _selection_tables(self):
        """Concatenated indices of all degradations and the degradation of each, cached until the
        index buffers change (set_selection, load_state_dict, .to())."""
        indices = [self.selected_index(d) for d in range(self.num_degradations)]
        key = tuple((t.data_ptr(), t._version, t.numel(), t.device) for t in indices)
        if getattr(self, '_tables_key', None) != key:
            counts = torch.tensor([t.numel() for t in indices], device=indices[0].device)
            degradation = torch.repeat_interleave(torch.arange(self.num_degradations, device=counts.device), counts)
            self._tables = (torch.cat(indices), degradation)
            self._tables_key = key
        return self._tables

    def forward(self, x):
        out = self._conv_forward(x, self.weight, self.bias)
        if self.num_selected == 0:
            return out
        c = self.condition
        if c is None:
            raise RuntimeError('AdaptiveConv2d has selected filters but no condition: run the network inside '
                               'uniremoval.ads.adaptive_conv.adaptive_condition(net, c) (ADSNet.forward does this)')
        if c.dim() != 2 or c.shape[0] != x.shape[0] or c.shape[1] != self.num_degradations:
            raise ValueError(f'AdaptiveConv2d: condition must have shape [B, k] = [{x.shape[0]}, '
                             f'{self.num_degradations}], got {tuple(c.shape)}')
        index, degradation = self._selection_tables()
        weight = torch.cat([w for w in self.specific_parameters() if w.shape[0]])
        if self.groups == 1:
            extra = self._conv(x, weight, 1)
        else:  # depthwise: filter j reads input channel j only
            extra = self._conv(x.index_select(1, index), weight, index.numel())
        scale = c.to(extra.dtype).index_select(1, degradation)[:, :, None, None]
        # in place: the convolution's backward does not need its output, and no copy of it is made
        return out.index_add_(1, index, extra * scale)

    def extra_repr(self):
        counts = [self.selected_index(d).numel() for d in range(self.num_degradations)]
        return f'{super().extra_repr()}, selected={counts}'


def merged_weight(conv, c_single):
    """Reference merge of one condition vector ``c_single`` ([k]): ``theta_um + sum_d c_d theta_d M_d``
    as a full ``[C_out, C_in/groups, kh, kw]`` weight (for tests and export, not for the forward)."""
    c_single = torch.as_tensor(c_single, dtype=conv.weight.dtype, device=conv.weight.device).flatten()
    if c_single.numel() != conv.num_degradations:
        raise ValueError(f'merged_weight: condition must have {conv.num_degradations} entries, got {c_single.numel()}')
    weight = conv.weight.clone()
    for d in range(conv.num_degradations):
        weight = weight.index_add(0, conv.selected_index(d), c_single[d] * conv.specific_weight(d))
    return weight


def adaptive_convs(net):
    """``{name: AdaptiveConv2d}`` of ``net`` in module order."""
    return {name: m for name, m in net.named_modules() if isinstance(m, AdaptiveConv2d)}


@contextmanager
def adaptive_condition(net, condition):
    """Set the condition ``c`` ([B, k]) of every :class:`AdaptiveConv2d` in ``net`` for the duration
    of the block, restoring the previous values afterwards (nesting works)."""
    convs = list(adaptive_convs(net).values())
    previous = [m.condition for m in convs]
    try:
        for m in convs:
            m.condition = condition
        yield
    finally:
        for m, value in zip(convs, previous):
            m.condition = value


def _normalise_masks(masks, num_degradations, degradations=None):
    """Masks as a list of ``k`` dicts ``{layer: indices}``: accepts None, a sequence of dicts, or a
    mapping ``{degradation name: {layer: indices}}`` (ordered by ``degradations`` when given)."""
    if masks is None:
        return [{} for _ in range(num_degradations)]
    if isinstance(masks, Mapping):
        names = list(masks) if degradations is None else list(degradations)
        missing = [n for n in names if n not in masks]
        extra = [n for n in masks if n not in names]
        if missing or extra:
            raise KeyError(f'masks: degradations {list(masks)} do not match the expected {names} '
                           f'(missing {missing}, unexpected {extra})')
        masks = [masks[n] for n in names]
    elif not isinstance(masks, Sequence):
        raise TypeError(f'masks must be None, a list of {{layer: indices}} dicts or a {{degradation: ...}} mapping, '
                        f'got {type(masks).__name__}')
    masks = list(masks)
    if len(masks) != num_degradations:
        raise ValueError(f'masks hold {len(masks)} degradations, expected num_degradations={num_degradations}')
    return [dict(m) for m in masks]


def _weights_of(target, name):
    """The weight of layer ``name`` in a target network (module) or state dict."""
    key = f'{name}.weight'
    if isinstance(target, nn.Module):
        state = dict(target.named_parameters())
    else:
        state = target
    if key not in state:
        raise KeyError(f'convert_to_adaptive: target model has no parameter {key!r}')
    return state[key].detach()


def convert_to_adaptive(net, masks, num_degradations, init='zero', degradations=None):
    """Replace every maskable convolution of ``net`` in place by an :class:`AdaptiveConv2d`.

    Every maskable convolution is converted, also those with no selected filter (they keep 0
    selected filters and compute exactly the UM convolution), so all CNN-ADS networks of one backbone
    have the same state-dict keys.

    Args:
        net (nn.Module): the UM backbone.
        masks: None (nothing selected), a list of ``k`` dicts ``{layer name: LongTensor indices}``,
            or a mapping ``{degradation name: {layer name: indices}}`` (see ``degradations``).
        num_degradations (int): k.
        init: ``'zero'`` (``theta_d = 0``) or a list of ``k`` target models (modules or state dicts
            with the backbone's keys): ``theta_d = theta_target_d - theta_um`` on the selected
            filters, so that a one-hot ``c = e_d`` reproduces the target model's weights there.
        degradations (list[str] | None): order of the degradations when ``masks`` is a mapping.

    Returns:
        dict[str, AdaptiveConv2d]: the converted layers by name.
    """
    k = int(num_degradations)
    masks = _normalise_masks(masks, k, degradations)
    for d, layer_masks in enumerate(masks):
        check_masks(layer_masks, net, what=f'mask of degradation {d}')
    targets = None
    if not (isinstance(init, str) and init == 'zero'):
        if isinstance(init, str) or not isinstance(init, Sequence) or len(init) != k:
            raise ValueError(f"convert_to_adaptive: init must be 'zero' or a list of {k} target models/state dicts")
        targets = list(init)

    convs = {name: m for name, m in net.named_modules() if is_maskable_conv(m)}
    already = [name for name, m in convs.items() if isinstance(m, AdaptiveConv2d)]
    if already:
        raise ValueError(f'convert_to_adaptive: the network already has adaptive convolutions ({already[:3]} ...)')
    converted, by_id = {}, {}
    for name, conv in convs.items():
        adaptive = AdaptiveConv2d(conv, k)
        for d in range(k):
            indices = masks[d].get(name)
            if indices is None or len(indices) == 0:
                continue
            indices = torch.as_tensor(indices, dtype=torch.long).cpu()
            weight = None
            if targets is not None:
                idx = indices.to(conv.weight.device)
                target_weight = _weights_of(targets[d], name).to(conv.weight.device)
                if target_weight.shape != conv.weight.shape:
                    raise ValueError(f'convert_to_adaptive: target {d} weight {name}.weight has shape '
                                     f'{tuple(target_weight.shape)}, the UM has {tuple(conv.weight.shape)}')
                weight = (target_weight - conv.weight.detach()).index_select(0, idx)
            adaptive.set_selection(d, indices, weight)
        converted[name] = adaptive
        by_id[id(conv)] = adaptive
    # replace every reference (a module reused under two names is replaced under both)
    for parent in list(net.modules()):
        for child_name, child in list(parent._modules.items()):
            if id(child) in by_id:
                setattr(parent, child_name, by_id[id(child)])
    return converted


def split_adaptive_state_dict(state_dict, net):
    """Split a state dict of a network with adaptive convolutions into ``(um, specific)``: the UM part
    has exactly the plain backbone's keys (``weight_{d}``/``index_{d}`` of adaptive layers removed)."""
    names = set(adaptive_convs(net))
    um, specific = {}, {}
    for key, value in state_dict.items():
        module, _, leaf = key.rpartition('.')
        if module in names and _SPECIFIC_KEY.match(leaf):
            specific[key] = value
        else:
            um[key] = value
    return um, specific


def resize_to_state_dict(net, state_dict, prefix=''):
    """Give every adaptive layer of ``net`` the number of selected filters found in ``state_dict``
    (keys ``{prefix}{layer}.index_{d}``), so that a checkpoint with other masks loads with
    ``strict=True``: the checkpoint carries its own masks. Layers absent from it are left as they are."""
    for name, conv in adaptive_convs(net).items():
        for d in range(conv.num_degradations):
            key = f'{prefix}{name}.index_{d}'
            if key in state_dict and state_dict[key].shape != conv.selected_index(d).shape:
                conv.set_selection(d, torch.arange(state_dict[key].numel()))
