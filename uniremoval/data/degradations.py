"""Seeded synthetic degradations: haze, rain, motion blur and Gaussian noise.

Every function takes a float image in ``[0, 1]``, ``HW`` or ``HWC`` (any channels, BGR or RGB alike:
the airlight tint is drawn per channel), and ``rng``, a :class:`numpy.random.Generator` (advanced) or
an ``int`` seed (a fresh generator: same seed, same output); it returns a new ``float32`` array of the
same shape clipped to ``[0, 1]``. ``*_range`` parameters take a ``(low, high)`` pair, drawn uniformly
once per image, or a fixed number; out-of-bounds values raise :class:`ValueError`.

* **Haze** (:func:`add_haze`): the atmospheric scattering model of Koschmieder (1924) as used by
  McCartney (1976), He et al. (dark channel prior, CVPR 2009) and the RESIDE benchmark (Li et al.,
  TIP 2019) to synthesise its ITS/OTS sets, ``I = J * t + A * (1 - t)`` with ``t = exp(-beta * d)``.
* **Rain** (:func:`add_rain`): the heavy-rain model used by ADS,
  ``O = T * (B + S) + (1 - T) * A`` (Yang et al., JORDER, CVPR 2017; Li et al., "Heavy
  rain image restoration", CVPR 2019): rain streaks ``S`` added to the background ``B``,
  then a rain-accumulation veil with transmission ``T`` and atmospheric light ``A``.
* **Motion blur** (:func:`add_motion_blur`): ``y = k * x`` with a kernel rasterised from a
  random camera trajectory, after Boracchi & Foi (TIP 2012) as used by DeblurGAN
  (Kupyn et al., CVPR 2018).
* **Noise** (:func:`add_gaussian_noise`): additive white Gaussian noise ``y = x + n``,
  ``n ~ N(0, sigma^2)``, ``sigma`` in ``[0, 255]`` units as in the denoising literature
  (e.g. DnCNN, Zhang et al., TIP 2017).

:data:`SYNTHETIC_SETTINGS` holds the ranges of the synthetic (training) domain, :data:`REAL_SETTINGS`
others that imitate the synthetic-to-real gap (denser, tinted, patchy haze; steeper, thicker rain with
a stronger veil; longer, shakier blur; stronger noise); :func:`degrade` applies one kind with either.
"""
import copy
import inspect
import math
import numbers

import cv2
import numpy as np

__all__ = [
    'DEGRADATIONS', 'SETTINGS', 'SYNTHETIC_SETTINGS', 'REAL_SETTINGS', 'add_gaussian_noise', 'add_haze',
    'add_motion_blur', 'add_rain', 'degrade', 'get_settings', 'haze_depth_proxy', 'random_motion_kernel',
    'rain_streak_kernel'
]

# ----------------------------------------------------------------------------------------
# Settings. The keyword defaults of the functions below are the synthetic settings.
# ----------------------------------------------------------------------------------------

#: Parameter ranges of the synthetic (training) domain, per degradation kind.
SYNTHETIC_SETTINGS = {
    # RESIDE ITS ranges (beta in [0.6, 1.8], A in [0.7, 1.0]) on a relative depth in [0, 1];
    # grey airlight and homogeneous haze, as in RESIDE.
    'haze': dict(beta_range=(0.6, 1.8), airlight_range=(0.7, 1.0), airlight_tint=0.0, inhomogeneity=0.0),
    # Rain100L/H-like streaks: thin, near-vertical, a light veil.
    'rain': dict(
        density_range=(0.001, 0.004),
        length_range=(8.0, 20.0),
        angle_range=(-15.0, 15.0),
        width_range=(1.0, 1.5),
        intensity_range=(0.4, 0.8),
        n_layers=(1, 2),
        transmission_range=(0.85, 1.0),
        airlight_range=(0.8, 1.0),
        symmetric_angle=False),
    # Short, mostly smooth trajectories (GoPro/DeblurGAN-like small kernels).
    'blur': dict(kernel_size_range=(7, 17), shake_range=(0.0, 0.5)),
    'noise': dict(sigma=(5.0, 25.0)),
}

