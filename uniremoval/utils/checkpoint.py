"""Checkpoint reading and writing shared by the models, the restore command and the tests.

* :func:`atomic_torch_save` writes to a temporary file in the same folder and renames it into place,
  so a run killed while saving never leaves a truncated ``.pth`` or ``.state`` behind.
* :func:`load_state_dict_file` reads BasicSR checkpoints (``{'params': ..., 'params_ema': ...}``),
  official MPRNet ones (``{'state_dict': ...}``) and bare state dicts, always with
  ``torch.load(..., weights_only=True)``, and strips DataParallel's ``module.`` prefix.
"""
from os import path as osp

import torch

from uniremoval.utils.atomic_io import atomic_open

STATE_DICT_KEYS = ('params', 'params_ema', 'state_dict')


def atomic_torch_save(obj, path):
    """``torch.save(obj, path)`` through a temporary file renamed into place when complete."""
    with atomic_open(path, 'wb') as f:
        torch.save(obj, f)


def strip_module_prefix(state_dict):
    """Remove the ``module.`` prefix that (Distributed)DataParallel adds to every key."""
    return {(k[7:] if k.startswith('module.') else k): v for k, v in state_dict.items()}


def load_state_dict_file(path, param_key='params', map_location='cpu'):
    """Load a network state dict from a checkpoint file.

    Args:
        path (str): checkpoint path.
        param_key (str | None): key holding the state dict: ``'params'``, ``'params_ema'`` (falls back to
            ``'params'`` when absent, as BasicSR does) or ``'state_dict'``. With ``None`` or a missing key,
            the first of ``params``/``params_ema``/``state_dict`` present is used, else the file is taken
            to be a bare state dict.
        map_location: passed to ``torch.load``.

    Returns:
        dict[str, Tensor]: the state dict, ``module.`` prefixes removed.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'Checkpoint not found: {path}')
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # pickle errors, truncated files, python objects refused by weights_only
        raise RuntimeError(f'Cannot read checkpoint {path} (expected a torch state-dict file): {e}') from e
    if not isinstance(ckpt, dict):
        raise RuntimeError(f'Checkpoint {path} holds a {type(ckpt).__name__}, expected a dict')
    if param_key is not None and param_key in ckpt:
        state = ckpt[param_key]
    elif param_key == 'params_ema' and 'params' in ckpt:
        state = ckpt['params']
    else:
        present = [k for k in STATE_DICT_KEYS if k in ckpt]
        if present:
            state = ckpt[present[0]]
        elif all(isinstance(v, torch.Tensor) for v in ckpt.values()):
            state = ckpt
        else:
            raise KeyError(f'Checkpoint {path} has no {param_key!r} entry; its top-level keys are {sorted(ckpt)[:10]}')
    return strip_module_prefix(state)
