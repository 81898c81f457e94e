"""Tests of the seeded synthetic degradations in ``uniremoval.data.degradations``."""
import cv2
import numpy as np
import pytest

from uniremoval.data import degradations as D

KINDS = ['haze', 'rain', 'blur', 'noise']


def textured_image(h=96, w=128, channels=3, seed=0):
    """A deterministic textured test image in [0.1, 0.7]: smooth shapes plus fine detail."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 0.4 + 0.15 * np.sin(xx / 5.0) * np.cos(yy / 7.0)
    checker = 0.1 * (((xx // 8) + (yy // 8)) % 2) - 0.05
    img = np.stack([base + checker + 0.05 * rng.random((h, w)) for _ in range(channels)], axis=2)
    return np.clip(img, 0.1, 0.7).astype(np.float32)


def luminance(img):
    return img.mean(axis=2) if img.ndim == 3 else img


def local_contrast(img, block=8):
    """Mean over non-overlapping ``block x block`` windows of the luminance std (RMS contrast).

    Haze scales local detail by ``t`` but adds a smooth depth-dependent veil, which can raise
    the *global* std of a textured image; the local std isolates the loss of contrast.
    """
    y = luminance(img)
    h, w = (y.shape[0] // block) * block, (y.shape[1] // block) * block
    tiles = y[:h, :w].reshape(h // block, block, w // block, block)
    return float(tiles.std(axis=(1, 3)).mean())


def laplacian_energy(img):
    return float(np.mean(cv2.Laplacian(luminance(img).astype(np.float32), cv2.CV_32F)**2))


def dominant_angle(streaks):
    """Orientation of the streaks from the structure tensor, in the module's convention.

    The dominant gradient direction phi = 0.5 * atan2(2 Jxy, Jxx - Jyy) (x right, y down) is
    perpendicular to the streaks; with the convention "degrees from vertical, positive
    clockwise", the streak angle equals phi modulo 180.
    """
    gx = cv2.Sobel(streaks, cv2.CV_64F, 1, 0, ksize=3)
    gy = cv2.Sobel(streaks, cv2.CV_64F, 0, 1, ksize=3)
    jxx, jyy, jxy = (gx * gx).sum(), (gy * gy).sum(), (gx * gy).sum()
    return np.degrees(0.5 * np.arctan2(2 * jxy, jxx - jyy))


def angle_diff(a, b):
    """Difference of two undirected orientations in degrees, in [0, 90]."""
    d = (a - b) % 180.0
    return min(d, 180.0 - d)


# ---------------------------------------------------------------------------------------
# Reproducibility, dtype, shape
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize('kind', KINDS)
def test_same_seed_identical_different_seed_different(kind):
    img = textured_image()
    a = D.degrade(img, kind, 123)
    b = D.degrade(img, kind, 123)
    c = D.degrade(img, kind, 124)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3
    # A generator in the same state gives the same output; the generator advances.
    g1, g2 = np.random.default_rng(7), np.random.default_rng(7)
    np.testing.assert_array_equal(D.degrade(img, kind, g1), D.degrade(img, kind, g2))
    assert np.abs(D.degrade(img, kind, g1) - D.degrade(img, kind, np.random.default_rng(7))).max() > 1e-3


@pytest.mark.parametrize('kind', KINDS)
@pytest.mark.parametrize('domain', ['synthetic', 'real'])
@pytest.mark.parametrize('shape', [(40, 56), (40, 56, 1), (40, 56, 3), (40, 56, 4)])
def test_dtype_range_shape_preserved(kind, domain, shape):
    rng = np.random.default_rng(1)
    img = rng.random(shape)  # float64 input is accepted
    out = D.degrade(img, kind, 5, domain=domain)
    assert out.dtype == np.float32
    assert out.shape == img.shape
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert np.abs(out - img).max() > 1e-3  # it did something
    np.testing.assert_array_equal(img, np.random.default_rng(1).random(shape))  # input untouched


def test_registry_and_settings():
    assert set(D.DEGRADATIONS) == set(KINDS)
    for kind in KINDS:
        assert D.SYNTHETIC_SETTINGS[kind] != D.REAL_SETTINGS[kind], kind
        # every setting is a keyword of the function
        D.degrade(textured_image(16, 16), kind, 0, domain='real')
    settings = D.get_settings('real', 'haze')
    settings['beta_range'] = (0.0, 0.0)
    assert D.REAL_SETTINGS['haze']['beta_range'] != (0.0, 0.0)  # a copy


# ---------------------------------------------------------------------------------------
# Haze
# ---------------------------------------------------------------------------------------


def test_haze_follows_scattering_model_exactly():
    img = textured_image()
    depth = np.tile(np.linspace(0.0, 1.0, img.shape[1], dtype=np.float32), (img.shape[0], 1))
    out, params = D.add_haze(img, 0, beta_range=1.2, airlight_range=0.9, depth=depth, return_params=True)
    t = np.exp(-1.2 * depth)[:, :, None]
    np.testing.assert_allclose(out, img * t + 0.9 * (1 - t), atol=1e-6)
    # homogeneous haze at a constant depth: the global luminance std shrinks by exactly t
    flat = D.add_haze(img, 0, beta_range=1.0, airlight_range=0.9, depth=np.full(img.shape[:2], 0.8))
    assert luminance(flat).std() == pytest.approx(np.exp(-0.8) * luminance(img).std(), rel=1e-4)
    assert params['beta'] == 1.2 and params['airlight'] == pytest.approx([0.9] * 3)
    # zero depth leaves the image untouched
    np.testing.assert_allclose(D.add_haze(img, 0, depth=np.zeros(img.shape[:2])), img, atol=1e-7)


@pytest.mark.parametrize('seed', range(5))
def test_haze_lowers_contrast_and_moves_mean_towards_airlight(seed):
    img = textured_image()
    airlight = 0.95
    out = D.add_haze(img, seed, airlight_range=airlight)
    assert local_contrast(out) < 0.85 * local_contrast(img)
    assert abs(out.mean() - airlight) < abs(img.mean() - airlight) - 0.05
    assert out.mean() > img.mean() + 0.05


def test_real_haze_is_denser_than_synthetic():
    img = textured_image()
    syn = np.mean([local_contrast(D.degrade(img, 'haze', s, domain='synthetic')) for s in range(8)])
    real = np.mean([local_contrast(D.degrade(img, 'haze', s, domain='real')) for s in range(8)])
    assert real < 0.8 * syn


def test_haze_depth_proxy():
    d1 = D.haze_depth_proxy((50, 70), 3)
    np.testing.assert_array_equal(d1, D.haze_depth_proxy((50, 70), 3))
    assert d1.shape == (50, 70) and d1.dtype == np.float32
    assert d1.min() == pytest.approx(0.0) and d1.max() == pytest.approx(1.0)
    # smooth: neighbouring pixels differ by far less than the full range
    assert np.abs(np.diff(d1, axis=0)).max() < 0.1 and np.abs(np.diff(d1, axis=1)).max() < 0.1
    assert np.abs(d1 - D.haze_depth_proxy((50, 70), 4)).max() > 0.05


def test_haze_airlight_tint_is_per_channel():
    img = textured_image()
    _, params = D.add_haze(img, 0, airlight_range=0.8, airlight_tint=0.1, return_params=True)
    a = np.array(params['airlight'])
    assert np.all(np.abs(a - 0.8) <= 0.1 + 1e-6) and np.ptp(a) > 1e-3


# ---------------------------------------------------------------------------------------
# Rain
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize('angle', [-30.0, -10.0, 0.0, 20.0, 35.0])
def test_rain_adds_bright_streaks_along_requested_angle(angle):
    grey = np.full((128, 128, 3), 0.4, np.float32)
    out = D.add_rain(grey, 11, angle_range=angle, length_range=(18, 24), width_range=1.2, n_layers=2,
                     transmission_range=1.0)
    diff = out - grey
    assert diff.min() >= -1e-6  # streaks only brighten (no veil here)
    assert out.mean() > grey.mean() + 0.005
    covered = (diff.mean(axis=2) > 0.05).mean()
    assert 0.02 < covered < 0.6
    # colourless streaks: identical in every channel
    np.testing.assert_allclose(diff[..., 0], diff[..., 2], atol=1e-6)
    assert angle_diff(dominant_angle(diff.mean(axis=2)), angle) < 4.0


def test_rain_model_with_veil():
    img = textured_image()
    out, p = D.add_rain(img, 2, transmission_range=0.6, airlight_range=0.9, return_params=True)
    assert p['transmission_far'] == 0.6 and p['airlight'] == 0.9
    # with T = 1 everywhere (zero depth) only the streaks are added: O = B + S
    out0, p0 = D.add_rain(img, 2, transmission_range=0.6, depth=np.zeros(img.shape[:2]), return_params=True)
    np.testing.assert_allclose(out0, np.clip(img + p0['streaks'][:, :, None], 0, 1), atol=1e-6)
    # with a constant far depth the model is O = T (B + S) + (1 - T) A, T = 0.6
    out1, p1 = D.add_rain(img, 2, transmission_range=0.6, airlight_range=0.9, depth=np.ones(img.shape[:2]),
                          return_params=True)
    expected = 0.6 * (img + p1['streaks'][:, :, None]) + 0.4 * 0.9
    np.testing.assert_allclose(out1, np.clip(expected, 0, 1), atol=1e-5)
    assert luminance(out).std() < luminance(img + p['streaks'][:, :, None]).std()


def test_rain_symmetric_angle_draws_both_signs():
    grey = np.full((32, 32), 0.5, np.float32)
    angles = {np.sign(D.add_rain(grey, s, angle_range=30.0, symmetric_angle=True, return_params=True)[1]['angle'])
              for s in range(20)}
    assert angles == {-1.0, 1.0}


@pytest.mark.parametrize('angle', [-45.0, 0.0, 30.0, 90.0])
def test_rain_streak_kernel(angle):
    k = D.rain_streak_kernel(15, angle, 1.5)
    assert k.dtype == np.float32 and k.ndim == 2 and k.shape[0] == k.shape[1] and k.shape[0] % 2 == 1
    assert k.sum() == pytest.approx(1.0, abs=1e-5) and k.min() >= 0
    assert angle_diff(dominant_angle(k.astype(np.float64)), angle) < 2.0


# ---------------------------------------------------------------------------------------
# Motion blur
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize('seed', range(6))
def test_motion_kernel_sums_to_one(seed):
    k = D.random_motion_kernel(seed, kernel_size_range=(9, 21), shake_range=(0.0, 1.0))
    assert k.dtype == np.float32 and k.shape[0] == k.shape[1]
    assert k.shape[0] % 2 == 1 and 9 <= k.shape[0] <= 21
    assert k.sum() == pytest.approx(1.0, abs=1e-5) and k.min() >= 0
    assert (k > 1e-3).sum() >= 5  # a trajectory, not a delta
    # centred: the kernel's centroid is near its centre, so blur does not shift the image
    yy, xx = np.mgrid[0:k.shape[0], 0:k.shape[1]]
    c = (k.shape[0] - 1) / 2
    assert abs((k * xx).sum() - c) < 1.0 and abs((k * yy).sum() - c) < 1.0


def test_motion_kernel_straight_when_no_shake():
    k = D.random_motion_kernel(3, kernel_size_range=15, shake_range=0.0)
    # a straight line: the support's second moments are rank one (one tiny eigenvalue)
    yy, xx = np.mgrid[0:15, 0:15]
    mx, my = (k * xx).sum(), (k * yy).sum()
    cov = np.array([[(k * (xx - mx)**2).sum(), (k * (xx - mx) * (yy - my)).sum()],
                    [(k * (xx - mx) * (yy - my)).sum(), (k * (yy - my)**2).sum()]])
    ev = np.linalg.eigvalsh(cov)
    assert ev[0] < 0.05 * ev[1]


@pytest.mark.parametrize('domain', ['synthetic', 'real'])
def test_blur_lowers_high_frequency_energy(domain):
    img = textured_image()
    for seed in range(4):
        out = D.degrade(img, 'blur', seed, domain=domain)
        assert laplacian_energy(out) < 0.5 * laplacian_energy(img)
        assert out.mean() == pytest.approx(img.mean(), abs=0.01)  # kernels sum to 1


def test_blur_with_explicit_kernel():
    img = textured_image()
    delta = np.zeros((5, 5))
    delta[2, 2] = 1
    np.testing.assert_allclose(D.add_motion_blur(img, 0, kernel=delta), img, atol=1e-6)
    # a one-sided kernel is applied as a convolution: a kernel with its mass one pixel to
    # the right of the centre shifts the image to the right
    shift = np.zeros((3, 3))
    shift[1, 2] = 1
    out = D.add_motion_blur(img, 0, kernel=shift)
    np.testing.assert_allclose(out[:, 1:], img[:, :-1], atol=1e-6)
    const = np.full((20, 20, 3), 0.3, np.float32)
    np.testing.assert_allclose(D.add_motion_blur(const, 0, kernel=np.ones((3, 7))), const, atol=1e-6)


# ---------------------------------------------------------------------------------------
# Noise
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize('sigma', [5.0, 15.0, 25.0])
def test_noise_std_matches_sigma(sigma):
    grey = np.full((256, 256, 3), 0.5, np.float32)
    out = D.add_gaussian_noise(grey, 0, sigma=sigma)
    noise = out - grey
    assert noise.std() == pytest.approx(sigma / 255.0, rel=0.01)
    assert abs(noise.mean()) < 0.05 * sigma / 255.0
    # independent per channel by default, shared when per_channel=False
    assert abs(np.corrcoef(noise[..., 0].ravel(), noise[..., 1].ravel())[0, 1]) < 0.02
    shared = D.add_gaussian_noise(grey, 0, sigma=sigma, per_channel=False) - grey
    np.testing.assert_array_equal(shared[..., 0], shared[..., 1])
    assert shared.std() == pytest.approx(sigma / 255.0, rel=0.01)


def test_noise_std_before_clipping_matches_large_sigma():
    grey = np.full((256, 256, 3), 0.5, np.float32)
    out, p = D.add_gaussian_noise(grey, 3, sigma=60.0, return_params=True)
    assert p['noise'].std() == pytest.approx(60.0 / 255.0, rel=0.01)
    np.testing.assert_array_equal(out, np.clip(grey + p['noise'], 0, 1))
    assert (out - grey).std() < 60.0 / 255.0  # clipping shrinks it afterwards


def test_noise_zero_sigma_and_range():
    img = textured_image()
    np.testing.assert_array_equal(D.add_gaussian_noise(img, 0, sigma=0), img)
    _, p = D.add_gaussian_noise(img, 0, sigma=(10, 20), return_params=True)
    assert 10 <= p['sigma'] <= 20


# ---------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize('call, match', [
    (lambda img: D.degrade(img, 'snow', 0), 'kind'),
    (lambda img: D.degrade(img, 'haze', 0, domain='fake'), 'domain'),
    (lambda img: D.degrade(img, 'haze', 0, sigma=3), 'sigma'),
    (lambda img: D.add_haze(img, 0, beta_range=(-1, 1)), 'beta_range'),
    (lambda img: D.add_haze(img, 0, beta_range=(2, 1)), 'beta_range'),
    (lambda img: D.add_haze(img, 0, airlight_range=1.5), 'airlight_range'),
    (lambda img: D.add_haze(img, 0, airlight_range='bright'), 'airlight_range'),
    (lambda img: D.add_haze(img, 0, depth=np.zeros((3, 3))), 'depth'),
    (lambda img: D.add_haze(img, 0, depth=-np.ones(img.shape[:2])), 'depth'),
    (lambda img: D.add_rain(img, 0, angle_range=(0, 120)), 'angle_range'),
    (lambda img: D.add_rain(img, 0, transmission_range=1.0, depth=np.ones((2, 2))), 'depth'),
    (lambda img: D.add_rain(img, 0, n_layers=0), 'n_layers'),
    (lambda img: D.add_rain(img, 0, n_layers=1.5), 'n_layers'),
    (lambda img: D.add_rain(img, 0, density_range=(0.1, 0.5)), 'density_range'),
    (lambda img: D.add_motion_blur(img, 0, kernel_size_range=(4, 4)), 'kernel_size_range'),
    (lambda img: D.add_motion_blur(img, 0, kernel_size_range=1), 'kernel_size_range'),
    (lambda img: D.add_motion_blur(img, 0, kernel=-np.ones((3, 3))), 'kernel'),
    (lambda img: D.add_gaussian_noise(img, 0, sigma=-1), 'sigma'),
    (lambda img: D.add_gaussian_noise(img, 0, sigma=300), 'sigma'),
    (lambda img: D.add_gaussian_noise(img, None), 'rng'),
    (lambda img: D.add_gaussian_noise(img, 'seed'), 'rng'),
    (lambda img: D.add_gaussian_noise(img, -3), 'rng'),
    (lambda img: D.add_haze((img * 255).astype(np.uint8), 0), 'img'),
    (lambda img: D.add_haze(img * 2.0, 0), 'img'),
    (lambda img: D.add_haze(img[0, 0], 0), 'img'),
    (lambda img: D.add_haze(np.full_like(img, np.nan), 0), 'img'),
    (lambda img: D.add_haze(img.tolist(), 0), 'img'),
    (lambda img: D.get_settings('real', 'fog'), 'kind'),
])
def test_bad_arguments_raise_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call(textured_image(24, 24))