#: Parameter ranges imitating real captures: a deliberately different distribution.
REAL_SETTINGS = {
    # Denser haze, airlight tinted per channel (yellowish/bluish real haze) and patchy
    # (spatially varying beta, cf. NH-HAZE).
    'haze': dict(beta_range=(1.6, 3.0), airlight_range=(0.65, 0.95), airlight_tint=0.06, inhomogeneity=0.35),
    # Wind-blown rain: steeper angles either way, wider/longer/denser streaks, more layers,
    # stronger rain-accumulation veil.
    'rain': dict(
        density_range=(0.001, 0.003),
        length_range=(16.0, 36.0),
        angle_range=(15.0, 40.0),
        width_range=(1.8, 3.0),
        intensity_range=(0.2, 0.45),
        n_layers=(2, 3),
        transmission_range=(0.55, 0.85),
        airlight_range=(0.7, 0.95),
        symmetric_angle=True),
    # Longer, shakier hand-held trajectories.
    'blur': dict(kernel_size_range=(19, 31), shake_range=(0.4, 1.0)),
    'noise': dict(sigma=(15.0, 50.0)),
}

#: Settings by domain name, for :func:`degrade` and :func:`get_settings`.
SETTINGS = {'synthetic': SYNTHETIC_SETTINGS, 'real': REAL_SETTINGS}


def get_settings(domain, kind):
    """Return a deep copy of the keyword settings of ``kind`` in ``domain`` ('synthetic' or 'real')."""
    if domain not in SETTINGS:
        raise ValueError(f'domain must be one of {sorted(SETTINGS)}; got {domain!r}')
    _check_kind(kind)
    return copy.deepcopy(SETTINGS[domain][kind])


# ----------------------------------------------------------------------------------------
# Argument checking helpers
# ----------------------------------------------------------------------------------------


