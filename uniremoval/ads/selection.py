"""Filter selection for ADS (Park et al., CVPR 2023, step 2) and the slides' selection baselines.

Unit: the OUTPUT FILTER of a maskable convolution (:func:`uniremoval.ads.adaptive_conv.is_maskable_conv`);
a filter's score is the sum of its per-kernel scores; biases are never scored.

Top-q% per layer (the slides: q = 1..5, 3 by default): a layer with ``C_out`` filters keeps
``n_l = floor(q / 100 * C_out + 1/2)`` filters (round half up, exact decimal arithmetic), the
highest scores, ties broken by the lower index (:func:`select_top_q`).

:func:`compute_scores` gives the scores of one method of the slides' comparison table:

* ``faig``: FAIG-SD (:func:`uniremoval.ads.faig.faig_scores`), the paper's;
* ``weight_diff``: ``|theta_um - theta_d|`` summed over the filter (:func:`weight_difference_scores`);
* ``random``: uniform random scores (:func:`random_scores`);
* ``encoder_only``: random scores on the encoder layers only; :func:`masks_for` then selects the
  same total number of weights as top-q over all layers (:func:`top_q_weight_budget`), inside the
  encoder (:func:`select_within_budget`).

Mask files (:func:`save_masks`, :func:`load_masks`) are ``torch.save`` dicts read with
``weights_only=True``::

    {'format': 'uniremoval-ads-masks/1', 'unit': 'output_filter', 'q': float, 'method': str,
     'degradations': [names], 'masks': {deg: {layer: LongTensor}}, 'scores': {deg: {layer: FloatTensor}},
     'meta': {...}}
"""
import math
from collections.abc import Mapping
from fractions import Fraction

import torch

from uniremoval.ads.adaptive_conv import AdaptiveConv2d, check_masks, filter_size, maskable_convs
from uniremoval.ads.faig import faig_scores
from uniremoval.utils.atomic_io import atomic_open

MASK_FORMAT = 'uniremoval-ads-masks/1'
MASK_UNIT = 'output_filter'
_REQUIRED_KEYS = ('format', 'unit', 'q', 'method', 'degradations', 'masks', 'scores')
#: The selection methods of the slides' comparison table: FAIG-SD (the paper's), |theta_um - theta_d|, random,
#: encoder-only.
METHODS = ('faig', 'weight_diff', 'random', 'encoder_only')
#: Methods that need the fine-tuned target models (and, for faig, images).
NEEDS_TARGETS = ('faig', 'weight_diff')
DEFAULT_ENCODER_PREFIXES = ('intro', 'encoders', 'downs')  # NAFNet's encoder modules


def num_selected_filters(num_filters, q):
    """``floor(q / 100 * num_filters + 1/2)``: the per-layer count of top-q% selection (round half up),
    in exact decimal arithmetic (``q`` is read through its shortest decimal representation)."""
    q = Fraction(repr(float(q)))
    if q < 0 or q > 100:
        raise ValueError(f'q must be a percentage in [0, 100], got {float(q)}')
    return math.floor(q * int(num_filters) / 100 + Fraction(1, 2))


def _filter_scores(scores, name):
    scores = torch.as_tensor(scores).detach().float().cpu()
    if scores.dim() == 2:  # per-kernel scores [C_out, C_in/groups]: a filter scores the sum of its kernels
        scores = scores.sum(1)
    if scores.dim() != 1:
        raise ValueError(f'scores of layer {name!r} must be [C_out] or [C_out, C_in/groups], got {tuple(scores.shape)}')
    if not torch.isfinite(scores).all():
        raise ValueError(f'scores of layer {name!r} contain NaN or infinite values')
    return scores


def top_filters(scores, n):
    """The ``n`` highest of 1-D ``scores``, ties broken by the lower index, as sorted indices."""
    order = torch.sort(scores, descending=True, stable=True).indices
    return torch.sort(order[:n]).values.long()


def select_top_q(scores, q):
    """Per-layer top-q% filters: ``{layer: sorted LongTensor of filter indices}``.

    Args:
        scores (dict[str, Tensor]): filter scores ``[C_out]`` (or per-kernel ``[C_out, C_in/groups]``,
            summed per filter) of each layer.
        q (float): percentage; layer ``l`` keeps ``floor(q / 100 * C_out + 1/2)`` filters.
    """
    masks = {}
    for name, layer_scores in scores.items():
        layer_scores = _filter_scores(layer_scores, name)
        masks[name] = top_filters(layer_scores, num_selected_filters(layer_scores.numel(), q))
    return masks


