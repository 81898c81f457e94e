"""Scoring 8-bit images with BasicSR metric options, exactly as validation does.

:func:`score_image` runs each metric of a ``{name: metric options}`` dict through BasicSR's
``calculate_metric`` on one image (full-reference metrics only when a ground truth is given);
:func:`score_images` averages over in-memory images. Used by the evaluation tables, the ADS
comparison and the demo.
"""
import numpy as np

from basicsr.metrics import calculate_metric
from uniremoval.metrics.metric_util import NO_REFERENCE_METRICS

# Option keys of a metric that are ours, not the metric function's.
TABLE_KEYS = ('better', 'digits')


def metric_kwargs(metric_opt):
    """``metric_opt`` without the keys that are ours (:data:`TABLE_KEYS`), as BasicSR's metric takes it."""
    return {k: v for k, v in metric_opt.items() if k not in TABLE_KEYS}


def is_full_reference(metric_opt):
    """Whether the metric needs a ground truth (all but the no-reference metrics)."""
    return metric_opt['type'] not in NO_REFERENCE_METRICS


def score_image(img, gt, metrics):
    """Each metric of one 8-bit image through BasicSR's ``calculate_metric``, as in validation.

    Args:
        img (ndarray): the (restored) image, HWC uint8, BGR as ``tensor2img`` and cv2 give it.
        gt (ndarray | None): its ground truth, alike; ``None``: full-reference metrics are left out.
        metrics (dict): {name: BasicSR metric options}; ``better`` and ``digits`` are ignored.

    Returns:
        dict: {name: value} of the metrics computed, in the order of ``metrics``.
    """
    sample = {'img': img} if gt is None else {'img': img, 'img2': gt}
    return {name: float(calculate_metric(sample, metric_kwargs(metric_opt)))
            for name, metric_opt in metrics.items() if gt is not None or not is_full_reference(metric_opt)}


def score_images(outputs, metrics, gts=None):
    """Mean of each metric over in-memory 8-bit images (:func:`score_image` on each, then ``np.mean``).

    Args:
        outputs (list[ndarray]): HWC uint8 BGR images.
        metrics (dict): {name: BasicSR metric options}.
        gts (list[ndarray] | None): the ground truths of ``outputs``, in order; ``None``: no-reference only.

    Returns:
        dict: {name: mean value, or None when no image was scored}.
    """
    values = {name: [] for name in metrics}
    for i, img in enumerate(outputs):
        for name, value in score_image(img, None if gts is None else gts[i], metrics).items():
            values[name].append(value)
    return {name: (float(np.mean(v)) if v else None) for name, v in values.items()}