def _as_rng(rng):
    """Accept a Generator (used as is, advanced) or an int seed (a fresh generator)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, numbers.Integral) and not isinstance(rng, bool):
        if rng < 0:
            raise ValueError(f'rng must be a numpy.random.Generator or a non-negative int seed; got {rng!r}')
        return np.random.default_rng(int(rng))
    raise ValueError(f'rng must be a numpy.random.Generator or a non-negative int seed; got {type(rng).__name__}')


def _check_image(img, name='img'):
    """Validate a float HW/HWC image in [0, 1]; return it as a float32 array (a view if possible)."""
    if not isinstance(img, np.ndarray):
        raise ValueError(f'{name} must be a numpy array (HW or HWC); got {type(img).__name__}')
    if not np.issubdtype(img.dtype, np.floating):
        raise ValueError(f'{name} must be a floating-point image in [0, 1]; got dtype {img.dtype} '
                         '(convert e.g. with img.astype(np.float32) / 255)')
    if img.ndim not in (2, 3) or img.shape[0] < 1 or img.shape[1] < 1 or (img.ndim == 3 and img.shape[2] < 1):
        raise ValueError(f'{name} must have shape (H, W) or (H, W, C); got {img.shape}')
    img = img.astype(np.float32, copy=False)
    if not np.isfinite(img).all():
        raise ValueError(f'{name} must contain only finite values')
    lo, hi = float(img.min()), float(img.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise ValueError(f'{name} values must lie in [0, 1]; got min {lo:.4g}, max {hi:.4g}')
    return img


def _check_range(name, value, lo, hi, integer=False):
    """Validate a number or a ``(low, high)`` pair within ``[lo, hi]``; return ``(low, high)``."""
    what = 'an int' if integer else 'a number'
    expected = f'{what} or a (low, high) pair with {lo} <= low <= high <= {hi}'
    if isinstance(value, (numbers.Real, np.number)) and not isinstance(value, bool):
        pair = (value, value)
    elif isinstance(value, (tuple, list, np.ndarray)) and len(value) == 2:
        pair = tuple(value)
    else:
        raise ValueError(f'{name} must be {expected}; got {value!r}')
    for v in pair:
        if isinstance(v, bool) or not isinstance(v, (numbers.Real, np.number)) or not math.isfinite(v):
            raise ValueError(f'{name} must be {expected}; got {value!r}')
        if integer and float(v) != int(v):
            raise ValueError(f'{name} must be {expected}; got {value!r}')
    low, high = (int(v) for v in pair) if integer else (float(v) for v in pair)
    if not lo <= low <= high <= hi:
        raise ValueError(f'{name} must be {expected}; got {value!r}')
    return low, high


def _check_scalar(name, value, lo, hi):
    low, high = _check_range(name, value, lo, hi)
    if low != high:
        raise ValueError(f'{name} must be a single number in [{lo}, {hi}]; got {value!r}')
    return low


def _uniform(rng, pair):
    low, high = pair
    return low if low == high else float(rng.uniform(low, high))


def _output(out, params, return_params):
    out = np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)
    return (out, params) if return_params else out


def _channels(img):
    return 1 if img.ndim == 2 else img.shape[2]


def _per_pixel(x, img):
    """Broadcast an HxW map against ``img`` (HW or HWC)."""
    return x if img.ndim == 2 else x[:, :, None]


def _smooth_noise(shape, rng, grid=4):
    """Low-frequency noise in [0, 1]: a random ``grid x grid`` lattice upsampled bicubically."""
    h, w = shape
    lattice = rng.random((grid, grid)).astype(np.float32)
    noise = cv2.resize(lattice, (w, h), interpolation=cv2.INTER_CUBIC)
    return _normalise(noise)


def _check_depth(depth, hw):
    """Validate a user depth map of shape (H, W) or (H, W, 1): finite, non-negative."""
    depth = np.asarray(depth)
    if depth.ndim == 3 and depth.shape[2] == 1:
        depth = depth[:, :, 0]
    if depth.shape != tuple(hw):
        raise ValueError(f'depth must have shape {tuple(hw)} (the image height and width); got {depth.shape}')
    if not np.issubdtype(depth.dtype, np.number) or not np.isfinite(depth).all() or depth.min() < 0:
        raise ValueError('depth must be a finite, non-negative numeric array')
    return depth.astype(np.float32)


def _normalise(x):
    lo, hi = float(x.min()), float(x.max())
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)


def _filter(img, kernel, border=cv2.BORDER_REFLECT):
    """Convolve (not correlate) ``img`` with ``kernel`` per channel, keeping the input's shape."""
    flipped = np.ascontiguousarray(kernel[::-1, ::-1], dtype=np.float32)
    src = np.ascontiguousarray(img, dtype=np.float32)
    out = cv2.filter2D(src, cv2.CV_32F, flipped, borderType=border)
    return out.reshape(img.shape)


# ----------------------------------------------------------------------------------------
# Haze
# ----------------------------------------------------------------------------------------


def haze_depth_proxy(shape, rng):
    """A smooth, scene-agnostic relative depth map in ``[0, 1]`` for images without depth.

    Synthetic haze needs a depth ``d`` (RESIDE estimates one per photo with a CNN); for
    arbitrary patches we use a geometric proxy, a random convex blend of

    * a planar ramp growing towards a random direction within 60 degrees of "up" (ground
      planes recede towards the horizon, which lies above them in most photographs),
    * the closeness to a random vanishing point (depth peaks there and falls off radially),
    * low-frequency noise (a bicubically upsampled 4x4 random lattice) for non-planar scenes,

    normalised to ``[0, 1]`` (0 nearest, 1 farthest).

    Args:
        shape: ``(H, W)`` (extra trailing dimensions are ignored).
        rng: a :class:`numpy.random.Generator` or an int seed.

    Returns:
        float32 array ``(H, W)`` in ``[0, 1]``.
    """
    rng = _as_rng(rng)
    h, w = int(shape[0]), int(shape[1])
    if h < 1 or w < 1:
        raise ValueError(f'shape must be a positive (H, W); got {tuple(shape)}')
    scale = float(max(h, w))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy /= scale
    xx /= scale
    # Planar ramp: "far" direction = up (-y) rotated by at most 60 degrees.
    phi = math.radians(rng.uniform(-60.0, 60.0))
    ramp = _normalise(xx * math.sin(phi) - yy * math.cos(phi))
    # Radial term around a vanishing point in the central part of the frame.
    vy, vx = rng.uniform(0.15, 0.85, size=2) * np.array([h, w], dtype=np.float64) / scale
    radial = _normalise(-np.sqrt((yy - vy)**2 + (xx - vx)**2))
    noise = _smooth_noise((h, w), rng)
    weights = rng.dirichlet([2.0, 1.5, 1.0]).astype(np.float32)
    depth = weights[0] * ramp + weights[1] * radial + weights[2] * noise
    return _normalise(depth).astype(np.float32)


