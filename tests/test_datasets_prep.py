"""Tests of the dataset packers ``datasets_prep/pack.py`` (+ its engine ``datasets_prep/lmdb_packing.py``).

Each layout is faked with a few 20x30 images under the real dataset's file names, packed
in-process (``--workers 1`` unless said otherwise) and read back through BasicSR's LMDB backend.
"""
import importlib.util
import os
import re
import sys
from os import path as osp

import cv2
import numpy as np
import pytest

import uniremoval  # noqa: F401  (compat shim before basicsr)
from basicsr.utils import FileClient, imfrombytes

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
PREP = osp.join(REPO, 'datasets_prep')
if PREP not in sys.path:  # as `python datasets_prep/pack.py` has it (pack.py and the spawned workers need it)
    sys.path.insert(0, PREP)
LP = importlib.import_module('lmdb_packing')
_spec = importlib.util.spec_from_file_location('datasets_prep_pack', osp.join(PREP, 'pack.py'))
pack_cli = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pack_cli)

H, W = 20, 30
META_LINE = re.compile(r'^([A-Za-z0-9_-]+)\.png \((\d+),(\d+),(\d+)\) (\d)$')


# ---------------------------------------------------------------------------------------- helpers
def write(path, seed, h=H, w=W):
    """A random image at ``path`` (any extension cv2 writes); returns ``path``."""
    os.makedirs(osp.dirname(str(path)), exist_ok=True)
    img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), img)
    return str(path)


def source(path):
    """The pixels BasicSR's disk backend would give for ``path``."""
    with open(path, 'rb') as f:
        return imfrombytes(f.read(), float32=False)


def read_lmdb(path):
    """``{key: image}`` of a packed LMDB, keys from its meta_info.txt, checked line by line."""
    with open(osp.join(path, 'meta_info.txt')) as f:
        lines = f.read().splitlines()
    client = FileClient('lmdb', db_paths=[str(path)], client_keys=['x'])
    out = {}
    for line in lines:
        m = META_LINE.match(line)
        assert m, line
        img = imfrombytes(client.get(m.group(1), 'x'), float32=False)
        assert img.shape == tuple(int(v) for v in m.group(2, 3, 4)), line
        out[m.group(1)] = img
    assert sorted(out) == [LP.sanitize_key(k) for k in sorted(out)] and len(out) == len(lines)
    return out


def run(*argv):
    return pack_cli.main([*map(str, argv), '--workers', '1', '--no-progress'] if '--workers' not in argv
                         else [*map(str, argv), '--no-progress'])


def listing(folder):
    return sorted(os.listdir(folder)) if osp.isdir(folder) else []


def check_paired(out, split, expected):
    """``expected``: {key: (lq_path, gt_path)}; both LMDBs hold exactly these, pixel-exact."""
    lq, gt = read_lmdb(osp.join(out, f'{split}_lq.lmdb')), read_lmdb(osp.join(out, f'{split}_gt.lmdb'))
    assert sorted(lq) == sorted(gt) == sorted(expected)
    for key, (lq_path, gt_path) in expected.items():
        np.testing.assert_array_equal(lq[key], source(lq_path))
        np.testing.assert_array_equal(gt[key], source(gt_path))


# ---------------------------------------------------------------------------------------- fake trees
@pytest.fixture
def ots(tmp_path):
    """RESIDE OTS: 3 clear images, 2 hazy versions each (in part1/ and part2/ subfolders)."""
    root = tmp_path / 'OTS'
    pairs = {}
    for i in range(1, 4):
        gt = write(root / 'clear' / f'{i:04d}.jpg', seed=i)
        for j, (a, beta) in enumerate((('0.8', '0.2'), ('1', '0.04'))):
            stem = f'{i:04d}_{a}_{beta}'
            pairs[LP.sanitize_key(stem)] = (write(root / 'hazy' / f'part{j + 1}' / f'{stem}.jpg', 10 * i + j), gt)
    return root, pairs


