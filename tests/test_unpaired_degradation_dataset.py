"""UnpairedDegradationDataset: samples, labels, unpaired clear images, aligned gt, LMDB, errors, loaders."""
import os
import random
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
from uniremoval.data.unpaired_degradation_dataset import UnpairedDegradationDataset

CLEAR_COLOURS = [(10, 200, 30), (250, 0, 120), (60, 60, 240), (0, 255, 0), (128, 5, 77)]  # BGR, one per file


def write_noise(folder, n, seed, size=(24, 32), with_gt=False):
    """Random-noise lq images (uint8 BGR, HxW ``size``), and gt = 255 - lq in a sibling folder if asked."""
    rng = np.random.default_rng(seed)
    lq_dir, gt_dir = osp.join(folder, 'lq'), osp.join(folder, 'gt')
    os.makedirs(lq_dir, exist_ok=True)
    if with_gt:
        os.makedirs(gt_dir, exist_ok=True)
    for i in range(n):
        lq = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
        cv2.imwrite(osp.join(lq_dir, f'{i:04d}.png'), lq)
        if with_gt:
            cv2.imwrite(osp.join(gt_dir, f'{i:04d}.png'), 255 - lq)
    return (lq_dir, gt_dir) if with_gt else lq_dir


def write_clear(folder, n=len(CLEAR_COLOURS), size=(20, 28)):
    """Constant-colour clear images, a distinct colour per file."""
    os.makedirs(folder, exist_ok=True)
    for i in range(n):
        cv2.imwrite(osp.join(folder, f'c{i}.png'), np.full((*size, 3), CLEAR_COLOURS[i], np.uint8))
    return folder


def clear_colour(path):
    """RGB colour in [0, 1] of the clear file ``path`` (file name ``c<i>.png`` or LMDB key ``c<i>``)."""
    b, g, r = CLEAR_COLOURS[int(osp.splitext(osp.basename(path))[0][1:])]
    return torch.tensor([r, g, b], dtype=torch.float32) / 255.


def to_lmdb(folder, lmdb_path):
    names = sorted(os.listdir(folder))
    # map_size: BasicSR's estimate (10x the first image) is too small for tiny constant-colour PNGs
    make_lmdb_from_imgs(folder, lmdb_path, names, [osp.splitext(n)[0] for n in names], map_size=1 << 20)
    return lmdb_path


def read_rgb(path):
    return torch.from_numpy(cv2.imread(path)[..., ::-1].transpose(2, 0, 1).astype(np.float32) / 255.)


def dataset_opt(sources, phase='train', clear=None, **extra):
    opt = dict(name='real', type='UnpairedDegradationDataset', sources=sources, dataroot_clear=clear,
               io_backend={'type': 'disk'}, phase=phase, scale=1)
    if phase == 'train':
        opt.update(gt_size=16, use_hflip=True, use_rot=True)
    opt.update(extra)
    return opt


@pytest.fixture
def data(tmp_path):
    """'haze': 2 lq-only noise images; 'rain': 3 noise images with gt = 255 - lq; 5 constant clear images."""
    rain_lq, rain_gt = write_noise(str(tmp_path / 'rain'), 3, seed=2, with_gt=True)
    return dict(sources=[dict(name='haze', dataroot_lq=write_noise(str(tmp_path / 'haze'), 2, seed=1)),
                         dict(name='rain', dataroot_lq=rain_lq, dataroot_gt=rain_gt)],
                clear=write_clear(str(tmp_path / 'clear')))


# --------------------------------------------------------------------------- samples and labels
def test_registered_and_train_sample_format(data):
    assert DATASET_REGISTRY.get('UnpairedDegradationDataset') is UnpairedDegradationDataset
    ds = UnpairedDegradationDataset(dataset_opt(data['sources'], clear=data['clear']))
    assert ds.labels == ['haze', 'rain'] and ds.source_sizes == [2, 3] and ds.num_clear == 5
    assert ds.has_gt == [False, True]
    for i in range(len(ds)):
        sample = ds[i]
        # mixed sources in train: no sample carries gt, so every batch shares its keys
        assert set(sample) == {'lq', 'clear', 'lq_path', 'clear_path', 'label', 'degradation'}
        for key in ('lq', 'clear'):
            assert sample[key].dtype == torch.float32 and sample[key].shape == (3, 16, 16)
            assert 0 <= sample[key].min() and sample[key].max() <= 1
        assert isinstance(sample['label'], int) and sample['degradation'] == ds.labels[sample['label']]
        assert sample['lq_path'].startswith(data['sources'][sample['label']]['dataroot_lq'])
        assert osp.dirname(sample['clear_path']) == data['clear']
        assert torch.equal(sample['clear'], clear_colour(sample['clear_path'])[:, None, None].expand(3, 16, 16))


