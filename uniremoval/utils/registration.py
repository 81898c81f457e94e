"""Import every ``*_<kind>.py`` module of a sub-package so that its classes register in BasicSR.

BasicSR scans only its own folders; Real-ESRGAN registers its components by importing its
``*_arch.py``, ``*_model.py`` and ``*_dataset.py`` files from each sub-package's
``__init__``. We do the same, with one helper shared by all sub-packages.
"""
import importlib
from os import path as osp

from basicsr.utils import scandir


def import_modules(package_file, package_name, suffix):
    """Import the modules of ``package_name`` whose file names end with ``suffix``.

    Args:
        package_file (str): ``__file__`` of the package's ``__init__.py``.
        package_name (str): dotted package name, e.g. ``'uniremoval.archs'``.
        suffix (str): file-name ending, e.g. ``'_arch.py'``.

    Returns:
        list[module]: the imported modules, sorted by file name.
    """
    folder = osp.dirname(osp.abspath(package_file))
    names = sorted(osp.splitext(osp.basename(v))[0] for v in scandir(folder) if v.endswith(suffix))
    return [importlib.import_module(f'{package_name}.{name}') for name in names]