# ---------------------------------------------------------------------------------------- layouts
def test_reside_ots_many_hazy_per_clear(ots, tmp_path):
    root, pairs = ots
    out = tmp_path / 'out'
    assert run('reside-ots', '--root', root, '--out', out) == 0
    assert listing(out) == ['train_gt.lmdb', 'train_lq.lmdb']
    assert listing(out / 'train_lq.lmdb') == ['data.mdb', 'lock.mdb', 'meta_info.txt']
    assert sorted(pairs) == ['0001_0p8_0p2', '0001_1_0p04', '0002_0p8_0p2', '0002_1_0p04', '0003_0p8_0p2',
                             '0003_1_0p04']
    check_paired(out, 'train', pairs)
    gt = read_lmdb(out / 'train_gt.lmdb')
    np.testing.assert_array_equal(gt['0001_0p8_0p2'], gt['0001_1_0p04'])  # one clear image, once per hazy key
    with open(out / 'train_lq.lmdb' / 'meta_info.txt') as f:
        assert f.readline() == '0001_0p8_0p2.png (20,30,3) 1\n'

    # BasicSR's own paired dataset and ours read it directly
    from basicsr.data.paired_image_dataset import PairedImageDataset
    from uniremoval.data.multi_degradation_dataset import MultiDegradationDataset
    lmdbs = dict(dataroot_lq=str(out / 'train_lq.lmdb'), dataroot_gt=str(out / 'train_gt.lmdb'))
    ds = PairedImageDataset(dict(io_backend={'type': 'lmdb'}, phase='val', scale=1, **lmdbs))
    assert len(ds) == 6 and ds[0]['lq'].shape == (3, H, W)
    sample = next(s for s in (ds[i] for i in range(6)) if s['lq_path'] == '0002_1_0p04')
    rgb = source(pairs['0002_1_0p04'][1])[..., ::-1].transpose(2, 0, 1) / 255.
    np.testing.assert_allclose(sample['gt'].numpy(), rgb, atol=1e-6)
    md = MultiDegradationDataset(dict(phase='val', sources=[dict(name='haze', io_backend={'type': 'lmdb'}, **lmdbs)]))
    assert md.source_sizes == [6]


def test_reside_sots_and_gt_center_crop(tmp_path):
    root = tmp_path / 'SOTS' / 'outdoor'
    pairs = {'0001_0p8_0p2': (write(root / 'hazy' / '0001_0.8_0.2.jpg', 1), write(root / 'gt' / '0001.png', 2)),
             '0002_1_0p2': (write(root / 'hazy' / '0002_1_0.2.jpg', 3), write(root / 'gt' / '0002.png', 4))}
    assert run('reside-sots', '--root', root, '--out', tmp_path / 'out') == 0
    check_paired(tmp_path / 'out', 'test', pairs)

    # indoor style: <id>_<k>.png, gt with a 2-pixel border -> --gt-center-crop
    indoor = tmp_path / 'indoor'
    hazy = write(indoor / 'hazy' / '1400_1.png', 5)
    big = write(indoor / 'gt' / '1400.png', 6, h=H + 4, w=W + 4)
    assert run('reside-sots', '--root', indoor, '--out', tmp_path / 'o2') == 1  # size mismatch
    assert run('reside-sots', '--root', indoor, '--out', tmp_path / 'o2', '--gt-center-crop') == 0
    gt = read_lmdb(tmp_path / 'o2' / 'test_gt.lmdb')['1400_1']
    np.testing.assert_array_equal(gt, source(big)[2:2 + H, 2:2 + W])
    np.testing.assert_array_equal(read_lmdb(tmp_path / 'o2' / 'test_lq.lmdb')['1400_1'], source(hazy))


def test_rain1400_fourteen_per_clean(tmp_path):
    root = tmp_path / 'rain1400' / 'testing'
    pairs = {}
    for i in (901, 902):
        gt = write(root / 'ground_truth' / f'{i}.jpg', i)
        for k in (1, 2, 14):
            pairs[f'{i}_{k}'] = (write(root / 'rainy_image' / f'{i}_{k}.jpg', 100 * k + i), gt)
    assert run('rain1400', '--root', root, '--out', tmp_path / 'out', '--split', 'test') == 0
    check_paired(tmp_path / 'out', 'test', pairs)