def selected_weight_count(masks, net):
    """Weights selected by ``masks`` (``{layer: indices}``) in ``net``: sum of ``n * filter size``."""
    convs = maskable_convs(net)
    check_masks(masks, net)
    return sum(len(idx) * filter_size(convs[name]) for name, idx in masks.items())


def top_q_weight_budget(net, q):
    """Weights that per-layer top-q% selects over all maskable layers (depends on the shapes only)."""
    return sum(num_selected_filters(conv.out_channels, q) * filter_size(conv) for conv in maskable_convs(net).values())


def select_within_budget(scores, net, budget, layers=None):
    """Greedy selection under a weight budget, across layers.

    Filters of ``layers`` (default: every layer of ``scores``) are visited in decreasing score (ties:
    layer order, then lower index); a filter is taken when it still fits in ``budget`` weights,
    otherwise skipped. Returns ``{layer: sorted indices}`` for every layer of ``scores`` (empty
    where nothing was taken).
    """
    convs = maskable_convs(net)
    layers = list(scores) if layers is None else list(layers)
    candidates = []
    for order, name in enumerate(layers):
        if name not in convs:
            raise KeyError(f'select_within_budget: {name!r} is not a maskable convolution of the network')
        layer_scores = _filter_scores(scores[name], name)
        size = filter_size(convs[name])
        candidates += [(-float(s), order, i, size) for i, s in enumerate(layer_scores.tolist())]
    candidates.sort()
    chosen = {name: [] for name in scores}
    left = int(budget)
    for _, order, i, size in candidates:
        if size <= left:
            chosen[layers[order]].append(i)
            left -= size
            if left == 0:
                break
    return {name: torch.tensor(sorted(idx), dtype=torch.long) for name, idx in chosen.items()}


def random_scores(net, seed):
    """Uniform random filter scores ``[C_out]`` per maskable layer (the slides' "Ran" baseline), from a
    ``torch.Generator`` seeded with ``seed`` and drawn in module order (reproducible on any device)."""
    generator = torch.Generator().manual_seed(int(seed))
    return {name: torch.rand(conv.out_channels, generator=generator) for name, conv in maskable_convs(net).items()}


def _in_encoder(name, prefixes):
    return any(name == p or name.startswith(p + '.') for p in prefixes)


def encoder_only_scores(net, encoder_prefixes, seed):
    """The slides' "En" baseline scores: uniform random scores on the encoder layers (names equal to
    or under one of ``encoder_prefixes``, e.g. ``['intro', 'encoders', 'downs']`` for NAFNet), zero
    elsewhere. Select with :func:`encoder_only_masks` (same weight budget as top-q over all layers)."""
    prefixes = [str(p).rstrip('.') for p in encoder_prefixes]
    scores = random_scores(net, seed)
    matched = [name for name in scores if _in_encoder(name, prefixes)]
    if not matched:
        top = sorted({name.split('.')[0] for name in scores})
        raise ValueError(f'encoder_only_scores: no maskable convolution under the prefixes {prefixes}; the network\'s '
                         f'top-level modules with maskable convolutions are {top}')
    return {name: (s if _in_encoder(name, prefixes) else torch.zeros_like(s)) for name, s in scores.items()}


def encoder_only_masks(net, encoder_prefixes, q, seed):
    """Encoder-only random masks with the same total number of selected weights as per-layer top-q%
    over all layers (see the module docstring); every maskable layer appears, empty outside the encoder."""
    prefixes = [str(p).rstrip('.') for p in encoder_prefixes]
    scores = encoder_only_scores(net, prefixes, seed)
    encoder = [name for name in scores if _in_encoder(name, prefixes)]
    masks = select_within_budget(scores, net, top_q_weight_budget(net, q), layers=encoder)
    return masks