def test_labels_and_unbalanced_concatenation(data):
    ds = UnpairedDegradationDataset(dataset_opt(data['sources'], phase='val', balanced=False))
    assert len(ds) == 5 and ds.num_clear == 0 and ds.num_types == 2
    assert [ds.type_of_index(i) for i in range(5)] == [0, 0, 1, 1, 1] and ds.type_of_index(-1) == 1
    assert [osp.basename(ds[i]['lq_path']) for i in range(5)] == ['0000.png', '0001.png', '0000.png', '0001.png',
                                                                  '0002.png']
    with pytest.raises(IndexError):
        ds[5]


def test_balanced_sampling_and_set_epoch(data):
    ds = UnpairedDegradationDataset(dataset_opt(data['sources'], clear=data['clear'], balanced=True))
    assert len(ds) == 6  # 2 types x size of the largest source
    types = [ds.type_of_index(i) for i in range(6)]
    assert Counter(types) == {0: 3, 1: 3} and types[:2] == [0, 1]
    names = {0: Counter(), 1: Counter()}
    for i in range(6):
        sample = ds[i]
        assert sample['label'] == types[i]
        names[sample['label']][osp.basename(sample['lq_path'])] += 1
    assert names == {0: {'0000.png': 2, '0001.png': 1}, 1: {'0000.png': 1, '0001.png': 1, '0002.png': 1}}

    ds = UnpairedDegradationDataset(dataset_opt(data['sources'], clear=data['clear'], samples_per_type=2))
    rain = [i for i in range(len(ds)) if ds.type_of_index(i) == 1]
    windows = []
    for epoch in range(3):
        ds.set_epoch(epoch)
        windows.append([ds.locate(i)[1] for i in rain])
    assert len(ds) == 4 and windows == [[0, 1], [2, 0], [1, 2]]
    with pytest.raises(ValueError, match='samples_per_type'):
        UnpairedDegradationDataset(dataset_opt(data['sources'], clear=data['clear'], samples_per_type=0))


# --------------------------------------------------------------------------- unpaired clear, paired gt
def test_clear_images_are_drawn_independently_of_the_index(data):
    ds = UnpairedDegradationDataset(dataset_opt(data['sources'], clear=data['clear']))
    random.seed(0)
    per_index = [[osp.basename(ds[i]['clear_path']) for _ in range(8)] for i in range(len(ds))]
    assert len({name for draws in per_index for name in draws}) > 2  # several clear files across indices
    assert all(len(set(draws)) > 1 for draws in per_index)  # a new draw at each call, not tied to the index
    random.seed(0)
    assert [[osp.basename(ds[i]['clear_path']) for _ in range(8)] for i in range(len(ds))] == per_index


def test_lq_and_gt_crops_stay_aligned(tmp_path, data):
    sources = [data['sources'][1],
               dict(name='blur', dataroot_lq=write_noise(str(tmp_path / 'blur'), 2, seed=3, size=(32, 20),
                                                         with_gt=True)[0],
                    dataroot_gt=str(tmp_path / 'blur' / 'gt'))]
    ds = UnpairedDegradationDataset(dataset_opt(sources, clear=data['clear']))
    crops = set()
    for _ in range(4):
        for i in range(len(ds)):
            sample = ds[i]
            assert set(sample) >= {'gt', 'gt_path'}  # every source has gt: training samples carry it
            assert sample['gt'].shape == sample['lq'].shape == (3, 16, 16)
            assert torch.allclose(sample['gt'] + sample['lq'], torch.ones(3, 16, 16), atol=1e-6)
            assert osp.basename(sample['gt_path']) == osp.basename(sample['lq_path'])
            crops.add(sample['lq'].numpy().tobytes())
    assert len(crops) > 8  # random crops / flips / rotations differ between draws


def test_val_full_images_with_gt_where_available(tmp_path, data):
    sources = data['sources'] + [dict(name='blur', dataroot_lq=write_noise(str(tmp_path / 'blur'), 1, seed=4,
                                                                           size=(30, 18)))]
    ds = UnpairedDegradationDataset(dataset_opt(sources, phase='val', balanced=False))
    shapes = []
    for i in range(len(ds)):
        sample = ds[i]
        assert 'clear' not in sample and 'clear_path' not in sample
        assert torch.equal(sample['lq'], read_rgb(sample['lq_path']))  # full image, RGB, /255
        shapes.append(tuple(sample['lq'].shape))
        if sample['degradation'] == 'rain':
            assert set(sample) == {'lq', 'gt', 'lq_path', 'gt_path', 'label', 'degradation'}
            assert torch.equal(sample['gt'], read_rgb(sample['gt_path']))
        else:
            assert set(sample) == {'lq', 'lq_path', 'label', 'degradation'}
    assert shapes == [(3, 24, 32)] * 5 + [(3, 30, 18)]

    ds = UnpairedDegradationDataset(dataset_opt(sources, phase='test', clear=data['clear'], balanced=False))
    assert [osp.basename(ds[i]['clear_path']) for i in range(6)] == ['c0.png', 'c1.png', 'c2.png', 'c3.png', 'c4.png',
                                                                     'c0.png']
    assert torch.equal(ds[1]['clear'], read_rgb(osp.join(data['clear'], 'c1.png')))