def test_spa_test_layout_and_pair_list(tmp_path):
    root = tmp_path / 'SPA' / 'real_test_1000'
    pairs = {name: (write(root / 'rain' / f'{name}.png', i), write(root / 'gt' / f'{name}gt.png', 50 + i))
             for i, name in enumerate(('1', '2', '10'))}
    assert run('spa', '--root', root.parent, '--out', tmp_path / 'out') == 0  # parent of real_test_1000
    check_paired(tmp_path / 'out', 'test', pairs)

    train = tmp_path / 'SPA' / 'train'
    gt1 = write(train / 'real_world_gt' / '000' / '000_1_1.png', 1)
    gt2 = write(train / 'real_world_gt' / '001' / '001_1_1.png', 2)
    rain = {'000-1_1_1': (write(train / 'real_world' / '000' / '000-1' / '000-1_1_1.png', 3), gt1),
            '000-2_1_1': (write(train / 'real_world' / '000' / '000-2' / '000-2_1_1.png', 4), gt1),
            '001-1_1_1': (write(train / 'real_world' / '001' / '001-1' / '001-1_1_1.png', 5), gt2)}
    lines = ['./real_world/000/000-1/000-1_1_1.png ./real_world_gt/000/000_1_1.png',
             '/real_world/000/000-2/000-2_1_1.png /real_world_gt/000/000_1_1.png', '',
             'real_world/001/001-1/001-1_1_1.png real_world_gt/001/001_1_1.png']
    (train / 'real_world.txt').write_text('\n'.join(lines) + '\n')
    assert run('spa', '--list', train / 'real_world.txt', '--out', tmp_path / 'o2') == 0
    check_paired(tmp_path / 'o2', 'train', rain)


def test_gopro_keys_and_split_by_sequence(tmp_path):
    root = tmp_path / 'GOPRO_Large'
    pairs = {}
    for s, seq in enumerate(('GOPR0372_07_00', 'GOPR0384_11_01', 'GOPR0410_11_00')):
        for f in ('000047', '000048'):
            seed = 10 * s + int(f[-1])
            pairs[f'{seq}_{f}'] = (write(root / 'train' / seq / 'blur' / f'{f}.png', seed),
                                   write(root / 'train' / seq / 'sharp' / f'{f}.png', seed + 100))
            write(root / 'train' / seq / 'blur_gamma' / f'{f}.png', seed + 200)
    write(root / 'test' / 'GOPR0384_11_00' / 'blur' / '000001.png', 7)
    write(root / 'test' / 'GOPR0384_11_00' / 'sharp' / '000001.png', 8)
    out = tmp_path / 'out'
    assert run('gopro', '--root', root, '--out', out, '--val-count', '1', '--val-by-sequence') == 0
    lq_train, lq_val = read_lmdb(out / 'train_lq.lmdb'), read_lmdb(out / 'val_lq.lmdb')
    assert len(lq_val) == 2 and len({k.rsplit('_', 1)[0] for k in lq_val}) == 1  # one whole sequence
    assert sorted([*lq_train, *lq_val]) == sorted(pairs)
    check_paired(out, 'val', {k: pairs[k] for k in lq_val})
    check_paired(out, 'train', {k: pairs[k] for k in lq_train})
    assert run('gopro', '--root', root, '--out', out, '--split', 'test') == 0
    assert sorted(read_lmdb(out / 'test_gt.lmdb')) == ['GOPR0384_11_00_000001']


def test_realblur_j_lists(tmp_path):
    root = tmp_path / 'RealBlur'
    base = 'RealBlur-J_ECC_IMCORR_centroid_itensity_ref'
    pairs, lines = {}, []
    for scene, n in (('scene003', 1), ('scene003', 12), ('scene230', 7)):
        gt, blur = f'{base}/{scene}/gt/gt_{n}.png', f'{base}/{scene}/blur/blur_{n}.png'
        pairs[f'{scene}_{n}'] = (write(root / blur, n), write(root / gt, n + 50))
        lines.append(f'{gt} {blur} ')
    (root / 'RealBlur_J_test_list.txt').write_text('\n'.join(lines) + '\n')
    assert run('realblur-j', '--root', root, '--split', 'test', '--out', tmp_path / 'out') == 0
    check_paired(tmp_path / 'out', 'test', pairs)


