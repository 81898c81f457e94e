"""MultiDegradationDataset: samples, labels, training crops, balanced sampling, LMDB, errors, loaders."""
import os
import re
from collections import Counter
from os import path as osp

import cv2
import numpy as np
import pytest
import torch

import uniremoval  # noqa: F401  (registers the dataset)
from basicsr.data import build_dataloader, build_dataset
from basicsr.utils.lmdb_util import make_lmdb_from_imgs
from basicsr.utils.registry import DATASET_REGISTRY
from uniremoval.data.data_util import random_intensity_affine
from uniremoval.data.multi_degradation_dataset import MultiDegradationDataset
from conftest import write_pairs


def write_inverse_pairs(root, n, seed, size=(24, 32)):
    """Random-noise gt and lq = 255 - gt (uint8 BGR, HxW ``size``): any misaligned crop breaks the relation."""
    rng = np.random.default_rng(seed)
    for sub in ('gt', 'lq'):
        os.makedirs(osp.join(root, sub), exist_ok=True)
    for i in range(n):
        gt = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
        cv2.imwrite(osp.join(root, 'gt', f'{i:04d}.png'), gt)
        cv2.imwrite(osp.join(root, 'lq', f'{i:04d}.png'), 255 - gt)
    return osp.join(root, 'gt'), osp.join(root, 'lq')


def to_lmdb(folder, lmdb_path):
    names = sorted(os.listdir(folder))
    make_lmdb_from_imgs(folder, lmdb_path, names, [osp.splitext(n)[0] for n in names])
    return lmdb_path


def source(name, dirs, **extra):
    return dict(name=name, dataroot_gt=dirs[0], dataroot_lq=dirs[1], **extra)


def dataset_opt(sources, phase='val', **extra):
    opt = dict(name='mix', type='MultiDegradationDataset', sources=sources, io_backend={'type': 'disk'},
               phase=phase, scale=1)
    opt.update(extra)
    return opt


def read_rgb(path):
    return torch.from_numpy(cv2.imread(path)[..., ::-1].transpose(2, 0, 1).astype(np.float32) / 255.)


@pytest.fixture
def two_sources(tmp_path):
    """Sources 'haze' (2 pairs) and 'rain' (7 pairs) of 40x40 PNGs."""
    return [source('haze', write_pairs(str(tmp_path / 'haze'), 2, seed=3)),
            source('rain', write_pairs(str(tmp_path / 'rain'), 7, seed=4))]


# --------------------------------------------------------------------------- samples and labels
def test_registered_and_sample_format(two_sources):
    assert DATASET_REGISTRY.get('MultiDegradationDataset') is MultiDegradationDataset
    ds = MultiDegradationDataset(dataset_opt(two_sources, balanced=False))
    for i in range(len(ds)):
        sample = ds[i]
        assert set(sample) == {'lq', 'gt', 'lq_path', 'gt_path', 'label', 'degradation'}
        for key in ('lq', 'gt'):
            img = sample[key]
            assert img.dtype == torch.float32 and img.shape == (3, 40, 40)
            assert 0 <= img.min() and img.max() <= 1
            assert torch.equal(img, read_rgb(sample[f'{key}_path']))  # full image, RGB, /255
        assert osp.basename(sample['gt_path']) == osp.basename(sample['lq_path'])
        assert isinstance(sample['label'], int) and isinstance(sample['degradation'], str)


def test_labels_and_names_per_index(two_sources):
    ds = MultiDegradationDataset(dataset_opt(two_sources, balanced=False))
    assert ds.labels == ['haze', 'rain'] and ds.source_sizes == [2, 7] and ds.num_types == 2
    assert len(ds) == 9  # unbalanced: concatenation
    expected = [0] * 2 + [1] * 7
    assert [ds.type_of_index(i) for i in range(9)] == expected
    for i in range(9):
        sample = ds[i]
        assert sample['label'] == expected[i] and sample['degradation'] == ds.labels[expected[i]]
        assert f'{os.sep}{ds.labels[expected[i]]}{os.sep}' in sample['gt_path']
    assert [osp.basename(ds[i]['gt_path']) for i in range(2, 9)] == [f'{i:04d}.png' for i in range(7)]
    assert ds.type_of_index(-1) == 1
    with pytest.raises(IndexError):
        ds[9]


