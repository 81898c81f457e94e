#!/usr/bin/env python
"""Build the small embedded haze/rain/blur demo dataset from photographs shipped in packages.

No download is needed: the clean photographs are the sample images of scikit-image (required),
scikit-learn and matplotlib (optional: skipped, and reported, when not installed), assigned to
disjoint splits whatever is installed (train: astronaut, coffee, motorcycle, china; val: chelsea,
flower; real: rocket, grace_hopper; each split keeps a scikit-image photo). Patches are cropped from
them (``train``: random crops; ``val``, ``real``: non-overlapping tiles, none flat, see ``min_detail``)
and degraded with :mod:`uniremoval.data.degradations`: ``train`` and ``val`` with its
``SYNTHETIC_SETTINGS``, ``real`` with its ``REAL_SETTINGS``; ``n_clear`` other ``real`` tiles stay clean
for unpaired domain adaptation (details: docs/design.md, "Demo dataset").

Layout (BasicSR paired-folder style, identical file names in ``lq`` and ``gt``)::

    <out>/train/<kind>/{lq,gt}/<photo>_<index>.png     kind in haze, rain, blur
    <out>/val/<kind>/{lq,gt}/<photo>_<index>.png
    <out>/real/<kind>/{lq,gt}/<photo>_<index>.png      gt kept aside for scoring only
    <out>/real/clear/<photo>_<index>.png               clean real patches (unpaired)
    <out>/manifest.json                                photos per split, settings, seed, counts, crops

Images are 8-bit BGR PNGs. The build is deterministic: each patch draws from its own generator seeded
by ``(seed, split, kind, photo, index)``, so a given seed gives pixel-identical files. ``<out>`` is
written in a hidden temporary directory and renamed into place at the end.

Usage: ``python -m uniremoval.demo.data --out datasets/demo [--seed 0] [--overwrite]`` (or
``datasets_prep/build_demo_data.py``, the same).
"""
import argparse
import json
import os
import platform
import shutil
import sys
import time
import uuid
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from uniremoval.commands.common import add_version_argument
from uniremoval.data import degradations as D
from uniremoval.utils.atomic_io import temp_prefix

__all__ = ['ALL_KINDS', 'KINDS', 'PHOTO_SPLITS', 'PHOTO_SOURCES', 'build_demo_data', 'load_photos', 'main']

#: Degradation kinds built by default, in order.
KINDS = ('haze', 'rain', 'blur')

#: Every kind the builder can synthesise (``kinds``), e.g. ADS's Rain-Blur-Noise set ('rain', 'blur', 'noise').
ALL_KINDS = ('haze', 'rain', 'blur', 'noise')

#: Source photos of each split (disjoint).
PHOTO_SPLITS = {
    'train': ('astronaut', 'coffee', 'motorcycle', 'china'),
    'val': ('chelsea', 'flower'),
    'real': ('rocket', 'grace_hopper'),
}

#: Where each photo comes from: (package, how it is loaded, required).
PHOTO_SOURCES = {
    'astronaut': ('scikit-image', 'skimage.data.astronaut()', True),
    'coffee': ('scikit-image', 'skimage.data.coffee()', True),
    'motorcycle': ('scikit-image', 'skimage.data.stereo_motorcycle()[0]', True),
    'chelsea': ('scikit-image', 'skimage.data.chelsea()', True),
    'rocket': ('scikit-image', 'skimage.data.rocket()', True),
    'china': ('scikit-learn', "sklearn.datasets.load_sample_image('china.jpg')", False),
    'flower': ('scikit-learn', "sklearn.datasets.load_sample_image('flower.jpg')", False),
    'grace_hopper': ('matplotlib', "matplotlib.cbook.get_sample_data('grace_hopper.jpg')", False),
}

# Stable indices for seeding: independent of which photos are available.
_PHOTO_INDEX = {name: i for i, name in enumerate(PHOTO_SOURCES)}
_SPLIT_INDEX = {'train': 0, 'val': 1, 'real': 2, 'clear': 3}
_KIND_INDEX = {kind: i for i, kind in enumerate(D.DEGRADATIONS)}
_SPLIT_DOMAIN = {'train': 'synthetic', 'val': 'synthetic', 'real': 'real'}


