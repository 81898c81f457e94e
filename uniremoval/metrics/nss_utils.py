"""Shared pieces of the natural-scene-statistics metrics (BRISQUE, PIQE), written to follow MATLAB.

* :func:`prepare_gray` turns a BasicSR image (BGR, [0, 255], ``HWC``/``CHW``/``HW``) into the
  grey image MATLAB's ``rgb2gray`` gives for the same uint8 picture.
* :func:`mscn` is the mean-subtracted contrast-normalised image of Mittal et al. with the
  ``fspecial('gaussian', 7, 7/6)`` window and C = 1, under MATLAB's ``filter2`` (zero padding)
  or ``imfilter(..., 'replicate')`` border rules.
* :func:`imresize_half` is MATLAB's ``imresize(x, 0.5)`` (bicubic, antialiased) on doubles.
"""
import numpy as np

from basicsr.metrics.metric_util import reorder_image

# MATLAB rgb2gray: first row of inv([1 0.956 0.621; 1 -0.272 -0.647; 1 -1.106 1.703]), for R, G, B.
RGB2GRAY = (0.298936021293775, 0.587043074451121, 0.114020904255103)


def prepare_gray(img, crop_border=0, input_order='HWC'):
    """BasicSR image -> float64 (h, w) grey image with integer values in [0, 255].

    Args:
        img (ndarray): BGR (or single-channel) image in [0, 255], uint8 or float.
        crop_border (int): pixels dropped on each edge before anything else.
        input_order (str): 'HWC', 'CHW', or 'HW' for a 2-D grey image.

    Returns:
        ndarray: ``rgb2gray`` of the image as MATLAB computes it for uint8 input (weighted sum,
        clipped to [0, 255], rounded half away from zero). Single-channel input is only clipped and
        rounded.
    """
    img = np.asarray(img)
    if input_order == 'HW':
        if img.ndim != 2:
            raise ValueError(f'input_order HW needs a 2-D image, got shape {img.shape}')
        img = img[..., None]
    else:
        img = reorder_image(img, input_order=input_order)
    if crop_border:
        img = img[crop_border:-crop_border, crop_border:-crop_border, ...]
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError('the image is empty (after crop_border)')
    img = img.astype(np.float64)
    if img.shape[2] == 3:
        gray = img[..., 2] * RGB2GRAY[0] + img[..., 1] * RGB2GRAY[1] + img[..., 0] * RGB2GRAY[2]
    elif img.shape[2] == 1:
        gray = img[..., 0]
    else:
        raise ValueError(f'expected 1 or 3 channels, got {img.shape[2]}')
    return np.floor(np.clip(gray, 0, 255) + 0.5)


# 1-D factor of MATLAB's normalised fspecial('gaussian', 7, 7/6), i.e. exp(-x^2 / (2 (7/6)^2)) for
# x = -3..3 divided by its sum. Written out so that no platform's exp() can change a last bit.
GAUSS_7 = np.array([0.012560200468474614, 0.07882796468173002, 0.2372960771171706, 0.34263151546524945,
                    0.2372960771171706, 0.07882796468173002, 0.012560200468474614])


def gaussian_window(size=7, sigma=7 / 6):
    """1-D factor of MATLAB's normalised ``fspecial('gaussian', size, sigma)``."""
    if size == 7 and sigma == 7 / 6:
        return GAUSS_7.copy()
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-x * x / (2 * sigma * sigma))
    return g / g.sum()


def _correlate_axis(img, kernel, axis, pad_mode):
    """'same' correlation of ``img`` with a 1-D ``kernel`` along ``axis``.

    Plain numpy products and sums, one tap after the other: every operation is an IEEE-rounded
    multiply or add, so the result is the same on every machine (no FMA, no SIMD-dependent order).
    That matters here: in a perfectly flat neighbourhood the MSCN value is 0 in exact arithmetic
    but +-1e-14 after rounding, and BRISQUE's AGGD fits count those values by sign.
    """
    half = len(kernel) // 2
    pad = [(half, half) if a == axis else (0, 0) for a in range(img.ndim)]
    padded = np.pad(img, pad, mode=pad_mode)
    n = img.shape[axis]
    out = None
    for t, k in enumerate(kernel):
        window = padded[t:t + n] if axis == 0 else padded[:, t:t + n]
        out = k * window if out is None else out + k * window
    return out


def mscn(img, border='constant', C=1.0):
    """Mean-subtracted contrast-normalised coefficients of a float64 (h, w) image.

    Args:
        img (ndarray): float64 (h, w).
        border (str): 'constant' (zero padding, MATLAB ``filter2(w, x, 'same')``) or
            'replicate' (MATLAB ``imfilter(x, w, 'replicate')``).
        C (float): stabilising constant of the divisive normalisation.
    """
    pad_mode = {'constant': 'constant', 'replicate': 'edge'}[border]
    g = GAUSS_7
    img = np.asarray(img, dtype=np.float64)

    def blur(x):
        return _correlate_axis(_correlate_axis(x, g, 0, pad_mode), g, 1, pad_mode)

    mu = blur(img)
    sigma = np.sqrt(np.abs(blur(img * img) - mu * mu))
    return (img - mu) / (sigma + C)


def _cubic(x):
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    return ((1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1) + (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2)))


def _half_contributions(in_length):
    """Indices and weights of MATLAB's antialiased bicubic kernel for a 0.5 down-scale of one axis."""
    scale, kernel_width = 0.5, 8.0  # the antialiased kernel is stretched by 1/scale
    out_length = int(np.ceil(in_length * scale))
    u = np.arange(1, out_length + 1, dtype=np.float64)
    x = u / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(x - kernel_width / 2)
    taps = int(np.ceil(kernel_width)) + 2
    indices = left[:, None] + np.arange(taps)[None, :]  # 1-based, as in MATLAB
    weights = scale * _cubic(scale * (x[:, None] - indices))
    weights /= weights.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(in_length), np.arange(in_length)[::-1]])
    indices = mirror[np.mod(indices.astype(np.int64) - 1, 2 * in_length)]
    keep = np.any(weights != 0, axis=0)
    return indices[:, keep], weights[:, keep]


def imresize_half(img):
    """MATLAB ``imresize(img, 0.5)`` for a float64 (h, w) image: bicubic, antialiased, no rounding.

    Like MATLAB, rows are resized first and each output value accumulates its taps in order.
    """
    out = np.asarray(img, dtype=np.float64)
    for axis in (0, 1):
        idx, w = _half_contributions(out.shape[axis])
        shape = [1, 1]
        shape[axis] = -1
        acc = None
        for t in range(idx.shape[1]):
            term = w[:, t].reshape(shape) * np.take(out, idx[:, t], axis=axis)
            acc = term if acc is None else acc + term
        out = acc
    return out