def add_haze(img,
             rng,
             beta_range=SYNTHETIC_SETTINGS['haze']['beta_range'],
             airlight_range=SYNTHETIC_SETTINGS['haze']['airlight_range'],
             depth=None,
             airlight_tint=0.0,
             inhomogeneity=0.0,
             return_params=False):
    """Add haze with the atmospheric scattering model (Koschmieder; RESIDE ITS/OTS synthesis).

    ``I = J * t + A * (1 - t)``, ``t = exp(-beta * d)``, where ``J`` is the clean image,
    ``A`` the global atmospheric light, ``beta`` the scattering coefficient and ``d`` the
    scene depth. RESIDE (Li et al., TIP 2019) draws ``beta`` in [0.6, 1.8] and ``A`` in
    [0.7, 1.0] for its indoor set (ITS) with a depth normalised to [0, 1]; the defaults use
    those ranges.

    Args:
        img: float image in [0, 1], HW or HWC.
        rng: a :class:`numpy.random.Generator` or an int seed.
        beta_range: scattering coefficient range, within [0, 10].
        airlight_range: atmospheric light ``A`` range, within [0, 1].
        depth: optional ``(H, W)`` (or ``(H, W, 1)``) non-negative relative depth, in the
            units that make ``beta * d`` the optical thickness (typically [0, 1]); when
            ``None`` a :func:`haze_depth_proxy` is drawn.
        airlight_tint: each channel's ``A`` is shifted by a uniform draw in
            ``[-airlight_tint, airlight_tint]`` (0 = grey airlight), within [0, 0.5].
        inhomogeneity: relative spatial variation of ``beta`` (non-homogeneous haze):
            ``beta(x) = beta * (1 + inhomogeneity * (2 * u(x) - 1))`` with ``u`` smooth noise
            in [0, 1]; within [0, 1].
        return_params: also return a dict with the drawn ``beta``, ``airlight`` (per
            channel) and the transmission map ``t``.

    Returns:
        float32 hazy image in [0, 1] (and the params dict if ``return_params``).
    """
    img = _check_image(img)
    rng = _as_rng(rng)
    beta_range = _check_range('beta_range', beta_range, 0.0, 10.0)
    airlight_range = _check_range('airlight_range', airlight_range, 0.0, 1.0)
    airlight_tint = _check_scalar('airlight_tint', airlight_tint, 0.0, 0.5)
    inhomogeneity = _check_scalar('inhomogeneity', inhomogeneity, 0.0, 1.0)
    h, w = img.shape[:2]
    depth = haze_depth_proxy((h, w), rng) if depth is None else _check_depth(depth, (h, w))
    beta = _uniform(rng, beta_range)
    airlight = _uniform(rng, airlight_range)
    tint = rng.uniform(-airlight_tint, airlight_tint, size=_channels(img)) if airlight_tint > 0 else np.zeros(
        _channels(img))
    airlight_c = np.clip(airlight + tint, 0.0, 1.0).astype(np.float32)
    beta_map = np.float32(beta)
    if inhomogeneity > 0:
        beta_map = beta * (1.0 + inhomogeneity * (2.0 * _smooth_noise((h, w), rng) - 1.0))
    t = np.exp(-beta_map * depth).astype(np.float32)
    t = _per_pixel(t, img)
    a = airlight_c[0] if img.ndim == 2 else airlight_c
    out = img * t + a * (1.0 - t)
    params = dict(beta=beta, airlight=airlight_c.tolist(), transmission=np.squeeze(t))
    return _output(out, params, return_params)