def _load_rgb(name):
    """Load one photo as an RGB uint8 array; ImportError when its package is missing."""
    if name in ('astronaut', 'coffee', 'chelsea', 'rocket'):
        import skimage.data
        return getattr(skimage.data, name)()
    if name == 'motorcycle':
        import skimage.data
        return skimage.data.stereo_motorcycle()[0]
    if name in ('china', 'flower'):
        from sklearn.datasets import load_sample_image
        return load_sample_image(f'{name}.jpg')
    if name == 'grace_hopper':
        import matplotlib.cbook
        path = matplotlib.cbook.get_sample_data('grace_hopper.jpg', asfileobj=False)
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise OSError(f'cannot read {path}')
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    raise ValueError(f'unknown photo {name!r}; expected one of {sorted(PHOTO_SOURCES)}')


def load_photos(names=None):
    """Load the source photos as BGR uint8 arrays.

    Args:
        names: photo names (keys of :data:`PHOTO_SOURCES`); all of them by default.

    Returns:
        ``(photos, skipped)``: ``{name: HxWx3 uint8 BGR}`` and ``{name: reason}`` for the
        optional photos whose package is missing or unreadable.

    Raises:
        RuntimeError: a required (scikit-image) photo cannot be loaded.
    """
    photos, skipped = {}, {}
    for name in (PHOTO_SOURCES if names is None else names):
        package, _, required = PHOTO_SOURCES[name]
        try:
            rgb = _load_rgb(name)
        except (ImportError, OSError) as err:
            if required:
                raise RuntimeError(f'cannot load the required photo {name!r} from {package}: {err}') from err
            skipped[name] = f'{package} unavailable ({type(err).__name__}: {err})'
            continue
        rgb = np.asarray(rgb)
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] < 3:
            raise RuntimeError(f'photo {name!r} is not an RGB uint8 image: {rgb.dtype} {rgb.shape}')
        photos[name] = np.ascontiguousarray(cv2.cvtColor(rgb[:, :, :3], cv2.COLOR_RGB2BGR))
    return photos, skipped


def _rng(seed, split, kind, photo, index):
    """A generator for one patch (or one photo's crop layout when kind/index are -1)."""
    kind_i = -1 if kind is None else _KIND_INDEX[kind]
    key = [seed, _SPLIT_INDEX[split], kind_i + 1, _PHOTO_INDEX[photo], index + 1]
    return np.random.default_rng(key)


def _detail_integral(img):
    """Integral image of the squared Laplacian of the grey image in [0, 1] (for box detail scores)."""
    grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float32) / 255.0
    return cv2.integral(cv2.Laplacian(grey, cv2.CV_32F)**2, sdepth=cv2.CV_64F)


def _detail(integral, ys, xs, size):
    """Mean squared Laplacian inside the ``size x size`` boxes at (ys, xs): a flatness score."""
    ys, xs = np.asarray(ys), np.asarray(xs)
    total = (integral[ys + size, xs + size] - integral[ys, xs + size] - integral[ys + size, xs] + integral[ys, xs])
    return total / float(size * size)


def _random_boxes(photo, integral, size, n, rng, min_detail):
    """``n`` random (possibly overlapping) ``size x size`` boxes (y, x) with detail >= ``min_detail``."""
    h, w = integral.shape[0] - 1, integral.shape[1] - 1
    boxes, drawn = [], 0
    while len(boxes) < n:
        if drawn > 200 * n + 1000:
            raise ValueError(f'photo {photo!r} has too few {size}x{size} crops with detail >= min_detail='
                             f'{min_detail}; lower min_detail or train_size')
        m = max(4 * (n - len(boxes)), 16)
        ys = rng.integers(0, h - size + 1, size=m)
        xs = rng.integers(0, w - size + 1, size=m)
        keep = _detail(integral, ys, xs, size) >= min_detail
        boxes.extend((int(y), int(x)) for y, x in zip(ys[keep], xs[keep]))
        drawn += m
    return boxes[:n]


