"""BRISQUE and PIQE (uniremoval.metrics): slow reference implementations, invariances, registry.

The references below are written the MATLAB way (per-block loops, per-output-pixel resize weights,
per-support-vector kernel sums, 2-D correlation) and share no code with the vectorised metrics.
The TID2013 check against MATLAB's published values needs images we cannot ship (pyiqa's wheel
is PolyForm Noncommercial); it is run by ``bench/bench_nr_metrics.py --tid2013 DIR``, and its
numbers are in docs/findings.md ("No-reference metrics").
"""
import math
from os import path as osp

import numpy as np
import pytest
from scipy import ndimage
from scipy.special import gamma

import uniremoval  # noqa: F401  (registers the metrics)
from basicsr.metrics import calculate_metric
from basicsr.utils.registry import METRIC_REGISTRY
from uniremoval.metrics import brisque_metric, nss_utils
from uniremoval.metrics.brisque_metric import (DEFAULT_MODEL, MODEL_ENV, calculate_brisque, convert_libsvm_model,
                                               load_brisque_model)
from uniremoval.metrics.piqe_metric import calculate_piqe, piqe

# ----------------------------------------------------------------------------- test images


def textured_image(h=70, w=90, seed=0):
    """BGR uint8, smooth colour field + edges + noise: no flat 7x7 neighbourhood anywhere."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack([120 + 80 * np.sin(xx / 9 + c) * np.cos(yy / 13 - c) for c in range(3)], axis=-1)
    img[h // 3:, w // 2:] += 50  # a step edge
    img += rng.normal(0, 7, img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def blocky_image(h=75, w=86, seed=1):
    """BGR uint8 with 8x8 constant tiles (noticeable artifacts), a noisy patch and a smooth ramp."""
    rng = np.random.default_rng(seed)
    tiles = rng.uniform(30, 220, size=(h // 8 + 1, w // 8 + 1, 3))
    img = np.repeat(np.repeat(tiles, 8, axis=0), 8, axis=1)[:h, :w]
    img[:, w // 2:] = np.linspace(40, 200, w - w // 2)[None, :, None]  # smooth, inactive
    img[h // 2:, w // 2:] += rng.normal(0, 25, img[h // 2:, w // 2:].shape)  # white noise
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def matlab_round(x):
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5)


def rgb2gray_reference(bgr):
    b, g, r = (bgr[..., i].astype(np.float64) for i in range(3))
    return matlab_round(0.298936021293775 * r + 0.587043074451121 * g + 0.114020904255103 * b)


def fspecial_gaussian(size=7, sigma=7 / 6):
    half = (size - 1) / 2
    y, x = np.mgrid[-half:half + 1, -half:half + 1]
    h = np.exp(-(x * x + y * y) / (2 * sigma * sigma))
    return h / h.sum()


def mscn_reference(img, mode):
    window = fspecial_gaussian()
    mu = ndimage.correlate(img, window, mode=mode, cval=0.0)
    sigma = np.sqrt(np.abs(ndimage.correlate(img * img, window, mode=mode, cval=0.0) - mu * mu))
    return (img - mu) / (sigma + 1)


# ----------------------------------------------------------------------------- PIQE reference


def piqe_reference(bgr):
    """Block-by-block transcription of MATLAB's piqe.m."""
    img = rgb2gray_reference(bgr)
    img = matlab_round(255 * img / img.max())
    rows, cols = img.shape
    img = np.pad(img, ((0, (16 - rows % 16) % 16), (0, (16 - cols % 16) % 16)), mode='symmetric')
    imnorm = mscn_reference(img, mode='nearest')  # imfilter 'replicate'

    def segment_edge(edge):
        return [edge[i:i + 6] for i in range(11)]

    def center_sur_dev(block):
        center = np.concatenate([block[:, 7], block[:, 8]])  # columns 8 and 9 (1-based)
        block = np.delete(block, 7, axis=1)  # Block(:, center1) = []
        block = np.delete(block, 8, axis=1)  # Block(:, center2) = [] of the narrower block
        ratio = np.std(center, ddof=1) / np.std(block, ddof=1)
        return 0.0 if math.isnan(ratio) else ratio

    dist_scores, n_active, counts = 0.0, 0, {'distortion': 0, 'noise': 0}
    for i in range(0, img.shape[0], 16):
        for j in range(0, img.shape[1], 16):
            block = imnorm[i:i + 16, j:j + 16]
            block_var = np.var(block, ddof=1)
            if block_var <= 0.1:
                continue
            n_active += 1
            edges = [block[0, :], block[:, 15], block[15, :], block[:, 0]]
            impaired = any(np.std(seg, ddof=1) < 0.1 for edge in edges for seg in segment_edge(edge))
            sigma = math.sqrt(block_var)
            csd = center_sur_dev(block)
            beta = abs(sigma - csd) / max(sigma, csd)
            noisy = sigma > 2 * beta
            counts['distortion'] += impaired
            counts['noise'] += noisy
            dist_scores += impaired * (1 - block_var) + noisy * block_var
    return (dist_scores + 1) / (n_active + 1) * 100, n_active, counts


