"""The pixel range a network works in, and the final output of a multi-output network.

BasicSR's datasets give images in [0, 1], and losses and metrics are computed in [0, 1]. A network
may work in another range, set by the root option ``pixel_range``: ``[0, 1]`` (the default, as in the
official MPRNet code, so official checkpoints work) or ``[-1, 1]`` (the Uni-Removal paper normalises
patches to [-1, 1], arXiv 2307.05075 §IV-A1). Input and output are mapped linearly.

A multi-stage network (MPRNet) returns a list of stage outputs, final first; :func:`final_output`
takes the restored image from it. The models (:mod:`uniremoval.models`), the restoration library
(:mod:`uniremoval.restoration`) and the evaluation (:mod:`uniremoval.evaluation`) all use these.
"""

SUPPORTED_PIXEL_RANGES = ((0.0, 1.0), (-1.0, 1.0))


def parse_pixel_range(opt):
    """Read and validate the root option ``pixel_range`` (default ``[0, 1]``).

    Returns:
        tuple[float, float]: one of :data:`SUPPORTED_PIXEL_RANGES`.

    Raises:
        ValueError: for any other value.
    """
    value = opt.get('pixel_range', [0, 1])
    try:
        value = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        value = None
    if value not in SUPPORTED_PIXEL_RANGES:
        raise ValueError(f"Option 'pixel_range' must be [0, 1] or [-1, 1], got {opt.get('pixel_range')!r}")
    return value


def to_network_range(img, pixel_range):
    """Map a [0, 1] image (tensor or array) linearly to the network's ``pixel_range`` ``(low, high)``.

    ``[0, 1]`` returns ``img`` itself; ``[-1, 1]`` gives ``img * 2 - 1`` (§IV-A1).
    """
    low, high = (float(v) for v in pixel_range)
    if (low, high) == (0.0, 1.0):
        return img
    return img * (high - low) + low


def from_network_range(img, pixel_range):
    """Map a network output in ``pixel_range`` ``(low, high)`` linearly back to [0, 1] (inverse of
    :func:`to_network_range`; ``[-1, 1]`` gives ``(img + 1) / 2``)."""
    low, high = (float(v) for v in pixel_range)
    if (low, high) == (0.0, 1.0):
        return img
    return (img - low) / (high - low)


def final_output(outputs):
    """The restored image of a network returning a tensor or a list/tuple of outputs, final first."""
    return outputs[0] if isinstance(outputs, (list, tuple)) else outputs