def test_train_crop_size_and_alignment(tmp_path):
    sources = [source('haze', write_inverse_pairs(str(tmp_path / 'a'), 2, seed=5)),
               source('blur', write_inverse_pairs(str(tmp_path / 'b'), 3, seed=6, size=(32, 20)))]
    ds = MultiDegradationDataset(dataset_opt(sources, phase='train', gt_size=16, use_hflip=True, use_rot=True))
    crops = set()
    for _ in range(5):
        for i in range(len(ds)):
            sample = ds[i]
            assert sample['gt'].shape == sample['lq'].shape == (3, 16, 16)
            assert torch.allclose(sample['gt'] + sample['lq'], torch.ones(3, 16, 16), atol=1e-6)
            crops.add(sample['gt'].numpy().tobytes())
    assert len(crops) > 10  # random crops / flips differ between draws


def test_val_returns_full_non_square_images(tmp_path):
    sources = [source('rain', write_inverse_pairs(str(tmp_path / 'a'), 2, seed=7, size=(24, 36)))]
    sample = MultiDegradationDataset(dataset_opt(sources, phase='test', gt_size=16))[1]
    assert sample['gt'].shape == (3, 24, 36)
    assert torch.allclose(sample['gt'] + sample['lq'], torch.ones(3, 24, 36), atol=1e-6)


# --------------------------------------------------------------------------- sampling
def test_balanced_sampling_repeats_small_source(two_sources):
    ds = MultiDegradationDataset(dataset_opt(two_sources, balanced=True))
    assert len(ds) == 14  # 2 types x size of the largest source
    types = [ds.type_of_index(i) for i in range(len(ds))]
    assert Counter(types) == {0: 7, 1: 7}
    assert types[:4] == [0, 1, 0, 1]
    paths = {0: Counter(), 1: Counter()}
    for i in range(len(ds)):
        sample = ds[i]
        assert sample['label'] == types[i] and sample['degradation'] == ds.labels[types[i]]
        paths[sample['label']][osp.basename(sample['gt_path'])] += 1
    assert paths[0] == {'0000.png': 4, '0001.png': 3}  # every small-source sample appears, repeated
    assert paths[1] == {f'{i:04d}.png': 1 for i in range(7)}


def test_samples_per_type_window_moves_with_set_epoch(two_sources):
    ds = MultiDegradationDataset(dataset_opt(two_sources, balanced=True, samples_per_type=3))
    assert len(ds) == 6
    assert Counter(ds.type_of_index(i) for i in range(6)) == {0: 3, 1: 3}
    rain = [i for i in range(6) if ds.type_of_index(i) == 1]
    windows = []
    for epoch in range(3):
        ds.set_epoch(epoch)
        windows.append([ds.locate(i)[1] for i in rain])
    assert windows == [[0, 1, 2], [3, 4, 5], [6, 0, 1]]


@pytest.mark.parametrize('value', [0, -2, 1.5, 'all'])
def test_bad_samples_per_type(two_sources, value):
    with pytest.raises(ValueError, match='samples_per_type'):
        MultiDegradationDataset(dataset_opt(two_sources, samples_per_type=value))


# --------------------------------------------------------------------------- LMDB
def test_lmdb_source_reads_the_same_pixels(tmp_path):
    gt_dir, lq_dir = write_pairs(str(tmp_path / 'folder'), 3, seed=8)
    lmdbs = (to_lmdb(gt_dir, str(tmp_path / 'gt.lmdb')), to_lmdb(lq_dir, str(tmp_path / 'lq.lmdb')))
    sources = [source('disk', (gt_dir, lq_dir)), source('lmdb', lmdbs, io_backend={'type': 'lmdb'})]
    ds = MultiDegradationDataset(dataset_opt(sources, balanced=False))
    assert ds.source_sizes == [3, 3]
    for i in range(3):
        from_disk, from_lmdb = ds[i], ds[3 + i]
        assert from_lmdb['gt_path'] == from_lmdb['lq_path'] == f'{i:04d}'  # LMDB key, as in BasicSR
        assert torch.equal(from_disk['gt'], from_lmdb['gt']) and torch.equal(from_disk['lq'], from_lmdb['lq'])