def test_generic_pairs_folder_and_rtts(tmp_path):
    pairs = {f'img{i}': (write(tmp_path / 'lq' / f'img{i}_rain.jpg', i), write(tmp_path / 'gt' / f'img{i}.png', 9 + i))
             for i in range(3)}
    assert run('pairs', '--lq', tmp_path / 'lq', '--gt', tmp_path / 'gt', '--filename-tmpl', '{}_rain',
               '--out', tmp_path / 'out') == 0
    check_paired(tmp_path / 'out', 'train', pairs)

    images = {f'AM_Bing_{i}': write(tmp_path / 'RTTS' / 'JPEGImages' / f'AM_Bing_{i}.png', i) for i in range(3)}
    (tmp_path / 'RTTS' / 'Annotations').mkdir()
    (tmp_path / 'RTTS' / 'Annotations' / 'AM_Bing_0.xml').write_text('<annotation/>')
    assert run('rtts', '--root', tmp_path / 'RTTS', '--out', tmp_path / 'o2') == 0
    assert listing(tmp_path / 'o2') == ['rtts.lmdb']
    got = read_lmdb(tmp_path / 'o2' / 'rtts.lmdb')
    assert sorted(got) == sorted(images)
    for key, path in images.items():
        np.testing.assert_array_equal(got[key], source(path))

    # nested folder, repeated stems: keys from relative paths; --compress-level in meta_info
    write(tmp_path / 'imgs' / 'a' / 'x.jpg', 1)
    write(tmp_path / 'imgs' / 'b' / 'x.jpg', 2)
    assert run('folder', '--input', tmp_path / 'imgs', '--recursive', '--out', tmp_path / 'o3',
               '--compress-level', '9') == 0
    assert sorted(read_lmdb(tmp_path / 'o3' / 'images.lmdb')) == ['a_x', 'b_x']
    with open(tmp_path / 'o3' / 'images.lmdb' / 'meta_info.txt') as f:
        assert f.read() == 'a_x.png (20,30,3) 9\nb_x.png (20,30,3) 9\n'


# ---------------------------------------------------------------------------------------- options
def test_sub_images_count_and_content(ots, tmp_path):
    root, pairs = ots
    # 20x30, crop 16 step 8: rows [0, 4], columns [0, 8, 14] (a last crop flush with the border)
    assert LP.crop_positions(H, W, LP.CropSpec(16, 8, 0)) == [(0, 0), (0, 8), (0, 14), (4, 0), (4, 8), (4, 14)]
    assert LP.crop_positions(H, W, LP.CropSpec(16, 8, 5)) == [(0, 0), (0, 8), (0, 14)]  # 4 rows left <= 5
    out = tmp_path / 'out'
    assert run('reside-ots', '--root', root, '--out', out, '--crop-size', '16', '--step', '8') == 0
    lq, gt = read_lmdb(out / 'train_lq.lmdb'), read_lmdb(out / 'train_gt.lmdb')
    assert len(lq) == len(gt) == 6 * len(pairs)
    for key, (lq_path, gt_path) in pairs.items():
        for i, (y, x) in enumerate(LP.crop_positions(H, W, LP.CropSpec(16, 8, 0))):
            sub = f'{key}_s{i + 1:03d}'
            np.testing.assert_array_equal(lq[sub], source(lq_path)[y:y + 16, x:x + 16])
            np.testing.assert_array_equal(gt[sub], source(gt_path)[y:y + 16, x:x + 16])
    # an image smaller than the crop is a bad item
    assert run('reside-ots', '--root', root, '--out', tmp_path / 'o2', '--crop-size', '24') == 1
    assert not osp.exists(tmp_path / 'o2' / 'train_lq.lmdb')


def test_split_by_source_image_is_deterministic(ots, tmp_path):
    root, pairs = ots
    for name in ('a', 'b'):
        assert run('reside-ots', '--root', root, '--out', tmp_path / name, '--val-fraction', '0.34',
                   '--crop-size', '16', '--seed', '3') == 0
    train, val = read_lmdb(tmp_path / 'a' / 'train_lq.lmdb'), read_lmdb(tmp_path / 'a' / 'val_lq.lmdb')
    assert sorted(val) == sorted(read_lmdb(tmp_path / 'b' / 'val_lq.lmdb'))  # same seed, same split
    clear_ids = {k[:4] for k in val}
    assert len(clear_ids) == 1 and len(val) == 2 * 6  # both hazy versions of one clear image, all sub-images
    assert not clear_ids & {k[:4] for k in train} and len(train) == 4 * 6
    assert sorted(read_lmdb(tmp_path / 'a' / 'val_gt.lmdb')) == sorted(val)
    assert LP.split_groups('abcdefghij', val_count=3, seed=1) == LP.split_groups('jihgfedcba', val_count=3, seed=1)