def weight_difference_scores(um_net, target_net):
    """The slides' "|theta|" baseline: ``sum |theta_um - theta_d|`` over each filter's weights."""
    target = dict(target_net.named_parameters())
    scores = {}
    for name, conv in maskable_convs(um_net).items():
        key = f'{name}.weight'
        if key not in target or target[key].shape != conv.weight.shape:
            raise KeyError(f'weight_difference_scores: target network lacks {key!r} with shape '
                           f'{tuple(conv.weight.shape)}')
        diff = (conv.weight.detach() - target[key].detach().to(conv.weight.device)).abs()
        scores[name] = diff.flatten(1).sum(1).float().cpu()
    return scores


def compute_scores(method, um_net, names, targets=None, batches=None, steps=100, loss='mse', seed=0,
                   encoder_prefixes=DEFAULT_ENCODER_PREFIXES):
    """{degradation: {layer: scores per output filter}} for one selection ``method``.

    ``targets``: {degradation: fine-tuned network} (faig, weight_diff); ``batches``: {degradation:
    [(lq, gt), ...]} (faig). random and encoder_only draw with ``seed + index of the degradation`` so
    each degradation gets its own filters.
    """
    if method not in METHODS:
        raise ValueError(f'method must be one of {METHODS}, got {method!r}')
    scores = {}
    for i, name in enumerate(names):
        if method == 'faig':
            scores[name] = faig_scores(um_net, targets[name], batches[name], steps=steps, loss=loss)
        elif method == 'weight_diff':
            scores[name] = weight_difference_scores(um_net, targets[name])
        elif method == 'random':
            scores[name] = random_scores(um_net, seed + i)
        else:
            scores[name] = encoder_only_scores(um_net, list(encoder_prefixes), seed + i)
    return scores


def masks_for(scores, q, method=None, net=None, seed=0, encoder_prefixes=DEFAULT_ENCODER_PREFIXES):
    """{degradation: {layer: selected filter indices}} at ``q``%.

    Per-layer top-q% of the scores (:func:`select_top_q`), except for
    ``encoder_only``, which takes random encoder filters up to the same total number of weights as
    per-layer top-q% over all layers (:func:`encoder_only_masks`; needs ``net``).
    """
    if method == 'encoder_only':
        if net is None:
            raise ValueError('masks_for: encoder_only needs the network (its weight budget depends on the layer '
                             'shapes)')
        return {name: encoder_only_masks(net, list(encoder_prefixes), q, seed + i) for i, name in enumerate(scores)}
    return {name: select_top_q(by_layer, q) for name, by_layer in scores.items()}


def mask_summary(masks, net):
    """Per-layer counts of a mask set ``{degradation: {layer: indices}}``.

    Returns:
        list[dict]: one row per maskable layer: ``layer``, ``c_out``, ``filter_size``,
        ``selected`` (``{degradation: n}``) and ``params`` (selected weights over all degradations).
    """
    rows = []
    for name, conv in maskable_convs(net).items():
        selected = {deg: len(layer_masks.get(name, ())) for deg, layer_masks in masks.items()}
        size = filter_size(conv)
        rows.append(dict(layer=name, c_out=conv.out_channels, filter_size=size, selected=selected,
                         params=size * sum(selected.values())))
    return rows


def format_mask_summary(rows):
    """The rows of :func:`mask_summary` as a text table with a total line."""
    degs = list(rows[0]['selected']) if rows else []
    header = ['layer', 'C_out'] + degs + ['params']
    table = [[r['layer'], str(r['c_out'])] + [str(r['selected'][d]) for d in degs] + [str(r['params'])] for r in rows]
    table.append(['total', str(sum(r['c_out'] for r in rows))]
                 + [str(sum(r['selected'][d] for r in rows)) for d in degs] + [str(sum(r['params'] for r in rows))])
    widths = [max(len(row[i]) for row in [header] + table) for i in range(len(header))]
    lines = ['  '.join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in [header] + table]
    return '\n'.join(lines)


def um_parameter_count(net):
    """Parameters of the UM: every parameter of ``net`` except the specific weights of adaptive layers."""
    specific = {id(p) for m in net.modules() if isinstance(m, AdaptiveConv2d) for p in m.specific_parameters()}
    return sum(p.numel() for p in net.parameters() if id(p) not in specific)


def parameter_overhead(net, masks):
    """(UM parameters + specific weights of every degradation) / UM parameters.

    ``masks``: ``{degradation: {layer: indices}}`` (or a list of ``{layer: indices}``). The slides
    report about x1.03 / x1.09 / x1.15 at q = 1 / 3 / 5% with three degradations.
    """
    per_degradation = masks.values() if isinstance(masks, Mapping) else masks
    um = um_parameter_count(net)
    extra = sum(selected_weight_count(layer_masks, net) for layer_masks in per_degradation)
    return (um + extra) / um