# ----------------------------------------------------------------------------- BRISQUE reference


def imresize_half_reference(img):
    """MATLAB imresize(img, 0.5): weights computed output index by output index."""

    def cubic(x):
        x = abs(x)
        if x <= 1:
            return 1.5 * x**3 - 2.5 * x**2 + 1
        if x <= 2:
            return -0.5 * x**3 + 2.5 * x**2 - 4 * x + 2
        return 0.0

    def matrix(n_in):
        n_out = math.ceil(n_in / 2)
        m = np.zeros((n_out, n_in))
        for out in range(1, n_out + 1):
            center = out * 2 + 0.5 * (1 - 2)  # u / scale + 0.5 * (1 - 1 / scale)
            left = math.floor(center - 4)
            taps = [(k, 0.5 * cubic(0.5 * (center - k))) for k in range(left, left + 10)]
            total = sum(w for _, w in taps)
            for k, w in taps:
                while k < 1 or k > n_in:  # mirror: aux = [1:n, n:-1:1]
                    k = 1 - k if k < 1 else 2 * n_in + 1 - k
                m[out - 1, k - 1] += w / total
        return m

    return matrix(img.shape[0]) @ img @ matrix(img.shape[1]).T


def brisque_features_reference(gray):
    gam = np.arange(0.2, 10.0005, 0.001)
    r_ggd = gamma(1 / gam) * gamma(3 / gam) / gamma(2 / gam)**2
    r_aggd = gamma(2 / gam)**2 / (gamma(1 / gam) * gamma(3 / gam))
    feat, img = [], gray
    for scale in range(2):
        s = mscn_reference(img, mode='constant').ravel(order='F')  # structdis(:)
        sigma_sq = np.mean(s**2)
        feat += [gam[np.argmin(np.abs(sigma_sq / np.mean(np.abs(s))**2 - r_ggd))], sigma_sq]
        s2d = s.reshape(img.shape, order='F')
        for shift in [(0, 1), (1, 0), (1, 1), (-1, 1)]:
            pair = s2d.ravel(order='F') * np.roll(np.roll(s2d, shift[0], axis=0), shift[1], axis=1).ravel(order='F')
            left, right = np.sqrt(np.mean(pair[pair < 0]**2)), np.sqrt(np.mean(pair[pair > 0]**2))
            ghat = left / right
            rhat = np.mean(np.abs(pair))**2 / np.mean(pair**2)
            rnorm = rhat * (ghat**3 + 1) * (ghat + 1) / (ghat**2 + 1)**2
            alpha = gam[np.argmin((r_aggd - rnorm)**2)]
            const = math.sqrt(gamma(1 / alpha)) / math.sqrt(gamma(3 / alpha))
            feat += [alpha, (right - left) * (gamma(2 / alpha) / gamma(1 / alpha)) * const, left**2, right**2]
        img = imresize_half_reference(img)
    return np.array(feat)


