"""Compatibility shims that let the PyPI ``basicsr`` 1.4.2 release import on current torchvision.

BasicSR 1.4.2 (the last release, 2022) does
``from torchvision.transforms.functional_tensor import rgb_to_grayscale`` in
``basicsr/data/degradations.py``. torchvision 0.17 renamed that private module to
``torchvision.transforms._functional_tensor``, so ``import basicsr`` fails on every
torchvision released since 2023. Instead of forking BasicSR (the forks on PyPI install
the same top-level ``basicsr`` package under another distribution name and clash with
the real one that Real-ESRGAN and GFPGAN depend on), we register an alias module
*before* BasicSR is imported. ``import uniremoval`` calls :func:`install` first.

The alias is only installed when the old module is really missing, so on an old
torchvision (or a future BasicSR that no longer needs it) it does nothing.
"""
import importlib
import sys
import types

LEGACY_MODULE = 'torchvision.transforms.functional_tensor'


def _legacy_functional_tensor():
    """Build a module object that exposes torchvision's tensor functional API under the old name."""
    try:
        source = importlib.import_module('torchvision.transforms._functional_tensor')
    except ImportError:  # very new torchvision without the private module: use the public API
        source = importlib.import_module('torchvision.transforms.functional')
    alias = types.ModuleType(LEGACY_MODULE)
    alias.__doc__ = f'Alias of {source.__name__} installed by uniremoval.compat for BasicSR 1.4.2.'
    for name in dir(source):
        if not name.startswith('__'):
            setattr(alias, name, getattr(source, name))
    return alias


def install():
    """Install every shim BasicSR needs; safe to call more than once.

    Returns:
        list[str]: names of the modules that were aliased by this call (empty if none were needed).
    """
    installed = []
    if LEGACY_MODULE not in sys.modules:
        try:
            importlib.import_module(LEGACY_MODULE)
        except ImportError:
            sys.modules[LEGACY_MODULE] = _legacy_functional_tensor()
            installed.append(LEGACY_MODULE)
    return installed