# ------------------------------------------------------------------------------------------ mask files
def save_masks(path, masks_by_degradation, scores_by_degradation, meta):
    """Write a mask file (format in the module docstring) atomically.

    Args:
        path (str): output file.
        masks_by_degradation (dict[str, dict[str, Tensor]]): ``{degradation: {layer: indices}}``.
        scores_by_degradation (dict | None): ``{degradation: {layer: filter scores}}`` (None: ``{}``).
        meta (dict): must hold ``q`` and ``method`` (e.g. ``'faig'``, ``'random'``, ``'encoder'``,
            ``'weight_difference'``); other entries are stored under ``'meta'``.
    """
    meta = dict(meta)
    missing = [k for k in ('q', 'method') if k not in meta]
    if missing:
        raise KeyError(f'save_masks({path!r}): meta lacks {missing}')
    scores_by_degradation = {} if scores_by_degradation is None else scores_by_degradation
    unknown = [d for d in scores_by_degradation if d not in masks_by_degradation]
    if unknown:
        raise KeyError(f'save_masks({path!r}): scores for degradations {unknown} that have no mask')
    data = {
        'format': MASK_FORMAT,
        'unit': MASK_UNIT,
        'q': float(meta.pop('q')),
        'method': str(meta.pop('method')),
        'degradations': [str(d) for d in masks_by_degradation],
        'masks': {str(d): {str(layer): torch.as_tensor(idx, dtype=torch.long).detach().cpu().clone()
                           for layer, idx in layer_masks.items()}
                  for d, layer_masks in masks_by_degradation.items()},
        'scores': {str(d): {str(layer): torch.as_tensor(s).detach().float().cpu().clone() for layer, s in ls.items()}
                   for d, ls in scores_by_degradation.items()},
        'meta': meta,
    }
    with atomic_open(path, 'wb') as f:
        torch.save(data, f)


def load_masks(path):
    """Read and validate a mask file written by :func:`save_masks` (``torch.load(weights_only=True)``).

    Raises:
        ValueError: naming the file and what is wrong (not a dict, wrong format, missing keys, masks
            of unknown degradations, indices that are not 1-D integer tensors).
    """
    try:
        data = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:  # unpickling errors come in many types
        raise ValueError(f'load_masks: cannot read ADS mask file {path!r}: {err}') from err
    if not isinstance(data, dict):
        raise ValueError(f'load_masks: {path!r} holds a {type(data).__name__}, expected the dict of an ADS mask file '
                         f'({MASK_FORMAT!r})')
    missing = [k for k in _REQUIRED_KEYS if k not in data]
    if missing:
        raise ValueError(f'load_masks: {path!r} lacks the keys {missing} of an ADS mask file ({MASK_FORMAT!r}); '
                         f'it has {sorted(map(str, data))}')
    if data['format'] != MASK_FORMAT:
        raise ValueError(f'load_masks: {path!r} has format {data["format"]!r}, expected {MASK_FORMAT!r}')
    if data['unit'] != MASK_UNIT:
        raise ValueError(f'load_masks: {path!r} selects {data["unit"]!r} units, this version reads {MASK_UNIT!r}')
    degradations = list(data['degradations'])
    if sorted(data['masks']) != sorted(degradations):
        raise ValueError(f'load_masks: {path!r}: masks are given for {sorted(data["masks"])}, the file lists '
                         f'degradations {degradations}')
    for deg, layer_masks in data['masks'].items():
        for layer, idx in layer_masks.items():
            if not isinstance(idx, torch.Tensor) or idx.dim() != 1 or idx.dtype != torch.long:
                raise ValueError(f'load_masks: {path!r}: mask of {deg!r} layer {layer!r} must be a 1-D LongTensor')
    data.setdefault('meta', {})
    return data


def unwrap_state_dict(state):
    """A plain state dict from a BasicSR checkpoint (``params``/``params_ema``) or a raw state dict."""
    if isinstance(state, Mapping):
        for key in ('params_ema', 'params', 'state_dict'):
            if key in state and isinstance(state[key], Mapping):
                return state[key]
    return state