def test_dataset_level_lmdb_backend_and_meta_info_file(tmp_path):
    gt_dir, lq_dir = write_pairs(str(tmp_path / 'folder'), 4, seed=9)
    lmdbs = (to_lmdb(gt_dir, str(tmp_path / 'gt.lmdb')), to_lmdb(lq_dir, str(tmp_path / 'lq.lmdb')))
    meta = tmp_path / 'meta.txt'
    meta.write_text('0002.png (40,40,3)\n0000.png (40,40,3)\n')
    sources = [source('lmdb', lmdbs), source('meta', (gt_dir, lq_dir), io_backend={'type': 'disk'},
                                             meta_info_file=str(meta))]
    ds = MultiDegradationDataset(dataset_opt(sources, balanced=False, io_backend={'type': 'lmdb'}))
    assert ds.source_sizes == [4, 2]
    assert [osp.basename(ds[i]['gt_path']) for i in (4, 5)] == ['0002.png', '0000.png']
    assert torch.equal(ds[2]['gt'], ds[4]['gt'])


# --------------------------------------------------------------------------- errors at build time
def test_missing_counterparts_name_source_folders_and_files(tmp_path):
    gt_dir, lq_dir = write_pairs(str(tmp_path / 'rain'), 3, seed=10)
    for i in range(8):
        cv2.imwrite(osp.join(gt_dir, f'extra_{i}.png'), np.zeros((40, 40, 3), np.uint8))
    os.remove(osp.join(gt_dir, '0001.png'))
    with pytest.raises(ValueError) as info:
        MultiDegradationDataset(dataset_opt([source('rain', (gt_dir, lq_dir))]))
    msg = str(info.value)
    assert "'rain'" in msg and gt_dir in msg and lq_dir in msg
    assert "'extra_0.png'" in msg and '(8 in all)' in msg  # gt without lq: first few and the count
    assert "'0001.png'" in msg and '(1 in all)' in msg  # lq without gt


def test_filename_tmpl_pairs_renamed_lq(tmp_path):
    gt_dir, lq_dir = write_pairs(str(tmp_path / 'blur'), 2, seed=11)
    for name in os.listdir(lq_dir):
        os.rename(osp.join(lq_dir, name), osp.join(lq_dir, 'blur_' + name))
    with pytest.raises(ValueError, match='0000.png'):
        MultiDegradationDataset(dataset_opt([source('blur', (gt_dir, lq_dir))]))
    ds = MultiDegradationDataset(dataset_opt([source('blur', (gt_dir, lq_dir), filename_tmpl='blur_{}')]))
    assert osp.basename(ds[0]['lq_path']) == 'blur_0000.png'


def test_missing_folder_names_the_key(tmp_path, two_sources):
    two_sources[1]['dataroot_lq'] = str(tmp_path / 'nowhere')
    with pytest.raises(ValueError, match=r"sources\[1\] \('rain'\): `dataroot_lq` does not exist: .*nowhere"):
        MultiDegradationDataset(dataset_opt(two_sources))
    two_sources[1]['dataroot_lq'] = two_sources[1]['dataroot_gt']
    two_sources[1]['meta_info_file'] = str(tmp_path / 'meta.txt')
    with pytest.raises(ValueError, match='`meta_info_file` does not exist'):
        MultiDegradationDataset(dataset_opt(two_sources))


def test_lmdb_errors(tmp_path):
    gt_dir, lq_dir = write_pairs(str(tmp_path / 'folder'), 3, seed=12)
    gt_lmdb = to_lmdb(gt_dir, str(tmp_path / 'gt.lmdb'))
    os.remove(osp.join(lq_dir, '0002.png'))
    lq_lmdb = to_lmdb(lq_dir, str(tmp_path / 'lq.lmdb'))
    with pytest.raises(ValueError, match=r"'haze'.*gt LMDB entries without an lq counterpart: '0002.png'"):
        MultiDegradationDataset(dataset_opt([source('haze', (gt_lmdb, lq_lmdb), io_backend={'type': 'lmdb'})]))
    os.remove(osp.join(lq_lmdb, 'meta_info.txt'))
    with pytest.raises(ValueError, match=r'`dataroot_lq` .*lq\.lmdb has no meta_info\.txt'):
        MultiDegradationDataset(dataset_opt([source('haze', (gt_lmdb, lq_lmdb), io_backend={'type': 'lmdb'})]))
    with pytest.raises(ValueError, match='is an LMDB; set io_backend'):
        MultiDegradationDataset(dataset_opt([source('haze', (gt_lmdb, gt_lmdb))]))
    with pytest.raises(ValueError, match='ending in .lmdb'):
        MultiDegradationDataset(dataset_opt([source('haze', (gt_dir, gt_dir), io_backend={'type': 'lmdb'})]))