# --------------------------------------------------------------------------- LMDB
def test_lmdb_sources_and_clear_read_the_same_pixels(tmp_path, data):
    haze_lmdb = to_lmdb(data['sources'][0]['dataroot_lq'], str(tmp_path / 'haze.lmdb'))
    rain = data['sources'][1]
    rain_lmdbs = dict(dataroot_lq=to_lmdb(rain['dataroot_lq'], str(tmp_path / 'rain_lq.lmdb')),
                      dataroot_gt=to_lmdb(rain['dataroot_gt'], str(tmp_path / 'rain_gt.lmdb')))
    clear_lmdb = to_lmdb(data['clear'], str(tmp_path / 'clear.lmdb'))
    lmdb_sources = [dict(name='haze', dataroot_lq=haze_lmdb), dict(name='rain', **rain_lmdbs)]
    from_disk = UnpairedDegradationDataset(dataset_opt(data['sources'], phase='val', clear=data['clear'],
                                                       balanced=False))
    from_lmdb = UnpairedDegradationDataset(dataset_opt(lmdb_sources, phase='val', clear=clear_lmdb, balanced=False,
                                                       io_backend={'type': 'lmdb'}))
    assert from_lmdb.source_sizes == [2, 3] and from_lmdb.num_clear == 5
    for i in range(5):
        a, b = from_disk[i], from_lmdb[i]
        assert set(a) == set(b)
        assert b['lq_path'] == osp.splitext(osp.basename(a['lq_path']))[0]  # LMDB key, as in BasicSR
        for key in ('lq', 'gt', 'clear'):
            if key in a:
                assert torch.equal(a[key], b[key])
    del from_lmdb  # closes its LMDB environments: py-lmdb opens an environment once per process
    # an LMDB clear set next to folder sources, and LMDB sources in training (pickled clients reopen lazily)
    mixed = UnpairedDegradationDataset(dataset_opt(data['sources'], clear=clear_lmdb,
                                                   clear_io_backend={'type': 'lmdb'}))
    sample = mixed[0]
    assert torch.equal(sample['clear'], clear_colour(sample['clear_path'])[:, None, None].expand(3, 16, 16))
    train = UnpairedDegradationDataset(dataset_opt([dict(name='rain', io_backend={'type': 'lmdb'}, **rain_lmdbs)],
                                                   clear=data['clear']))
    sample = train[1]
    assert torch.allclose(sample['gt'] + sample['lq'], torch.ones(3, 16, 16), atol=1e-6)


# --------------------------------------------------------------------------- errors
def test_train_needs_clear_images_and_gt_size(data):
    with pytest.raises(ValueError, match='`dataroot_clear`.*required in phase train'):
        UnpairedDegradationDataset(dataset_opt(data['sources']))
    with pytest.raises(ValueError, match='gt_size'):
        UnpairedDegradationDataset(dataset_opt(data['sources'], clear=data['clear'], gt_size=None))
    with pytest.raises(ValueError, match='scale 1'):
        UnpairedDegradationDataset(dataset_opt(data['sources'], clear=data['clear'], scale=2))


def test_mismatched_gt_names_name_the_files(data):
    rain = data['sources'][1]
    os.rename(osp.join(rain['dataroot_gt'], '0001.png'), osp.join(rain['dataroot_gt'], 'other.png'))
    with pytest.raises(ValueError) as info:
        UnpairedDegradationDataset(dataset_opt(data['sources'], clear=data['clear']))
    msg = str(info.value)
    assert "('rain')" in msg and "'other.png'" in msg and "'0001.png'" in msg