# ----------------------------------------------------------------------------------------
# Rain
# ----------------------------------------------------------------------------------------


def rain_streak_kernel(length, angle, width=1.0):
    """A normalised (sum 1) line kernel for one rain streak.

    The kernel is a segment of ``length`` pixels through the centre with a Gaussian
    cross-section whose full width at half maximum is ``width`` pixels and soft (1-pixel
    linear) ends, rotated by ``angle``: degrees from the vertical, positive clockwise as
    displayed (the top end leans right, "/"), negative the other way ("\\"). Built
    analytically on a coordinate grid, so it is exact for sub-pixel angles and widths.

    Args:
        length: streak length in pixels, within [1, 200].
        angle: degrees from vertical, within [-90, 90].
        width: full width at half maximum in pixels, within [0.5, 20].

    Returns:
        float32 square kernel of odd size, summing to 1.
    """
    length = _check_scalar('length', length, 1.0, 200.0)
    angle = _check_scalar('angle', angle, -90.0, 90.0)
    width = _check_scalar('width', width, 0.5, 20.0)
    sigma = width / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    half = int(math.ceil(length / 2.0 + 3.0 * sigma)) + 1
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1].astype(np.float32)
    theta = math.radians(angle)
    # Unit vector towards the streak's top end in (x right, y down) pixel coordinates.
    ux, uy = math.sin(theta), -math.cos(theta)
    along = xx * ux + yy * uy
    across = xx * uy - yy * ux
    profile_along = np.clip(length / 2.0 + 0.5 - np.abs(along), 0.0, 1.0)
    profile_across = np.exp(-across**2 / (2.0 * sigma**2))
    kernel = (profile_along * profile_across).astype(np.float32)
    return kernel / kernel.sum()