def _grid_boxes(integral, size, rng):
    """All non-overlapping tiles of a randomly offset ``size`` grid in random order, with their detail."""
    h, w = integral.shape[0] - 1, integral.shape[1] - 1
    rows, cols = h // size, w // size
    oy = int(rng.integers(0, h - rows * size + 1))
    ox = int(rng.integers(0, w - cols * size + 1))
    boxes = [(oy + r * size, ox + c * size) for r in range(rows) for c in range(cols)]
    boxes = [boxes[i] for i in rng.permutation(len(boxes))]
    detail = _detail(integral, [b[0] for b in boxes], [b[1] for b in boxes], size) if boxes else np.zeros(0)
    return boxes, detail


def _to_float(patch):
    return patch.astype(np.float32) / 255.0


def _to_uint8(img):
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def _write_png(path, img):
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), img):
        raise OSError(f'cv2.imwrite failed for {path}')


def _check_count(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f'{name} must be an int >= {minimum}; got {value!r}')
    return int(value)


def _plan(photos, seed, n_train, n_val, n_real, n_clear, train_size, val_size, real_size, kinds, min_detail):
    """List every patch to write as (relative folder, file name, photo, box, size, split, kind, index)."""
    jobs = []
    sizes = {'train': train_size, 'val': val_size, 'real': real_size}
    for split, names in PHOTO_SPLITS.items():
        size = sizes[split]
        for photo in names:
            if photo not in photos:
                continue
            img = photos[photo]
            if img.shape[0] < size or img.shape[1] < size:
                raise ValueError(f'{split}_size={size} is larger than photo {photo!r} ({img.shape[0]}x{img.shape[1]})')
            integral = _detail_integral(img)
            if split == 'train':
                for kind in kinds:
                    boxes = _random_boxes(photo, integral, size, n_train, _rng(seed, split, kind, photo, -1),
                                          min_detail)
                    jobs += [(f'train/{kind}', f'{photo}_{i:03d}.png', photo, box, size, split, kind, i)
                             for i, box in enumerate(boxes)]
                continue
            tiles, detail = _grid_boxes(integral, size, _rng(seed, split, None, photo, -1))
            n_paired = n_val if split == 'val' else n_real
            paired = [box for box, d in zip(tiles, detail) if d >= min_detail][:n_paired]
            if len(paired) < n_paired:
                raise ValueError(f'{"n_val" if split == "val" else "n_real"}={n_paired} exceeds the {len(paired)} '
                                 f'non-overlapping {size}x{size} tiles of photo {photo!r} with detail >= '
                                 f'min_detail={min_detail}; lower it, min_detail or {split}_size')
            for kind in kinds:
                jobs += [(f'{split}/{kind}', f'{photo}_{i:03d}.png', photo, box, size, split, kind, i)
                         for i, box in enumerate(paired)]
            if split == 'real':
                # Clean tiles: any tile (flat ones included) not used by the degraded pairs.
                clear = [box for box in tiles if box not in paired][:n_clear]
                if len(clear) < n_clear:
                    raise ValueError(f'n_clear={n_clear} exceeds the {len(clear)} {size}x{size} tiles of photo '
                                     f'{photo!r} left after the n_real={n_real} degraded ones; lower it or real_size')
                jobs += [('real/clear', f'{photo}_{i:03d}.png', photo, box, size, 'clear', None, i)
                         for i, box in enumerate(clear)]
    return jobs


