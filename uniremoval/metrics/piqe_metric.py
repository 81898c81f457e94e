"""PIQE, the Perception based Image Quality Evaluator, as a BasicSR metric (lower is better, 0-100).

Ref: N. Venkatanath, D. Praneeth, M. C. Bh, S. S. Channappayya and S. S. Medasani, "Blind image
quality evaluation using perception based features", NCC 2015. The implementation follows
MATLAB's ``piqe`` (Image Processing Toolbox) step by step, vectorised over blocks:

1. grey image: MATLAB ``rgb2gray`` of the uint8 picture, then ``round(255 * I / max(I))``;
2. symmetric 'post' padding to a multiple of 16 rows and columns;
3. MSCN coefficients with the 7x7 Gaussian window (sigma 7/6), C = 1, replicate borders;
4. 16x16 blocks; a block is *active* when the (N-1) variance of its MSCN values exceeds 0.1;
5. an active block shows a *noticeable distortion* when one of the 11 six-pixel segments along any
   of its four edges has a standard deviation below 0.1, and *noise* when
   ``sigma > 2 * |sigma - r| / max(sigma, r)``, with sigma the block's standard deviation and r the
   ratio of the standard deviations of its two centre columns and of the other columns (the
   columns removed are those MATLAB's ``centerSurDev`` deletes: 8, then 9 of what remains, i.e.
   original columns 8 and 10, 1-based);
6. score = 100 * (1 + sum over active blocks of [distorted] (1 - var) + [noisy] var) / (1 + #active).

Validation against MATLAB's published values: docs/findings.md, "No-reference metrics".
"""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from basicsr.utils.registry import METRIC_REGISTRY
from uniremoval.metrics.nss_utils import mscn, prepare_gray

BLOCK = 16
ACTIVITY_THRESHOLD = 0.1
IMPAIRED_THRESHOLD = 0.1
SEGMENT = 6


def _blocks(img, block=BLOCK):
    """(H, W) with H, W multiples of ``block`` -> (H/block, W/block, block, block)."""
    h, w = img.shape
    return img.reshape(h // block, block, w // block, block).swapaxes(1, 2)


def _center_surround_ratio(blocks):
    """Std of the two centre columns over std of the remaining columns (0 where it is NaN)."""
    n = blocks.shape[-1]
    c1 = n // 2  # 1-based column (n - 1 + 1) / 2 = 8 of 16 -> index 7; the second is index 8
    center = blocks[..., c1 - 1:c1 + 1].reshape(blocks.shape[:-2] + (-1,))
    # MATLAB deletes column c1, then column c1 + 1 of the narrower block: original c1 and c1 + 2.
    keep = np.ones(n, dtype=bool)
    keep[[c1 - 1, c1 + 1]] = False
    surround = blocks[..., keep].reshape(blocks.shape[:-2] + (-1,))
    with np.errstate(divide='ignore', invalid='ignore'):
        ratio = center.std(axis=-1, ddof=1) / surround.std(axis=-1, ddof=1)
    return np.nan_to_num(ratio, nan=0.0, posinf=np.inf)


def _noticeably_distorted(blocks):
    """True where a 6-pixel segment of a block edge has a standard deviation below the threshold."""
    edges = np.stack([blocks[..., 0, :], blocks[..., :, -1], blocks[..., -1, :], blocks[..., :, 0]], axis=-2)
    segments = sliding_window_view(edges, SEGMENT, axis=-1)  # (..., 4, 11, 6)
    return np.any(segments.std(axis=-1, ddof=1) < IMPAIRED_THRESHOLD, axis=(-2, -1))


def piqe(gray):
    """PIQE score and masks of a grey image.

    Args:
        gray (ndarray): (h, w) image in [0, 255] (the output of ``rgb2gray``).

    Returns:
        tuple: score (float) and the block masks ``activity``, ``distortion`` (noticeable
        artifacts) and ``noise``, each a bool array of (ceil(h/16), ceil(w/16)) blocks.
    """
    gray = np.asarray(gray, dtype=np.float64)
    peak = gray.max()
    gray = np.floor(255 * gray / peak + 0.5) if peak > 0 else gray  # MATLAB round(255*I/max(I))
    h, w = gray.shape
    gray = np.pad(gray, ((0, -h % BLOCK), (0, -w % BLOCK)), mode='symmetric')

    blocks = _blocks(mscn(gray, border='replicate'))
    var = blocks.var(axis=(-2, -1), ddof=1)
    active = var > ACTIVITY_THRESHOLD

    distortion = active & _noticeably_distorted(blocks)
    sigma = np.sqrt(var)
    ratio = _center_surround_ratio(blocks)
    with np.errstate(divide='ignore', invalid='ignore'):
        beta = np.abs(sigma - ratio) / np.maximum(sigma, ratio)
        noise = active & (sigma > 2 * beta)

    dist_scores = np.sum(distortion * (1 - var)) + np.sum(noise * var)
    score = 100.0 * (dist_scores + 1.0) / (1.0 + np.count_nonzero(active))
    return float(score), active, distortion, noise


@METRIC_REGISTRY.register()
def calculate_piqe(img, crop_border=0, input_order='HWC', **kwargs):
    """PIQE (no-reference, lower is better, in [0, 100]) of a BasicSR image, as MATLAB's ``piqe``.

    Args:
        img (ndarray): BGR image in [0, 255] (uint8 or float), or grey with ``input_order='HW'``.
        crop_border (int): pixels left out on each edge.
        input_order (str): 'HWC', 'CHW' or 'HW'. Default: 'HWC'.
        **kwargs: ignored (BasicSR passes ``img2`` and other options to every metric).

    Returns:
        float: PIQE score; 100 for a flat image (no active block).
    """
    return piqe(prepare_gray(img, crop_border, input_order))[0]