def brisque_reference(bgr, model):
    """brisquescore.m: features -> '%f' text -> svm-scale ('%g' text) -> svm-predict, one SV at a time."""
    feats = brisque_features_reference(rgb2gray_reference(bgr))
    lo, hi = float(model['scale_lower']), float(model['scale_upper'])
    scaled = []
    for v, fmin, fmax in zip(feats, model['feature_min'], model['feature_max']):
        v = float('%f' % v)
        scaled.append(float('%g' % (lo + (hi - lo) * (v - fmin) / (fmax - fmin))))
    total = 0.0
    for coef, sv in zip(model['sv_coef'], model['sv']):
        total += coef * math.exp(-float(model['gamma']) * sum((a - b)**2 for a, b in zip(scaled, sv)))
    return total - float(model['rho'])


# ----------------------------------------------------------------------------- tests


def test_piqe_matches_block_loop_reference():
    img = blocky_image()
    ref, n_active, counts = piqe_reference(img)
    # the image exercises every branch: active blocks, noticeable artifacts and noise
    assert n_active > 5 and counts['distortion'] > 0 and counts['noise'] > 0
    assert calculate_piqe(img) == pytest.approx(ref, abs=1e-9)
    assert calculate_piqe(textured_image()) == pytest.approx(piqe_reference(textured_image())[0], abs=1e-9)


def test_piqe_known_values():
    assert calculate_piqe(blocky_image()) == pytest.approx(PIQE_BLOCKY, abs=1e-6)
    assert calculate_piqe(textured_image()) == pytest.approx(PIQE_TEXTURED, abs=1e-6)
    flat = np.full((40, 40, 3), 128, np.uint8)
    assert calculate_piqe(flat) == 100.0  # no active block


def test_piqe_masks_have_block_grid_shape():
    score, active, distortion, noise = piqe(nss_utils.prepare_gray(blocky_image()))
    assert active.shape == distortion.shape == noise.shape == (5, 6)  # ceil(75/16), ceil(86/16)
    assert not np.any(distortion & ~active) and not np.any(noise & ~active)
    assert score == pytest.approx(calculate_piqe(blocky_image()))


def test_brisque_matches_slow_reference():
    img = textured_image()
    model = load_brisque_model()
    np.testing.assert_allclose(
        brisque_metric.brisque_features(nss_utils.prepare_gray(img)),
        brisque_features_reference(rgb2gray_reference(img)), rtol=1e-9, atol=1e-12)
    assert calculate_brisque(img) == pytest.approx(brisque_reference(img, model), abs=1e-8)
    assert calculate_brisque(img) == pytest.approx(BRISQUE_TEXTURED, abs=1e-4)


def test_imresize_half_matches_reference_on_odd_sizes():
    x = np.random.default_rng(3).uniform(0, 255, (13, 8))
    np.testing.assert_allclose(nss_utils.imresize_half(x), imresize_half_reference(x), rtol=0, atol=1e-10)


def test_shipped_model_is_the_live_release():
    model = load_brisque_model()
    assert model['sv'].shape == (774, 36)
    assert float(model['gamma']) == 0.05 and float(model['rho']) == -153.591
    assert np.all(model['feature_min'] < model['feature_max'])
    assert osp.isfile(osp.join(osp.dirname(DEFAULT_MODEL), 'BRISQUE_LIVE_LICENSE.txt'))


@pytest.mark.parametrize('metric', [calculate_piqe, calculate_brisque])
def test_crop_border_and_input_order(metric):
    img = textured_image(80, 100)
    value = metric(img)
    assert metric(img.transpose(2, 0, 1), input_order='CHW') == value
    assert metric(img.astype(np.float32)) == value  # float in [0, 255] like uint8
    assert metric(img, crop_border=5) == metric(img[5:-5, 5:-5])
    gray = rgb2gray_reference(img)
    assert metric(gray, input_order='HW') == metric(np.repeat(gray[..., None], 3, axis=2).astype(np.uint8))
    with pytest.raises(ValueError):
        metric(img, input_order='WHC')