def test_workers_and_map_growth(ots, tmp_path):
    root, pairs = ots
    assert run('reside-ots', '--root', root, '--out', tmp_path / 'out', '--workers', '2') == 0
    check_paired(tmp_path / 'out', 'train', pairs)
    items = [LP.Item(k, lq, gt) for k, (lq, gt) in pairs.items()]
    LP.pack(items, str(tmp_path / 'small'), crop=LP.CropSpec(8, 4), workers=1, progress=False, map_size=1 << 14)
    gt = read_lmdb(tmp_path / 'small' / 'train_gt.lmdb')  # 16 KiB map to start with: it had to grow
    assert len(gt) == 6 * 4 * 7 and osp.getsize(tmp_path / 'small' / 'train_gt.lmdb' / 'data.mdb') > 1 << 14
    np.testing.assert_array_equal(gt['0003_1_0p04_s028'], source(pairs['0003_1_0p04'][1])[12:20, 22:30])


# ---------------------------------------------------------------------------------------- safety
def test_interrupted_write_leaves_nothing(ots, tmp_path, monkeypatch):
    root, pairs = ots
    out = tmp_path / 'out'
    assert run('reside-ots', '--root', root, '--out', out, '--val-count', '1') == 0
    before = read_lmdb(out / 'train_lq.lmdb')
    calls = []
    real_put = LP.LmdbWriter.put

    def failing_put(self, *args):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError('simulated crash')
        return real_put(self, *args)

    monkeypatch.setattr(LP.LmdbWriter, 'put', failing_put)
    with pytest.raises(RuntimeError, match='simulated crash'):
        run('reside-ots', '--root', root, '--out', tmp_path / 'new')
    assert not osp.exists(tmp_path / 'new')  # no output, no temporary folder, not even the folder it made
    calls.clear()
    with pytest.raises(RuntimeError, match='simulated crash'):
        run('reside-ots', '--root', root, '--out', out, '--val-count', '1', '--overwrite')
    assert listing(out) == ['train_gt.lmdb', 'train_lq.lmdb', 'val_gt.lmdb', 'val_lq.lmdb']  # old ones intact
    assert sorted(read_lmdb(out / 'train_lq.lmdb')) == sorted(before)

    # a temporary folder left by a killed run (its process is gone) is removed by the next run
    monkeypatch.setattr(LP.LmdbWriter, 'put', real_put)
    stale = tmp_path / 'new' / '.train_lq.lmdb.tmp-99999999-0123abcd'
    stale.mkdir(parents=True)
    assert run('reside-ots', '--root', root, '--out', tmp_path / 'new') == 0
    assert listing(tmp_path / 'new') == ['train_gt.lmdb', 'train_lq.lmdb']


def test_refuses_existing_output_without_overwrite(ots, tmp_path, capsys):
    root, pairs = ots
    out = tmp_path / 'out'
    assert run('reside-ots', '--root', root, '--out', out) == 0
    write(root / 'hazy' / '0003_0.5_0.1.jpg', 99)
    assert run('reside-ots', '--root', root, '--out', out) == 1
    assert 'already exists' in capsys.readouterr().err and len(read_lmdb(out / 'train_lq.lmdb')) == 6
    assert run('reside-ots', '--root', root, '--out', out, '--overwrite') == 0
    assert len(read_lmdb(out / 'train_lq.lmdb')) == 7 and listing(out) == ['train_gt.lmdb', 'train_lq.lmdb']


