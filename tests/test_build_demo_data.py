"""Tests of the demo-data builder ``uniremoval.demo.data`` (tiny builds into tmp dirs)."""
import json
import os
from os import path as osp

import cv2
import numpy as np
import pytest

KINDS = ('haze', 'rain', 'blur')
SPLITS = ('train', 'val', 'real')
TINY = dict(n_train=3, n_val=2, n_real=2, n_clear=3, train_size=48, val_size=64, real_size=64, progress=False)


import uniremoval.demo.data as B  # noqa: E402  (datasets_prep/build_demo_data.py is its CLI)


@pytest.fixture(scope='module')
def built(tmp_path_factory):
    """One tiny build and a second one with the same seed."""
    root = tmp_path_factory.mktemp('demo')
    m1 = B.build_demo_data(root / 'a', seed=3, **TINY)
    m2 = B.build_demo_data(root / 'b', seed=3, **TINY)
    return root, m1, m2


def read(path):
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None, path
    return img


def listing(folder):
    return sorted(f for f in os.listdir(folder) if f.endswith('.png'))


def pairs(root, split, kind):
    folder = root / split / kind
    return [(read(folder / 'lq' / n), read(folder / 'gt' / n)) for n in listing(folder / 'gt')]


def all_files(root):
    return sorted(osp.relpath(osp.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


def grey(img):
    return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float32) / 255.0


def laplacian_energy(img):
    return float(np.mean(cv2.Laplacian(grey(img), cv2.CV_32F)**2))


def dark_channel(img):
    """Mean of the per-pixel minimum over channels (He et al.'s dark channel, without the min filter)."""
    return float(img.min(axis=2).astype(np.float32).mean() / 255.0)


def thin_bright_fraction(lq, gt):
    """Fraction of pixels where lq - gt has a thin colourless bright structure (a streak).

    The channel-wise minimum of the difference keeps only colourless brightening; subtracting
    its 7x7 median removes the smooth veil ``(1 - T)(A - B)``, leaving structures thinner than
    the window.
    """
    diff = lq.astype(np.int16) - gt.astype(np.int16)
    d = np.clip(diff.min(axis=2) + 128, 0, 255).astype(np.uint8)
    return float(((d.astype(np.int16) - cv2.medianBlur(d, 7)) > 15).mean())


# ---------------------------------------------------------------------------------------


def test_layout_names_and_sizes(built):
    root, manifest, _ = built
    out = root / 'a'
    assert sorted(os.listdir(out)) == ['manifest.json', 'real', 'train', 'val']
    assert sorted(os.listdir(out / 'real')) == ['blur', 'clear', 'haze', 'rain']
    sizes = {'train': TINY['train_size'], 'val': TINY['val_size'], 'real': TINY['real_size']}
    per_photo = {'train': TINY['n_train'], 'val': TINY['n_val'], 'real': TINY['n_real']}
    for split in SPLITS:
        photos = manifest['photos'][split]
        for kind in KINDS:
            folder = out / split / kind
            assert sorted(os.listdir(folder)) == ['gt', 'lq']
            names = listing(folder / 'gt')
            assert names == listing(folder / 'lq')
            assert len(names) == per_photo[split] * len(photos) == manifest['counts'][split][kind]
            assert {n.rsplit('_', 1)[0] for n in names} == set(photos)
            for lq, gt in pairs(out, split, kind):
                assert lq.dtype == gt.dtype == np.uint8
                assert lq.shape == gt.shape == (sizes[split], sizes[split], 3)
    clear = listing(out / 'real' / 'clear')
    assert len(clear) == TINY['n_clear'] * len(manifest['photos']['real']) == manifest['counts']['real']['clear']
    assert all(read(out / 'real' / 'clear' / n).shape == (64, 64, 3) for n in clear)
    # the atomic build leaves no temporary folder behind
    assert sorted(os.listdir(root)) == ['a', 'b']
    on_disk = json.loads((out / 'manifest.json').read_text())
    assert on_disk['seed'] == 3 and on_disk['photos'] == manifest['photos']


def test_photo_splits_disjoint_and_as_documented(built):
    _, manifest, _ = built
    photos = manifest['photos']
    train, val, real = set(photos['train']), set(photos['val']), set(photos['real'])
    assert train and val and real
    assert not (train & val) and not (train & real) and not (val & real)
    # the skimage photos are always there; clock (already blurred) is never used
    assert {'astronaut', 'coffee', 'motorcycle'} <= train and 'chelsea' in val and 'rocket' in real
    assert 'clock' not in train | val | real
    assert set(manifest['skipped_photos']) | train | val | real == set(B.PHOTO_SOURCES)
    assert manifest['settings']['train']['domain'] == 'synthetic' and manifest['settings']['real']['domain'] == 'real'
    for kind in KINDS:
        assert manifest['settings']['train'][kind] != manifest['settings']['real'][kind]


def test_gt_are_crops_of_the_photos_and_real_clear_is_disjoint(built):
    root, manifest, _ = built
    photos, _ = B.load_photos()
    for folder, crops in manifest['crops'].items():
        for name, (photo, y, x, h, w) in crops.items():
            path = root / 'a' / folder / name if folder == 'real/clear' else root / 'a' / folder / 'gt' / name
            np.testing.assert_array_equal(read(path), photos[photo][y:y + h, x:x + w])

    def overlap(a, b):
        (pa, ya, xa, ha, wa), (pb, yb, xb, hb, wb) = a, b
        return pa == pb and ya < yb + hb and yb < ya + ha and xa < xb + wb and xb < xa + wa

    clear = list(manifest['crops']['real/clear'].values())
    degraded = [box for kind in KINDS for box in manifest['crops'][f'real/{kind}'].values()]
    assert not any(overlap(a, b) for a in clear for b in degraded)
    assert not any(overlap(a, b) for i, a in enumerate(clear) for b in clear[i + 1:])
    val = list(manifest['crops']['val/haze'].values())
    assert not any(overlap(a, b) for i, a in enumerate(val) for b in val[i + 1:])


def test_same_seed_is_pixel_identical_other_seed_differs(built, tmp_path):
    root, m1, m2 = built
    files = all_files(root / 'a')
    assert files == all_files(root / 'b') and len(files) > 50
    for f in files:
        if f.endswith('.png'):
            np.testing.assert_array_equal(read(root / 'a' / f), read(root / 'b' / f), err_msg=f)
    assert m1['crops'] == m2['crops']
    B.build_demo_data(tmp_path / 'c', seed=4, **TINY)
    different = [f for f in files
                 if f.endswith('.png') and not np.array_equal(read(root / 'a' / f), read(tmp_path / 'c' / f))]
    assert len(different) > 0.9 * len([f for f in files if f.endswith('.png')])


def test_refuses_to_overwrite_unless_asked(tmp_path):
    out = tmp_path / 'demo'
    out.mkdir()
    (out / 'keep.txt').write_text('mine')
    with pytest.raises(FileExistsError, match='overwrite'):
        B.build_demo_data(out, **TINY)
    assert os.listdir(out) == ['keep.txt']
    assert sorted(os.listdir(tmp_path)) == ['demo']
    # the CLI reports it and exits non-zero
    assert B.main(['--out', str(out), '--quiet', '--n-train', '1']) == 2
    assert os.listdir(out) == ['keep.txt']
    manifest = B.build_demo_data(out, overwrite=True, **TINY)
    assert not (out / 'keep.txt').exists() and (out / 'manifest.json').exists()
    assert manifest['counts']['train']['haze'] == 3 * len(manifest['photos']['train'])
    assert sorted(os.listdir(tmp_path)) == ['demo']


def test_interrupted_build_leaves_nothing(tmp_path, monkeypatch):
    calls = []
    real_write = B._write_png

    def flaky_write(path, img):
        calls.append(path)
        if len(calls) == 10:
            raise KeyboardInterrupt
        real_write(path, img)

    monkeypatch.setattr(B, '_write_png', flaky_write)
    with pytest.raises(KeyboardInterrupt):
        B.build_demo_data(tmp_path / 'demo', **TINY)
    assert os.listdir(tmp_path) == []


def test_missing_optional_packages_skip_their_photos(built, tmp_path, monkeypatch):
    root, _, _ = built
    real_load = B._load_rgb

    def without_optional(name):
        if B.PHOTO_SOURCES[name][0] != 'scikit-image':
            raise ImportError(f'no {B.PHOTO_SOURCES[name][0]} here')
        return real_load(name)

    monkeypatch.setattr(B, '_load_rgb', without_optional)
    manifest = B.build_demo_data(tmp_path / 'demo', seed=3, **TINY)
    assert manifest['photos'] == {'train': ['astronaut', 'coffee', 'motorcycle'], 'val': ['chelsea'],
                                  'real': ['rocket']}
    assert set(manifest['skipped_photos']) == {'china', 'flower', 'grace_hopper'}
    assert 'scikit-learn' in manifest['skipped_photos']['china']
    # the remaining photos' patches do not depend on which others were available
    for f in all_files(tmp_path / 'demo'):
        if f.endswith('.png'):
            np.testing.assert_array_equal(read(tmp_path / 'demo' / f), read(root / 'a' / f), err_msg=f)

    def broken_skimage(name):
        raise ImportError('no skimage')

    monkeypatch.setattr(B, '_load_rgb', broken_skimage)
    with pytest.raises(RuntimeError, match='required'):
        B.build_demo_data(tmp_path / 'other', **TINY)
    assert not (tmp_path / 'other').exists()


@pytest.mark.parametrize('kwargs, match', [
    (dict(n_real=30, n_clear=40), 'n_clear'),
    (dict(n_real=100), 'n_real'),
    (dict(n_val=100), 'n_val'),
    (dict(kinds=('snow', )), 'kinds'),
    (dict(n_train=-1), 'n_train'),
    (dict(train_size=1000), 'train_size'),
    (dict(min_detail=5.0), 'min_detail'),
])
def test_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        B.build_demo_data(tmp_path / 'demo', **{**TINY, **kwargs})
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------------------
# lq differs from gt in the intended way
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize('split', SPLITS)
def test_haze_lowers_contrast_and_raises_dark_channel(built, split):
    """Haze scales the detail by t (less high-frequency energy) and adds airlight (dark channel up)."""
    root, _, _ = built
    ps = pairs(root / 'a', split, 'haze')
    ratios = [laplacian_energy(lq) / laplacian_energy(gt) for lq, gt in ps]
    assert max(ratios) < 0.9 and np.median(ratios) < 0.6
    rises = [dark_channel(lq) - dark_channel(gt) for lq, gt in ps]
    assert min(rises) > 0 and np.mean(rises) > 0.05


@pytest.mark.parametrize('split', SPLITS)
def test_rain_adds_bright_streaks(built, split):
    root, _, _ = built
    ps = pairs(root / 'a', split, 'rain')
    fractions = [thin_bright_fraction(lq, gt) for lq, gt in ps]
    assert min(fractions) > 0.004 and max(fractions) < 0.5
    assert all(lq.mean() > gt.mean() + 0.5 for lq, gt in ps)


@pytest.mark.parametrize('split', SPLITS)
def test_blur_removes_high_frequencies(built, split):
    root, _, _ = built
    ratios = [laplacian_energy(lq) / laplacian_energy(gt) for lq, gt in pairs(root / 'a', split, 'blur')]
    assert max(ratios) < 1.0 and np.median(ratios) < 0.5
    # kernels sum to one: the mean brightness is kept
    assert all(abs(float(lq.mean()) - float(gt.mean())) < 4 for lq, gt in pairs(root / 'a', split, 'blur'))