def test_missing_folders_and_empty_sets_name_the_key(tmp_path, data):
    cases = [(dict(sources=[dict(data['sources'][0], dataroot_lq=str(tmp_path / 'nowhere'))]),
              r"sources\[0\] \('haze'\): `dataroot_lq` does not exist: .*nowhere"),
             (dict(sources=[dict(data['sources'][1], dataroot_gt=str(tmp_path / 'nogt'))]),
              r"sources\[0\] \('rain'\): `dataroot_gt` does not exist: .*nogt"),
             (dict(clear=str(tmp_path / 'noclear')), r'`dataroot_clear` does not exist: .*noclear'),
             (dict(sources=[dict(name='haze')]), '`dataroot_lq`'),
             (dict(sources=[dict(data['sources'][0], dataroot_qt='x')]), r"unknown option\(s\) \['dataroot_qt'\]"),
             (dict(sources=[data['sources'][0], dict(data['sources'][1], name='haze')]), r"repeated: \['haze'\]")]
    for change, match in cases:
        opt = dict(sources=data['sources'], clear=data['clear'])
        opt.update(change)
        with pytest.raises(ValueError, match=match):
            UnpairedDegradationDataset(dataset_opt(**opt))
    os.makedirs(tmp_path / 'empty')
    with pytest.raises(ValueError, match=r"\('void'\): no images found in `dataroot_lq`"):
        UnpairedDegradationDataset(dataset_opt([dict(name='void', dataroot_lq=str(tmp_path / 'empty'))],
                                               clear=data['clear']))
    with pytest.raises(ValueError, match='clear images: no images found in `dataroot_clear`'):
        UnpairedDegradationDataset(dataset_opt(data['sources'], clear=str(tmp_path / 'empty')))


def test_images_smaller_than_gt_size_name_the_file(data):
    # found from the image headers when the dataset is built ...
    with pytest.raises(ValueError, match=r'clear image .*c\d\.png is 20x28 \(HxW\), smaller than the training patch'):
        UnpairedDegradationDataset(dataset_opt(data['sources'], clear=data['clear'], gt_size=22))
    # ... or, with the header check off, when the sample is drawn
    ds = UnpairedDegradationDataset(dataset_opt(data['sources'], clear=data['clear'], gt_size=22, check_images=False))
    with pytest.raises(ValueError, match=r'clear image .*c\d\.png \(20x28\) is smaller than gt_size 22'):
        ds[0]  # lq 24x32 fits, every clear image is 20x28
    ds = UnpairedDegradationDataset(dataset_opt(data['sources'], clear=data['clear'], gt_size=28, check_images=False))
    with pytest.raises(ValueError, match=r"\('haze'\): degraded image .*0000\.png \(24x32\) is smaller than gt_size"):
        ds[0]


def test_corrupt_images_name_the_file(data):
    haze_dir = data['sources'][0]['dataroot_lq']
    with open(osp.join(haze_dir, '0001.png'), 'wb') as f:
        f.write(b'\x89PNG\r\n\x1a\nthis is not a png')
    with pytest.raises(ValueError, match=re.escape(osp.join(haze_dir, '0001.png'))):
        UnpairedDegradationDataset(dataset_opt(data['sources'], phase='val', balanced=False))
    ds = UnpairedDegradationDataset(dataset_opt(data['sources'], phase='val', balanced=False, check_images=False))
    with pytest.raises(ValueError, match=re.escape(osp.join(haze_dir, '0001.png'))):
        ds[1]
    rain = data['sources'][1]
    cv2.imwrite(osp.join(rain['dataroot_gt'], '0002.png'), np.zeros((24, 30, 3), np.uint8))
    with pytest.raises(ValueError, match=r'gt .*gt/0002\.png is 24x30 \(HxW\) but lq .*lq/0002\.png is 24x32'):
        ds[4]
    for name in os.listdir(data['clear']):
        open(osp.join(data['clear'], name), 'wb').close()  # empty files
    ds = UnpairedDegradationDataset(dataset_opt(data['sources'], clear=data['clear'], check_images=False))
    with pytest.raises(ValueError, match=r'clear image .*c\d\.png is missing, empty, truncated or not a decodable'):
        ds[0]


# --------------------------------------------------------------------------- BasicSR builders
@pytest.mark.parametrize('num_worker', [0, 1])
def test_build_dataset_and_dataloader(tmp_path, data, num_worker):
    sources = data['sources'] + [dict(name='blur', io_backend={'type': 'lmdb'},
                                      dataroot_lq=to_lmdb(write_noise(str(tmp_path / 'blur'), 2, seed=5),
                                                          str(tmp_path / 'blur.lmdb')))]
    opt = dataset_opt(sources, clear=data['clear'], batch_size_per_gpu=4, num_worker_per_gpu=num_worker)
    ds = build_dataset(opt)
    assert isinstance(ds, UnpairedDegradationDataset) and len(ds) == 9
    ds[2]  # opens the LMDB client in this process; workers must still get a picklable copy
    loader = build_dataloader(ds, opt, num_gpu=0, dist=False, sampler=None, seed=0)
    batches = list(loader)
    assert len(batches) == 2  # drop_last
    for batch in batches:
        assert batch['lq'].shape == batch['clear'].shape == (4, 3, 16, 16)
        assert batch['label'].shape == (4,) and batch['label'].dtype == torch.int64
        assert isinstance(batch['degradation'], list) and len(batch['degradation']) == 4
        assert batch['degradation'] == [ds.labels[v] for v in batch['label'].tolist()]
        assert len(batch['clear_path']) == 4