@pytest.mark.parametrize('sources, match', [
    ([], 'non-empty list'),
    (None, 'non-empty list'),
    ([{'dataroot_gt': 'a', 'dataroot_lq': 'b'}], 'name'),
    ([{'name': 'haze', 'dataroot_gt': 'a', 'dataroot_qt': 'b'}], r"unknown option\(s\) \['dataroot_qt'\]"),
    ([{'name': 'haze', 'dataroot_gt': 'a'}], '`dataroot_lq`'),
])
def test_bad_source_lists(sources, match):
    with pytest.raises(ValueError, match=match):
        MultiDegradationDataset(dataset_opt(sources))


def test_duplicate_names_and_empty_source(tmp_path, two_sources):
    two_sources[1]['name'] = 'haze'
    with pytest.raises(ValueError, match=r"unique, repeated: \['haze'\]"):
        MultiDegradationDataset(dataset_opt(two_sources))
    os.makedirs(tmp_path / 'empty' / 'gt')
    os.makedirs(tmp_path / 'empty' / 'lq')
    with pytest.raises(ValueError, match="'void'.*no image pairs"):
        MultiDegradationDataset(dataset_opt([source('void', (str(tmp_path / 'empty' / 'gt'),
                                                             str(tmp_path / 'empty' / 'lq')))]))


def test_train_needs_gt_size(two_sources):
    with pytest.raises(ValueError, match='gt_size'):
        MultiDegradationDataset(dataset_opt(two_sources, phase='train'))


# --------------------------------------------------------------------------- errors at load time
def test_size_mismatch_names_both_files(tmp_path):
    gt_dir, lq_dir = write_pairs(str(tmp_path / 'haze'), 2, seed=13)
    cv2.imwrite(osp.join(lq_dir, '0001.png'), np.zeros((32, 40, 3), np.uint8))
    for phase in ('train', 'val'):
        # found from the image headers when the dataset is built ...
        with pytest.raises(ValueError) as info:
            MultiDegradationDataset(dataset_opt([source('haze', (gt_dir, lq_dir))], phase=phase, gt_size=16))
        # ... or, with the header check off, when the pair is drawn
        ds = MultiDegradationDataset(dataset_opt([source('haze', (gt_dir, lq_dir))], phase=phase, gt_size=16,
                                                 check_images=False))
        ds[0]
        with pytest.raises(ValueError) as info_drawn:
            ds[1]
        for msg in (str(info.value), str(info_drawn.value)):
            assert osp.join(gt_dir, '0001.png') in msg and osp.join(lq_dir, '0001.png') in msg
            assert '40x40' in msg and '32x40' in msg


def test_image_smaller_than_gt_size(two_sources):
    with pytest.raises(ValueError, match=r'0000\.png is 40x40 \(HxW\), smaller than the training patch \(64x64'):
        MultiDegradationDataset(dataset_opt(two_sources, phase='train', gt_size=64))
    ds = MultiDegradationDataset(dataset_opt(two_sources, phase='train', gt_size=64, check_images=False))
    with pytest.raises(ValueError, match=r'0000\.png \(40x40\).*smaller than gt_size 64'):
        ds[0]


def test_corrupt_and_vanished_images_name_the_file(tmp_path):
    gt_dir, lq_dir = write_pairs(str(tmp_path / 'rain'), 3, seed=14)
    with open(osp.join(lq_dir, '0001.png'), 'wb') as f:
        f.write(b'\x89PNG\r\n\x1a\nthis is not a png')
    with pytest.raises(ValueError, match=re.escape(osp.join(lq_dir, '0001.png'))):
        MultiDegradationDataset(dataset_opt([source('rain', (gt_dir, lq_dir))]))
    open(osp.join(gt_dir, '0002.png'), 'wb').close()  # empty file
    ds = MultiDegradationDataset(dataset_opt([source('rain', (gt_dir, lq_dir))], check_images=False))
    with pytest.raises(ValueError, match=re.escape(osp.join(lq_dir, '0001.png'))):
        ds[1]
    with pytest.raises(ValueError, match=re.escape(osp.join(gt_dir, '0002.png'))):
        ds[2]
    os.remove(osp.join(gt_dir, '0000.png'))
    with pytest.raises(OSError, match=re.escape(osp.join(gt_dir, '0000.png'))):
        ds[0]