@pytest.mark.parametrize('name', ['calculate_piqe', 'calculate_brisque'])
def test_registry_round_trip(name):
    img = textured_image()
    direct = METRIC_REGISTRY.get(name)(img)
    assert calculate_metric({'img': img}, {'type': name, 'crop_border': 0}) == direct
    # BasicSR's validation passes img2 (None for no-reference runs) and test_y_channel
    metric_opt = {'type': name, 'crop_border': 0, 'test_y_channel': False}
    assert calculate_metric({'img': img, 'img2': None}, metric_opt) == direct


def test_brisque_missing_model_error(tmp_path, monkeypatch):
    img = textured_image()
    with pytest.raises(FileNotFoundError) as err:
        calculate_brisque(img, model_path=str(tmp_path / 'nope.npz'))
    message = str(err.value)
    for needle in ('nope.npz', 'model_path', MODEL_ENV, 'BRISQUE_release.zip', 'convert_libsvm_model'):
        assert needle in message
    monkeypatch.setenv(MODEL_ENV, str(tmp_path / 'from_env.npz'))
    with pytest.raises(FileNotFoundError, match='from_env.npz'):
        calculate_brisque(img)
    bad = tmp_path / 'bad.npz'
    np.savez(bad, sv=np.zeros((1, 36)))
    with pytest.raises(ValueError, match='not a BRISQUE model'):
        calculate_brisque(img, model_path=str(bad))


def test_convert_libsvm_model_and_model_path(tmp_path):
    """A tiny libsvm model (sparse SV lines) and svm-scale range file, converted and used."""
    rng = np.random.default_rng(5)
    sv = np.round(rng.uniform(-1, 1, (3, 36)), 6)
    sv[1, 4] = 0.0  # libsvm leaves zero features out of the line
    coef = [2.5, -1.0, 0.75]
    lines = ['svm_type epsilon_svr', 'kernel_type rbf', 'gamma 0.1', 'nr_class 2', 'total_sv 3', 'rho -3.5',
             'probA 1.0', 'SV']
    for c, row in zip(coef, sv):
        lines.append(f'{c:g} ' + ' '.join(f'{i + 1}:{v:g}' for i, v in enumerate(row) if v != 0))
    (tmp_path / 'model').write_text('\n'.join(lines) + '\n')
    fmin, fmax = rng.uniform(-0.2, 0.3, 36), rng.uniform(0.5, 2.0, 36)
    order = rng.permutation(36)  # svm-scale files are sorted, but do not rely on it
    ranges = ''.join(f'{i + 1} {float(fmin[i])!r} {float(fmax[i])!r}\n' for i in order)
    (tmp_path / 'range').write_text('x\n-1 1\n' + ranges)
    out = tmp_path / 'tiny.npz'
    convert_libsvm_model(str(tmp_path / 'model'), str(tmp_path / 'range'), str(out))

    model = load_brisque_model(str(out))
    np.testing.assert_array_equal(model['sv'], sv)
    np.testing.assert_array_equal(model['feature_min'], fmin)
    img = textured_image()
    assert calculate_brisque(img, model_path=str(out)) == pytest.approx(brisque_reference(img, model), abs=1e-10)
    assert calculate_brisque(img, model_path=str(out)) != pytest.approx(calculate_brisque(img))


def test_brisque_flat_image_is_nan_not_an_error():
    assert math.isnan(calculate_brisque(np.full((40, 40, 3), 77, np.uint8)))


# known answers of the two synthetic images above (equal to the slow references, checked above)
PIQE_BLOCKY = 73.58516915
PIQE_TEXTURED = 3.22580645  # 100 / 31: 30 active blocks, none distorted or noisy
BRISQUE_TEXTURED = 30.815708
