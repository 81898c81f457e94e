"""Helpers about metrics shared by validation (:mod:`uniremoval.models.model_mixins`) and evaluation
(:mod:`uniremoval.evaluation`), under BasicSR's name for such a module.

Not a ``*_metric.py`` file: importing :mod:`uniremoval.metrics` does not register anything from it.
"""

# Metrics that score the restored image alone; the others need the ground truth (``img2``).
NO_REFERENCE_METRICS = {'calculate_niqe', 'calculate_brisque', 'calculate_piqe'}


def is_no_reference(metric_type):
    """Whether the registered metric ``metric_type`` (e.g. ``'calculate_piqe'``) needs no ground truth."""
    return metric_type in NO_REFERENCE_METRICS
