"""Compare a checkpoint's state dict with a network before loading it, and say what does not fit.

``nn.Module.load_state_dict(strict=True)`` raises a ``RuntimeError`` listing *every* missing and
unexpected key in one paragraph (hundreds for an MPRNet loaded into a NAFNet) and stops at the first
shape mismatch without naming the file. :func:`check_state_dict` gives a short, complete picture
instead: how many keys are missing, unexpected and of another shape, a few of each (with both
shapes), and the checkpoint file, so that "this checkpoint is of another architecture (or another
width)" is obvious.
"""
import torch

from uniremoval.utils.errors import UsageError

MAX_SHOWN = 5


class StateDictMismatchError(UsageError, RuntimeError):
    """A checkpoint's state dict does not fit the network it is loaded into; the message names the file."""


def compare_state_dicts(expected, loaded):
    """Differences between a network's state dict ``expected`` and a checkpoint's ``loaded``.

    Returns:
        dict: ``missing`` (keys of ``expected`` absent from ``loaded``), ``unexpected`` (the reverse),
        ``shape`` (list of ``(key, expected shape, loaded shape)`` for keys in both whose shapes differ),
        each sorted by key.
    """
    missing = sorted(k for k in expected if k not in loaded)
    unexpected = sorted(k for k in loaded if k not in expected)
    shape = []
    for key in sorted(k for k in expected if k in loaded):
        a, b = expected[key], loaded[key]
        if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape != b.shape:
            shape.append((key, tuple(a.shape), tuple(b.shape)))
    return {'missing': missing, 'unexpected': unexpected, 'shape': shape}


def _some(items, fmt=repr):
    shown = ', '.join(fmt(i) for i in items[:MAX_SHOWN])
    return shown + (', ...' if len(items) > MAX_SHOWN else '')


def describe_mismatch(diff, path, network_name='the network'):
    """One message for a :func:`compare_state_dicts` result: counts and a few keys of each kind."""
    parts = []
    if diff['missing']:
        parts.append(f"{len(diff['missing'])} missing key(s) (in {network_name}, not in the file): "
                     f"{_some(diff['missing'])}")
    if diff['unexpected']:
        parts.append(f"{len(diff['unexpected'])} unexpected key(s) (in the file, not in {network_name}): "
                     f"{_some(diff['unexpected'])}")
    if diff['shape']:
        parts.append(f"{len(diff['shape'])} key(s) of another shape (network vs file): "
                     + _some(diff['shape'], lambda s: f'{s[0]!r} {list(s[1])} vs {list(s[2])}'))
    return (f'Checkpoint {path} does not fit {network_name}: ' + '; '.join(parts)
            + '. It was probably saved from another architecture or with other network_g options '
              '(n_feat, num_cab, ...); give the options it was trained with.')


def check_state_dict(net, state_dict, path, strict=True):
    """Raise :class:`StateDictMismatchError` if ``state_dict`` cannot be loaded into ``net``.

    With ``strict`` every key must match (as ``load_state_dict(strict=True)``); without it, missing and
    unexpected keys are allowed, but keys present in both must still have the same shape (PyTorch
    raises on those even with ``strict=False``).

    Args:
        net (nn.Module): the (bare) network.
        state_dict (dict[str, Tensor]): what the checkpoint holds.
        path (str): the checkpoint file, named in the message.
    """
    diff = compare_state_dicts(net.state_dict(), state_dict)
    if not strict:
        diff['missing'], diff['unexpected'] = [], []
    if diff['missing'] or diff['unexpected'] or diff['shape']:
        raise StateDictMismatchError(describe_mismatch(diff, path, type(net).__name__))