def add_rain(img,
             rng,
             density_range=SYNTHETIC_SETTINGS['rain']['density_range'],
             length_range=SYNTHETIC_SETTINGS['rain']['length_range'],
             angle_range=SYNTHETIC_SETTINGS['rain']['angle_range'],
             width_range=SYNTHETIC_SETTINGS['rain']['width_range'],
             intensity_range=SYNTHETIC_SETTINGS['rain']['intensity_range'],
             n_layers=SYNTHETIC_SETTINGS['rain']['n_layers'],
             transmission_range=SYNTHETIC_SETTINGS['rain']['transmission_range'],
             airlight_range=SYNTHETIC_SETTINGS['rain']['airlight_range'],
             symmetric_angle=False,
             depth=None,
             return_params=False):
    """Add rain with the heavy-rain model used by ADS: ``O = T * (B + S) + (1 - T) * A``.

    ``B`` is the clean background, ``S = sum_i S_i`` the rain-streak layers, ``T`` the
    transmission of the rain-accumulation veil and ``A`` the atmospheric light (Yang et al.,
    "Deep joint rain detection and removal", CVPR 2017; Li et al., "Heavy rain image
    restoration", CVPR 2019). Each streak layer is made as in the usual Photoshop-style
    synthesis: seed pixels are drawn with probability ``density`` and brightness
    U(0.6, 1) (on a canvas padded by the streak radius, so streaks also cross the borders),
    then blurred with a :func:`rain_streak_kernel` (scaled to peak 1) of random length and
    width, and scaled by ``intensity``. All layers share one angle (one wind
    direction). The veil follows depth like haze: ``T(x) = T_far ** d(x)``, i.e.
    ``exp(-beta d)`` with ``beta = -ln T_far``, using :func:`haze_depth_proxy` when no
    ``depth`` is given, so ``T`` is 1 at the nearest point and ``T_far`` at the farthest.
    Streaks are colourless (added equally to every channel).

    Args:
        img: float image in [0, 1], HW or HWC.
        rng: a :class:`numpy.random.Generator` or an int seed.
        density_range: probability of a pixel seeding a streak, within [0, 0.2].
        length_range: streak length in pixels, within [1, 200].
        angle_range: streak angle in degrees from vertical, positive clockwise ("/"),
            within [-90, 90].
        width_range: streak width (FWHM) in pixels, within [0.5, 20].
        intensity_range: peak brightness of a streak, within [0, 1].
        n_layers: number of streak layers (an int or an int range), within [1, 8].
        transmission_range: ``T_far``, the veil transmission at the farthest depth, within
            [0, 1] (1 = no veil).
        airlight_range: atmospheric light ``A``, within [0, 1].
        symmetric_angle: if true the drawn angle's sign is flipped with probability 1/2
            (wind from either side).
        depth: optional ``(H, W)`` non-negative relative depth for the veil.
        return_params: also return a dict with the drawn values and the streak layer ``S``.

    Returns:
        float32 rainy image in [0, 1] (and the params dict if ``return_params``).
    """
    img = _check_image(img)
    rng = _as_rng(rng)
    density_range = _check_range('density_range', density_range, 0.0, 0.2)
    length_range = _check_range('length_range', length_range, 1.0, 200.0)
    angle_range = _check_range('angle_range', angle_range, -90.0, 90.0)
    width_range = _check_range('width_range', width_range, 0.5, 20.0)
    intensity_range = _check_range('intensity_range', intensity_range, 0.0, 1.0)
    n_layers = _check_range('n_layers', n_layers, 1, 8, integer=True)
    transmission_range = _check_range('transmission_range', transmission_range, 0.0, 1.0)
    airlight_range = _check_range('airlight_range', airlight_range, 0.0, 1.0)
    if not isinstance(symmetric_angle, (bool, np.bool_)):
        raise ValueError(f'symmetric_angle must be a bool; got {symmetric_angle!r}')
    h, w = img.shape[:2]
    if depth is not None:
        depth = _check_depth(depth, (h, w))

    angle = _uniform(rng, angle_range)
    if symmetric_angle and rng.random() < 0.5:
        angle = -angle
    layers = int(rng.integers(n_layers[0], n_layers[1] + 1))
    streaks = np.zeros((h, w), np.float32)
    drawn = []
    for _ in range(layers):  # a handful of layers, each fully vectorised
        density = _uniform(rng, density_range)
        length = _uniform(rng, length_range)
        width = _uniform(rng, width_range)
        intensity = _uniform(rng, intensity_range)
        kernel = rain_streak_kernel(length, angle, width)
        # Seeds on a canvas padded by the kernel radius, so streaks also enter from outside
        # the frame (a stationary rain field cut by the image borders).
        pad = kernel.shape[0] // 2
        hp, wp = h + 2 * pad, w + 2 * pad
        seeds = ((rng.random((hp, wp)) < density) * rng.uniform(0.6, 1.0, size=(hp, wp))).astype(np.float32)
        layer = _filter(seeds, kernel / kernel.max(), border=cv2.BORDER_CONSTANT)[pad:pad + h, pad:pad + w]
        streaks += intensity * np.clip(layer, 0.0, 1.0)
        drawn.append(dict(density=density, length=length, width=width, intensity=intensity))
    streaks = np.clip(streaks, 0.0, 1.0)

    t_far = _uniform(rng, transmission_range)
    airlight = _uniform(rng, airlight_range)
    if t_far < 1.0:
        depth = haze_depth_proxy((h, w), rng) if depth is None else depth
        t = np.power(np.float32(max(t_far, 1e-6)), depth).astype(np.float32)
    else:
        t = np.ones((h, w), np.float32)
    t = _per_pixel(t, img)
    out = t * (img + _per_pixel(streaks, img)) + (1.0 - t) * airlight
    params = dict(angle=angle, layers=drawn, transmission_far=t_far, airlight=airlight, streaks=streaks)
    return _output(out, params, return_params)


# ----------------------------------------------------------------------------------------
# Motion blur
# ----------------------------------------------------------------------------------------