def test_missing_counterparts_listed_or_skipped(ots, tmp_path, capsys):
    root, pairs = ots
    write(root / 'hazy' / '0009_0.8_0.2.jpg', 1)  # no clear/0009
    write(root / 'clear' / '0010.jpg', 2)  # no hazy version
    assert run('reside-ots', '--root', root, '--out', tmp_path / 'out') == 1
    err = capsys.readouterr().err
    assert '0009_0.8_0.2.jpg' in err and '0010.jpg' in err and '2 bad item(s)' in err
    assert listing(tmp_path / 'out') == []
    assert run('reside-ots', '--root', root, '--out', tmp_path / 'out', '--skip-bad') == 0
    report = capsys.readouterr().out
    assert 'skipped 2 bad item(s)' in report and '0009_0.8_0.2.jpg' in report and '0010.jpg' in report
    check_paired(tmp_path / 'out', 'train', pairs)


def test_size_mismatch_listed_or_skipped(tmp_path, capsys):
    root = tmp_path / 'GOPRO_Large' / 'train' / 'GOPR0372_07_00'
    good = {'GOPR0372_07_00_000001': (write(root / 'blur' / '000001.png', 1), write(root / 'sharp' / '000001.png', 2))}
    write(root / 'blur' / '000002.png', 3)
    write(root / 'sharp' / '000002.png', 4, h=H + 1)
    args = ('gopro', '--root', tmp_path / 'GOPRO_Large', '--out', tmp_path / 'out')
    assert run(*args) == 1
    err = capsys.readouterr().err
    assert 'size mismatch' in err and 'blur/000002.png is 20x30' in err and 'sharp/000002.png is 21x30' in err
    assert run(*args, '--skip-bad') == 0
    assert 'sharp/000002.png is 21x30' in capsys.readouterr().out
    check_paired(tmp_path / 'out', 'train', good)


def test_corrupt_image_is_named(tmp_path, capsys):
    root = tmp_path / 'rain'
    write(root / 'ground_truth' / '1.jpg', 1)
    write(root / 'rainy_image' / '1_1.jpg', 2)
    (root / 'rainy_image' / '1_2.jpg').write_bytes(b'not an image at all')
    args = ('rain1400', '--root', root, '--out', tmp_path / 'out')
    assert run(*args) == 1
    assert 'rainy_image/1_2.jpg' in capsys.readouterr().err
    # a valid header over broken pixel data passes the header check and fails at decoding
    png = cv2.imencode('.png', np.full((H, W, 3), 7, np.uint8))[1].tobytes()
    (root / 'rainy_image' / '1_2.jpg').unlink()
    (root / 'rainy_image' / '1_3.png').write_bytes(png[:40])
    assert run(*args) == 1
    assert 'rainy_image/1_3.png: corrupt' in capsys.readouterr().err
    assert listing(tmp_path / 'out') == []
    assert run(*args, '--skip-bad') == 0
    assert sorted(read_lmdb(tmp_path / 'out' / 'train_lq.lmdb')) == ['1_1']


@pytest.mark.parametrize('made', ['full', 'empty'])
def test_output_made_by_another_run_meanwhile_is_not_replaced(ots, tmp_path, capsys, monkeypatch, made):
    """A second run into the same --out that finishes first wins; this one refuses at its final rename."""
    root, pairs = ots
    out = tmp_path / 'out'
    real_close = LP.LmdbWriter.close
    raced = []

    def close_then_race(self):
        real_close(self)
        if not raced:  # the other run finishes just before our final step
            raced.append(1)
            if made == 'full':
                assert pack_cli.main(['reside-ots', '--root', str(root), '--out', str(out), '--workers', '1',
                                      '--no-progress', '--crop-size', '8']) == 0
            else:
                (out / 'train_lq.lmdb').mkdir(parents=True)

    monkeypatch.setattr(LP.LmdbWriter, 'close', close_then_race)
    assert run('reside-ots', '--root', root, '--out', out) == 1
    assert 'appeared while packing' in capsys.readouterr().err
    if made == 'full':  # the other run's sub-image LMDBs are kept, not our whole-image ones
        monkeypatch.setattr(LP.LmdbWriter, 'close', real_close)
        assert len(read_lmdb(out / 'train_lq.lmdb')) > len(pairs)
        assert listing(out) == ['train_gt.lmdb', 'train_lq.lmdb']
    else:
        assert listing(out) == ['train_lq.lmdb'] and listing(out / 'train_lq.lmdb') == []