# --------------------------------------------------------------------------- BasicSR builders
@pytest.mark.parametrize('num_worker', [0, 2])
def test_build_dataset_and_dataloader(tmp_path, num_worker):
    gt_dir, lq_dir = write_pairs(str(tmp_path / 'blur'), 5, seed=15)
    lmdbs = (to_lmdb(gt_dir, str(tmp_path / 'gt.lmdb')), to_lmdb(lq_dir, str(tmp_path / 'lq.lmdb')))
    opt = dataset_opt([source('haze', write_pairs(str(tmp_path / 'haze'), 2, seed=16)),
                       source('rain', write_pairs(str(tmp_path / 'rain'), 3, seed=17)),
                       source('blur', lmdbs, io_backend={'type': 'lmdb'})],
                      phase='train', gt_size=32, use_hflip=True, use_rot=True, balanced=True,
                      batch_size_per_gpu=4, num_worker_per_gpu=num_worker)
    ds = build_dataset(opt)
    assert isinstance(ds, MultiDegradationDataset) and len(ds) == 15
    ds[0]  # opens the file clients in this process; workers must still get a picklable copy
    loader = build_dataloader(ds, opt, num_gpu=0, dist=False, sampler=None, seed=0)
    batches = list(loader)
    assert len(batches) == 3  # drop_last
    labels = Counter()
    for batch in batches:
        assert batch['lq'].shape == batch['gt'].shape == (4, 3, 32, 32)
        assert batch['label'].shape == (4,) and batch['label'].dtype == torch.int64
        assert isinstance(batch['degradation'], list) and len(batch['degradation']) == 4
        assert batch['degradation'] == [ds.labels[v] for v in batch['label'].tolist()]
        labels.update(batch['degradation'])
    assert set(labels) <= {'haze', 'rain', 'blur'} and sum(labels.values()) == 12


# --------------------------------------------------------------------------- contrast augmentation
def test_random_intensity_affine_known_answer():
    x = np.linspace(0, 1, 12, dtype=np.float32).reshape(2, 2, 3)
    outs = random_intensity_affine([x, 1 - x], (0.4, 0.9), np.random.RandomState(7))
    draw = np.random.RandomState(7)
    a = draw.uniform(0.4, 0.9)
    b = draw.uniform(0.0, 1.0 - a)
    np.testing.assert_allclose(outs[0], a * x + b, atol=1e-6)
    np.testing.assert_allclose(outs[1], a * (1 - x) + b, atol=1e-6)  # the same map for every image
    assert outs[0].dtype == np.float32
    ones, zeros = np.ones((1, 1, 3), np.float32), np.zeros((1, 1, 3), np.float32)
    rng = np.random.RandomState(0)
    for _ in range(200):  # the ends of [0, 1] stay inside it
        hi, lo = random_intensity_affine([ones, zeros], (0.1, 1.0), rng)
        assert 0 <= lo.min() <= hi.max() <= 1 + 1e-6 and hi.max() - lo.min() >= 0.1 - 1e-6
    same = random_intensity_affine([x], (1.0, 1.0), np.random.RandomState(3))[0]
    np.testing.assert_array_equal(same, x)  # a = 1 forces b = 0: the identity


def test_contrast_range_maps_gt_and_lq_alike_in_training_only(tmp_path):
    dirs = write_inverse_pairs(str(tmp_path / 'a'), 3, seed=8)
    ds = MultiDegradationDataset(dataset_opt([source('haze', dirs)], phase='train', gt_size=16,
                                             contrast_range=[0.5, 0.5]))
    offsets = set()
    for i in range(len(ds)):
        sample = ds[i]
        total = sample['gt'] + sample['lq']  # gt + lq = 1 becomes a + 2b = 0.5 + 2b, one value per pair
        assert torch.allclose(total, total.flatten()[0].expand_as(total), atol=1e-5)
        assert 0.5 - 1e-5 <= total.flatten()[0] <= 1.5 + 1e-5
        offsets.add(round(float(total.flatten()[0]), 4))
        diff = sample['gt'] - sample['lq']  # = a (2 gt - 1): the contrast halved
        assert diff.abs().max() <= 0.5 + 1e-5
    assert len(offsets) == 3  # b drawn per pair
    val = MultiDegradationDataset(dataset_opt([source('haze', dirs)], phase='val', contrast_range=[0.5, 0.5]))
    assert torch.equal(val[0]['gt'], read_rgb(val[0]['gt_path']))  # no augmentation outside training


@pytest.mark.parametrize('value', [[0, 1], [0.8, 0.5], [0.5, 1.2], [0.5], 'wide', [True, 1]])
def test_bad_contrast_range(two_sources, value):
    with pytest.raises(ValueError, match=re.escape('MultiDegradationDataset: `contrast_range` must be [low, high]')):
        MultiDegradationDataset(dataset_opt(two_sources, contrast_range=value))