def random_motion_kernel(rng,
                         kernel_size_range=SYNTHETIC_SETTINGS['blur']['kernel_size_range'],
                         shake_range=SYNTHETIC_SETTINGS['blur']['shake_range'],
                         steps=64):
    """Draw a motion-blur kernel from a random camera trajectory (after Boracchi & Foi, 2012).

    The trajectory is a 2-D path of ``steps`` points whose heading performs a random walk
    (Gaussian turns of scale ``0.5 * shake`` radians per step, plus occasional impulsive
    jerks with probability ``0.05 * shake``) and whose speed fluctuates by ``shake``; a
    ``shake`` of 0 gives straight linear motion. It is centred on its centroid (so the blur
    does not shift the image), scaled so its farthest point lies at 60-100 % of the kernel
    radius, and rasterised with bilinear splatting into a ``size x size`` kernel (``size``
    odd, drawn from ``kernel_size_range``), normalised to sum 1.

    Args:
        rng: a :class:`numpy.random.Generator` or an int seed.
        kernel_size_range: kernel size (an int or int range) within [3, 101]; only odd
            sizes are drawn, and the range must contain one.
        shake_range: trajectory irregularity within [0, 1].
        steps: number of trajectory points (>= 2).

    Returns:
        float32 ``(size, size)`` kernel, non-negative, summing to 1.
    """
    rng = _as_rng(rng)
    lo, hi = _check_range('kernel_size_range', kernel_size_range, 3, 101, integer=True)
    shake_range = _check_range('shake_range', shake_range, 0.0, 1.0)
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 2:
        raise ValueError(f'steps must be an int >= 2; got {steps!r}')
    odd_lo, odd_hi = lo + (1 - lo % 2), hi - (1 - hi % 2)
    if odd_lo > odd_hi:
        raise ValueError(f'kernel_size_range must contain an odd size; got {kernel_size_range!r}')
    size = int(odd_lo + 2 * rng.integers(0, (odd_hi - odd_lo) // 2 + 1))
    shake = _uniform(rng, shake_range)

    heading0 = rng.uniform(0.0, 2.0 * math.pi)
    turns = rng.normal(0.0, 0.5 * shake, size=steps)
    jerks = (rng.random(steps) < 0.05 * shake) * rng.uniform(-math.pi / 2, math.pi / 2, size=steps)
    heading = heading0 + np.cumsum(turns + jerks)
    speed = np.clip(1.0 + shake * rng.normal(0.0, 0.5, size=steps), 0.1, None)
    path = np.cumsum(np.stack([speed * np.cos(heading), speed * np.sin(heading)], axis=1), axis=0)
    path -= path.mean(axis=0)
    radius = np.sqrt((path**2).sum(axis=1)).max()
    centre = (size - 1) / 2.0
    extent = rng.uniform(0.6, 1.0) * centre
    path = path * (extent / radius if radius > 0 else 0.0) + centre

    # Bilinear splatting of the trajectory points (x = column, y = row).
    x0 = np.floor(path[:, 0]).astype(int)
    y0 = np.floor(path[:, 1]).astype(int)
    fx, fy = path[:, 0] - x0, path[:, 1] - y0
    kernel = np.zeros((size, size), np.float64)
    for dx, dy, wgt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        xs, ys = np.clip(x0 + dx, 0, size - 1), np.clip(y0 + dy, 0, size - 1)
        np.add.at(kernel, (ys, xs), wgt)
    kernel /= kernel.sum()
    return kernel.astype(np.float32)


def add_motion_blur(img,
                    rng,
                    kernel_size_range=SYNTHETIC_SETTINGS['blur']['kernel_size_range'],
                    shake_range=SYNTHETIC_SETTINGS['blur']['shake_range'],
                    kernel=None,
                    return_params=False):
    """Blur with a random camera-motion kernel: ``y = k * x`` (Boracchi & Foi 2012; DeblurGAN).

    The kernel comes from :func:`random_motion_kernel` (or is given) and is applied as a
    true convolution per channel with :func:`cv2.filter2D` and reflected borders
    (``cv2.BORDER_REFLECT``).

    Args:
        img: float image in [0, 1], HW or HWC.
        rng: a :class:`numpy.random.Generator` or an int seed.
        kernel_size_range: see :func:`random_motion_kernel`.
        shake_range: see :func:`random_motion_kernel`.
        kernel: optional explicit 2-D non-negative kernel (normalised to sum 1 here).
        return_params: also return a dict holding the ``kernel``.

    Returns:
        float32 blurred image in [0, 1] (and the params dict if ``return_params``).
    """
    img = _check_image(img)
    rng = _as_rng(rng)
    if kernel is None:
        kernel = random_motion_kernel(rng, kernel_size_range, shake_range)
    else:
        kernel = np.asarray(kernel, dtype=np.float64)
        if kernel.ndim != 2 or not np.isfinite(kernel).all() or kernel.min() < 0 or kernel.sum() <= 0:
            raise ValueError('kernel must be a finite, non-negative 2-D array with a positive sum')
        kernel = (kernel / kernel.sum()).astype(np.float32)
    out = _filter(img, kernel)
    return _output(out, dict(kernel=kernel), return_params)


# ----------------------------------------------------------------------------------------
# Noise
# ----------------------------------------------------------------------------------------


def add_gaussian_noise(img, rng, sigma=SYNTHETIC_SETTINGS['noise']['sigma'], per_channel=True, return_params=False):
    """Add white Gaussian noise: ``y = clip(x + n)``, ``n ~ N(0, (sigma / 255)^2)``.

    ``sigma`` is in **[0, 255] units** (sigma=25 means a standard deviation of 25/255 on the
    [0, 1] image), the convention of the denoising literature (DnCNN, Zhang et al. 2017);
    before clipping, the standard deviation of ``noisy - clean`` is ``sigma / 255``.

    Args:
        img: float image in [0, 1], HW or HWC.
        rng: a :class:`numpy.random.Generator` or an int seed.
        sigma: noise level in [0, 255] units, a number or a ``(low, high)`` range.
        per_channel: independent noise per channel (colour noise); if false one noise
            field is shared by all channels (luminance noise).
        return_params: also return a dict with the drawn ``sigma`` and the unclipped
            ``noise`` field.

    Returns:
        float32 noisy image in [0, 1] (and the params dict if ``return_params``).
    """
    img = _check_image(img)
    rng = _as_rng(rng)
    sigma = _uniform(rng, _check_range('sigma', sigma, 0.0, 255.0))
    if not isinstance(per_channel, (bool, np.bool_)):
        raise ValueError(f'per_channel must be a bool; got {per_channel!r}')
    shape = img.shape if (per_channel or img.ndim == 2) else img.shape[:2] + (1, )
    noise = rng.standard_normal(shape, dtype=np.float32) * np.float32(sigma / 255.0)
    return _output(img + noise, dict(sigma=sigma, noise=noise), return_params)


# ----------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------

#: Degradation functions by kind.
DEGRADATIONS = {
    'haze': add_haze,
    'rain': add_rain,
    'blur': add_motion_blur,
    'noise': add_gaussian_noise,
}


def _check_kind(kind):
    if kind not in DEGRADATIONS:
        raise ValueError(f'kind must be one of {sorted(DEGRADATIONS)}; got {kind!r}')


def degrade(img, kind, rng, domain=None, **settings):
    """Apply the degradation ``kind`` ('haze', 'rain', 'blur' or 'noise') to ``img``.

    Args:
        img: float image in [0, 1], HW or HWC.
        kind: a key of :data:`DEGRADATIONS`.
        rng: a :class:`numpy.random.Generator` or an int seed.
        domain: ``None`` (the function's defaults, i.e. the synthetic settings),
            ``'synthetic'`` or ``'real'`` (start from :data:`SYNTHETIC_SETTINGS` /
            :data:`REAL_SETTINGS`).
        **settings: keyword arguments of the degradation function, overriding the domain's.

    Returns:
        The degraded float32 image (and a params dict if ``return_params=True``).
    """
    _check_kind(kind)
    fn = DEGRADATIONS[kind]
    kwargs = {} if domain is None else get_settings(domain, kind)
    kwargs.update(settings)
    accepted = set(inspect.signature(fn).parameters) - {'img', 'rng'}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise ValueError(f'unknown setting(s) {unknown} for kind {kind!r}; expected some of {sorted(accepted)}')
    return fn(img, rng, **kwargs)