def build_demo_data(out_dir,
                    seed=0,
                    n_train=64,
                    n_val=6,
                    n_real=8,
                    n_clear=12,
                    train_size=64,
                    val_size=96,
                    real_size=96,
                    kinds=KINDS,
                    min_detail=5e-4,
                    overwrite=False,
                    progress=True):
    """Build the demo dataset into ``out_dir`` (see the module docstring for layout and splits).

    Args:
        out_dir: destination folder; must not exist unless ``overwrite``.
        seed: base seed; the same seed gives pixel-identical files.
        n_train: random train patches per photo and kind.
        n_val: val tiles per photo (shared by the kinds).
        n_real: degraded real tiles per photo (shared by the kinds).
        n_clear: clean real tiles per photo in ``real/clear``, disjoint from the degraded ones.
        train_size: side of the square train patches.
        val_size: side of the square val tiles.
        real_size: side of the square real tiles (degraded and clear).
        kinds: degradation kinds to build, a subset of :data:`ALL_KINDS` ('haze', 'rain', 'blur', 'noise').
        min_detail: flat patches are skipped: degraded patches (train, val, real) must have a
            mean squared Laplacian of their grey version in [0, 1] of at least this (5e-4
            drops flat sky and out-of-focus background, on which blur is invisible); 0 keeps
            all. ``real/clear`` tiles are not filtered.
        overwrite: replace an existing ``out_dir`` (atomically, once the new one is complete).
        progress: show a tqdm progress bar.

    Returns:
        The manifest dict that is also written to ``<out_dir>/manifest.json``.

    Raises:
        FileExistsError: ``out_dir`` exists and ``overwrite`` is false.
        ValueError: a bad count, size or kind.
    """
    started = time.time()
    seed = _check_count('seed', seed, 0)
    n_train = _check_count('n_train', n_train, 0)
    n_val = _check_count('n_val', n_val, 0)
    n_real = _check_count('n_real', n_real, 0)
    n_clear = _check_count('n_clear', n_clear, 0)
    train_size = _check_count('train_size', train_size, 8)
    val_size = _check_count('val_size', val_size, 8)
    real_size = _check_count('real_size', real_size, 8)
    if isinstance(min_detail, bool) or not isinstance(min_detail, (int, float)) or not 0 <= min_detail < 1:
        raise ValueError(f'min_detail must be a number in [0, 1); got {min_detail!r}')
    if isinstance(kinds, str):
        kinds = (kinds, )
    kinds = tuple(kinds)
    if not kinds or len(set(kinds)) != len(kinds) or not set(kinds) <= set(ALL_KINDS):
        raise ValueError(f'kinds must be a non-empty subset of {ALL_KINDS} without repeats; got {kinds!r}')
    out = Path(out_dir).absolute()
    if (out.exists() or out.is_symlink()) and not overwrite:
        raise FileExistsError(f'{out} already exists; pass overwrite=True (--overwrite) to replace it')

    photos, skipped = load_photos()
    jobs = _plan(photos, seed, n_train, n_val, n_real, n_clear, train_size, val_size, real_size, kinds, min_detail)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f'{temp_prefix(out.parent, out.name, extra=32)}tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}'
    tmp.mkdir()
    try:
        crops = {}
        for folder, name, photo, (y, x), size, split, kind, index in tqdm(
                jobs, desc=f'building {out.name}', unit='img', disable=not progress):
            patch = photos[photo][y:y + size, x:x + size]
            crops.setdefault(folder, {})[name] = [photo, y, x, size, size]
            if kind is None:  # real/clear
                _write_png(tmp / folder / name, patch)
                continue
            lq = D.degrade(_to_float(patch), kind, _rng(seed, split, kind, photo, index), domain=_SPLIT_DOMAIN[split])
            _write_png(tmp / folder / 'gt' / name, patch)
            _write_png(tmp / folder / 'lq' / name, _to_uint8(lq))

        counts = {split: {kind: len(crops.get(f'{split}/{kind}', {})) for kind in kinds} for split in PHOTO_SPLITS}
        counts['real']['clear'] = len(crops.get('real/clear', {}))
        manifest = {
            'description': 'uniremoval demo data: haze/rain/blur patches synthesised from photographs bundled '
                           'with scikit-image, scikit-learn and matplotlib (datasets_prep/build_demo_data.py)',
            'seed': seed,
            'kinds': list(kinds),
            'photos': {split: [p for p in names if p in photos] for split, names in PHOTO_SPLITS.items()},
            'skipped_photos': skipped,
            'sources': {name: {'package': PHOTO_SOURCES[name][0], 'call': PHOTO_SOURCES[name][1],
                               'shape': list(photos[name].shape)} for name in photos},
            'patch_size': {'train': train_size, 'val': val_size, 'real': real_size},
            'per_photo': {'n_train (per kind)': n_train, 'n_val': n_val, 'n_real': n_real, 'n_clear': n_clear},
            'min_detail': min_detail,
            'counts': counts,
            'settings': {split: {'domain': _SPLIT_DOMAIN[split],
                                 **{kind: D.get_settings(_SPLIT_DOMAIN[split], kind) for kind in kinds}}
                         for split in PHOTO_SPLITS},
            'layout': {
                'train/<kind>/{lq,gt}': 'random crops, synthetic settings',
                'val/<kind>/{lq,gt}': 'non-overlapping tiles, synthetic settings',
                'real/<kind>/{lq,gt}': 'non-overlapping tiles, real settings; gt for scoring only',
                'real/clear': 'clean non-overlapping tiles of the real photos, disjoint from real/<kind>',
            },
            'crops': {folder: crops[folder] for folder in sorted(crops)},
            'crop_format': '[photo, y, x, height, width] in the source photo',
            'image_format': '8-bit BGR PNG',
            'versions': {'python': platform.python_version(), 'numpy': np.__version__, 'opencv': cv2.__version__},
        }
        with open(tmp / 'manifest.json', 'w', encoding='utf-8') as f:
            json.dump(manifest, f, indent=1)
            f.write('\n')

        if out.exists() or out.is_symlink():
            if not overwrite:
                raise FileExistsError(f'{out} appeared during the build; pass overwrite=True to replace it')
            old = out.parent / f'{temp_prefix(out.parent, out.name, extra=32)}old-{os.getpid()}-{uuid.uuid4().hex[:8]}'
            os.replace(out, old)
            os.replace(tmp, out)
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old)
            else:
                old.unlink()
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    manifest['build_seconds'] = round(time.time() - started, 2)
    return manifest


