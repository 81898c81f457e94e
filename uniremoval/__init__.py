"""uniremoval: Uni-Removal and ADS as a BasicSR plugin.

``import uniremoval`` first installs the torchvision compatibility shim that BasicSR 1.4.2
needs (see :mod:`uniremoval.compat`), then imports every arch, model, loss, dataset and
metric module of the package so they register in BasicSR's registries
(``ARCH_REGISTRY``, ``MODEL_REGISTRY``, ``LOSS_REGISTRY``, ``DATASET_REGISTRY``,
``METRIC_REGISTRY``).
"""
from uniremoval import compat
from uniremoval.version import __version__  # noqa: F401

compat.install()

from uniremoval import archs, data, losses, metrics, models  # noqa: E402,F401  (registration side effects)
