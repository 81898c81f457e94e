"""Checkpoint reading and writing shared by the models, the restore command and the tests.

* :func:`atomic_torch_save` writes to a temporary file in the same folder and renames it into place,
  so a run killed while saving never leaves a truncated ``.pth`` or ``.state`` behind.
* :func:`load_state_dict_file` reads BasicSR checkpoints (``{'params': ..., 'params_ema': ...}``),
  official MPRNet ones (``{'state_dict': ...}``) and bare state dicts, always with
  ``torch.load(..., weights_only=True)``, and strips DataParallel's ``module.`` prefix.
* :func:`capture_rng_state` / :func:`restore_rng_state` hold the python, numpy and torch (CPU and CUDA)
  random generators in a form ``weights_only=True`` can read back (training states keep them, so a
  resumed run draws the same crops, flips and clear images as an uninterrupted one).
* :func:`find_resumable_state` picks the newest training state that loads and whose network files are
  intact, falling back to older ones (with the reasons) when the newest is truncated or unreadable.
"""
import os
import random
import re
import signal
from os import path as osp

import numpy as np
import torch

from uniremoval.utils.atomic_io import atomic_open
from uniremoval.utils.errors import UsageError

STATE_DICT_KEYS = ('params', 'params_ema', 'state_dict')
STATE_FILE = re.compile(r'^(\d+)\.state$')
# Test-only fault injection: with UNIREMOVAL_TEST_KILL_DURING_SAVE=<file name> (e.g. ``8.state``) the process
# SIGKILLs itself inside atomic_torch_save once that file's bytes are written but before the rename, i.e. a
# real kill in the middle of saving a checkpoint (tests/test_resume.py). Unset in normal use.
KILL_DURING_SAVE_ENV = 'UNIREMOVAL_TEST_KILL_DURING_SAVE'


class CheckpointError(UsageError, RuntimeError):
    """A checkpoint file that cannot be read safely, or holds no state dict; the message names the file."""


class CheckpointNotFoundError(UsageError, FileNotFoundError):
    """A checkpoint path that names no file."""


def atomic_torch_save(obj, path):
    """``torch.save(obj, path)`` through a temporary file renamed into place when complete."""
    with atomic_open(path, 'wb') as f:
        torch.save(obj, f)
        if os.environ.get(KILL_DURING_SAVE_ENV) == osp.basename(path):
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)


def capture_rng_state():
    """The state of python's ``random``, numpy's global generator and torch's CPU (and CUDA) generators.

    Everything is a tensor, int, float, tuple or None, so ``torch.load(..., weights_only=True)`` reads it.
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        'python': random.getstate(),
        'numpy': {'kind': kind, 'keys': torch.from_numpy(keys.astype(np.int64)), 'pos': int(pos),
                  'has_gauss': int(has_gauss), 'cached_gaussian': float(cached)},
        'torch': torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state()
    return state


def restore_rng_state(state):
    """Set the generators from a :func:`capture_rng_state` dict (the CUDA one only where both have it)."""
    version, internal, gauss = state['python']
    random.setstate((version, tuple(internal), gauss))
    n = state['numpy']
    np.random.set_state((n['kind'], n['keys'].numpy().astype(np.uint32), n['pos'], n['has_gauss'],
                         n['cached_gaussian']))
    torch.set_rng_state(state['torch'].cpu())
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state['cuda'].cpu())


def _check_loadable(path):
    """Raise if ``path`` is not a complete torch file (the zip directory sits at the end: a truncated file
    fails here without reading every tensor)."""
    torch.load(path, map_location='cpu', weights_only=True, mmap=True)


def find_resumable_state(state_dir, network_files=None):
    """The newest ``<iter>.state`` in ``state_dir`` that can be resumed from, and why newer ones cannot.

    A state qualifies when it loads with ``weights_only=True`` and every network file it needs
    (``network_files(iter)``: paths of ``net_<label>_<iter>.pth``) exists and loads. Saving writes the
    networks first and the state last, each through a temporary file, so a kill leaves at worst a state
    without a newer copy; a truncated or corrupt newest state (a copy cut short, a full disk outside this
    program) makes this fall back to the previous one.

    Returns:
        tuple[str | None, dict | None, list[str]]: path and loaded state (on CPU) of the chosen file, or
        ``(None, None, ...)`` when none qualifies; and one message per skipped newer file.
    """
    skipped = []
    if not osp.isdir(state_dir):
        return None, None, skipped
    iters = sorted((int(m.group(1)) for m in map(STATE_FILE.match, os.listdir(state_dir)) if m), reverse=True)
    for it in iters:
        path = osp.join(state_dir, f'{it}.state')
        try:
            state = torch.load(path, map_location='cpu', weights_only=True)
            if not isinstance(state, dict) or state.get('iter') != it:
                raise ValueError(f"expected a dict with 'iter': {it}")
            for net_path in (network_files(it) if network_files else []):
                if not osp.isfile(net_path):
                    raise FileNotFoundError(f'its network file {net_path} is missing')
                try:
                    _check_loadable(net_path)
                except Exception as e:
                    raise ValueError(f'its network file {net_path} cannot be read ({e})') from e
        except Exception as e:  # truncated zip, EOFError, pickle errors, missing networks
            skipped.append(f'training state {path} cannot be resumed from ({type(e).__name__}: {e})')
            continue
        return path, state, skipped
    return None, None, skipped


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
        raise CheckpointNotFoundError(f'Checkpoint not found: {path}')
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # pickle errors, truncated files, python objects refused by weights_only
        raise CheckpointError(f'Cannot read checkpoint {path} (expected a torch state-dict file): {e}') from e
    if not isinstance(ckpt, dict):
        raise CheckpointError(f'Checkpoint {path} holds a {type(ckpt).__name__}, expected a dict')
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