def main(argv=None):
    parser = argparse.ArgumentParser(
        description='Build the embedded haze/rain/blur demo dataset from photographs bundled with '
        'scikit-image (and scikit-learn / matplotlib when installed). No download needed.')
    add_version_argument(parser)
    parser.add_argument('--out', default='datasets/demo', help='output folder (default: datasets/demo)')
    parser.add_argument('--seed', type=int, default=0, help='base seed (default: 0)')
    parser.add_argument('--n-train', type=int, default=64, help='train patches per photo and kind (default: 64)')
    parser.add_argument('--n-val', type=int, default=6, help='val tiles per photo (default: 6)')
    parser.add_argument('--n-real', type=int, default=8, help='degraded real tiles per photo (default: 8)')
    parser.add_argument('--n-clear', type=int, default=12, help='clean real tiles per photo (default: 12)')
    parser.add_argument('--train-size', type=int, default=64, help='train patch side (default: 64)')
    parser.add_argument('--val-size', type=int, default=96, help='val tile side (default: 96)')
    parser.add_argument('--real-size', type=int, default=96, help='real tile side (default: 96)')
    parser.add_argument('--min-detail', type=float, default=5e-4,
                        help='skip flatter degraded patches (mean squared Laplacian; default: 5e-4, 0: keep all)')
    parser.add_argument('--kinds', nargs='+', default=list(KINDS), choices=ALL_KINDS,
                        help='kinds to build (default: haze rain blur; ADS demo: rain blur noise)')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing --out folder')
    parser.add_argument('--quiet', action='store_true', help='no progress bar')
    args = parser.parse_args(argv)
    try:
        manifest = build_demo_data(
            args.out,
            seed=args.seed,
            n_train=args.n_train,
            n_val=args.n_val,
            n_real=args.n_real,
            n_clear=args.n_clear,
            train_size=args.train_size,
            val_size=args.val_size,
            real_size=args.real_size,
            kinds=args.kinds,
            min_detail=args.min_detail,
            overwrite=args.overwrite,
            progress=not args.quiet)
    except (FileExistsError, ValueError, RuntimeError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    for name, reason in manifest['skipped_photos'].items():
        print(f'skipped photo {name}: {reason}')
    for split, photos in manifest['photos'].items():
        counts = ', '.join(f'{k} {v}' for k, v in manifest['counts'][split].items())
        print(f'{split:5s} photos: {", ".join(photos)}  ({counts})')
    print(f'wrote {args.out} in {manifest["build_seconds"]:.1f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
