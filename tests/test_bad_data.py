"""Bad training / test data: each case fails early, naming the folder or file, or is converted.

* empty or missing folders, truncated PNGs, images smaller than the patch and lq/gt size mismatches
  are found when the option file is checked (BasicSR's PairedImageDataset) or when our datasets are
  built, from the image headers, instead of a ZeroDivisionError or an AttributeError at the iteration
  that draws the file;
* grayscale, RGBA and 16-bit images become 3-channel float images in [0, 1];
* a corrupt or truncated LMDB is reported with its path (and the missing key).
"""
import os
import shutil
from os import path as osp

import cv2
import numpy as np
import pytest
import torch

from uniremoval.commands.basicsr_cli import main as cli_main
from uniremoval.data.data_util import DataCheckError, check_dataset_files, image_size
from uniremoval.data.multi_degradation_dataset import MultiDegradationDataset
from uniremoval.options import OptionsError, parse_options
from conftest import tiny_teacher_options, write_pairs


def _copy_pairs(paired_folders, tmp_path):
    """A private copy of the train / val pairs, safe to damage."""
    out = {}
    for split, (gt, lq) in paired_folders.items():
        root = tmp_path / split
        shutil.copytree(gt, root / 'gt')
        shutil.copytree(lq, root / 'lq')
        out[split] = (str(root / 'gt'), str(root / 'lq'))
    return out


def _truncate(path, keep=0.5):
    data = open(path, 'rb').read()
    with open(path, 'wb') as f:
        f.write(data[:int(len(data) * keep)])


def _parse_error(tmp_path, data, name='bad'):
    opt_path = tiny_teacher_options(tmp_path, data, name)
    with pytest.raises(OptionsError) as info:
        parse_options(['-opt', opt_path], root_path=str(tmp_path))
    return str(info.value)


# --------------------------------------------------------------------------- BasicSR's PairedImageDataset
def test_empty_training_folders_are_reported_not_zero_division(tmp_path, paired_folders, capsys):
    data = _copy_pairs(paired_folders, tmp_path)
    for folder in data['train']:
        for name in os.listdir(folder):
            os.remove(osp.join(folder, name))
    msg = _parse_error(tmp_path, data)
    assert f"datasets:train: dataroot_gt: folder {data['train'][0]} holds no images" in msg
    opt_path = tiny_teacher_options(tmp_path, data, 'bad_cli')
    assert cli_main(['train', '-opt', opt_path]) == 2
    assert 'holds no images' in capsys.readouterr().err


def test_truncated_png_named_before_training(tmp_path, paired_folders):
    data = _copy_pairs(paired_folders, tmp_path)
    bad = osp.join(data['train'][1], '0003.png')
    _truncate(bad)
    msg = _parse_error(tmp_path, data)
    assert f'image {bad} is truncated' in msg or f'image {bad} is not a readable image' in msg
    # garbage after a valid header: PIL reads the size, the end marker is missing
    with open(bad, 'wb') as f:
        f.write(open(osp.join(data['train'][0], '0003.png'), 'rb').read()[:200])
    assert f'image {bad} is truncated (its PNG end marker is missing)' in _parse_error(tmp_path, data)


def test_images_smaller_than_the_patch_and_size_mismatch(tmp_path, paired_folders):
    data = _copy_pairs(paired_folders, tmp_path)
    small_gt = osp.join(data['train'][0], '0002.png')
    small_lq = osp.join(data['train'][1], '0002.png')
    cv2.imwrite(small_gt, np.zeros((20, 30, 3), np.uint8))
    cv2.imwrite(small_lq, np.zeros((20, 30, 3), np.uint8))
    msg = _parse_error(tmp_path, data)
    assert f'gt image {small_gt} is 20x30 (HxW), smaller than the training patch (32x32, gt_size 32)' in msg
    cv2.imwrite(small_lq, np.zeros((40, 36, 3), np.uint8))
    msg = _parse_error(tmp_path, data)
    assert f'gt image {small_gt} is 20x30 (HxW) but lq image {small_lq} is 40x36; they must be the same size' in msg


def test_validation_images_may_be_any_size_but_must_pair(tmp_path, paired_folders):
    data = _copy_pairs(paired_folders, tmp_path)
    for folder in data['val']:
        cv2.imwrite(osp.join(folder, '0000.png'), np.zeros((20, 24, 3), np.uint8))
    parse_options(['-opt', tiny_teacher_options(tmp_path, data, 'ok')], root_path=str(tmp_path))  # smaller is fine


# --------------------------------------------------------------------------- our datasets
def _multi_opt(gt, lq, **extra):
    opt = {'name': 'x', 'type': 'MultiDegradationDataset', 'phase': 'train', 'gt_size': 16,
           'sources': [{'name': 'haze', 'dataroot_gt': gt, 'dataroot_lq': lq}], 'io_backend': {'type': 'disk'}}
    opt.update(extra)
    return opt


def test_multi_dataset_fails_at_construction_naming_the_truncated_file(tmp_path):
    gt, lq = write_pairs(str(tmp_path / 'haze'), 3, seed=3)
    _truncate(osp.join(lq, '0001.png'), keep=0.7)
    with pytest.raises(ValueError, match=r"sources\[0\] \('haze'\) .*lq/0001\.png is truncated"):
        MultiDegradationDataset(_multi_opt(gt, lq))
    ds = MultiDegradationDataset(_multi_opt(gt, lq, check_images=False))  # the header check can be turned off;
    with pytest.raises(ValueError, match=r'lq image .*lq/0001\.png is missing, empty, truncated'):
        ds[1]  # then the file is named when drawn


@pytest.mark.parametrize('kind', ['gray', 'rgba', 'uint16', 'gray16'])
def test_grayscale_rgba_and_16_bit_become_3_channel_float(tmp_path, kind):
    gt, lq = write_pairs(str(tmp_path / 'haze'), 1, seed=4, size=20)
    rng = np.random.default_rng(5)
    if kind == 'gray':
        img = rng.integers(0, 256, (20, 20), dtype=np.uint8)
        expected = np.repeat(img[:, :, None] / 255., 3, axis=2)
    elif kind == 'rgba':
        img = rng.integers(0, 256, (20, 20, 4), dtype=np.uint8)
        expected = img[:, :, 2::-1] / 255.  # BGR(A) on disk -> RGB, alpha dropped
    elif kind == 'uint16':
        img = rng.integers(0, 65536, (20, 20, 3), dtype=np.uint16)
        expected = img[:, :, ::-1] / 65535.
    else:
        img = rng.integers(0, 65536, (20, 20), dtype=np.uint16)
        expected = np.repeat(img[:, :, None] / 65535., 3, axis=2)
    cv2.imwrite(osp.join(lq, '0000.png'), img)
    ds = MultiDegradationDataset(_multi_opt(gt, lq, phase='val'))
    out = ds[0]['lq']
    assert out.dtype == torch.float32 and tuple(out.shape) == (3, 20, 20)
    np.testing.assert_allclose(out.permute(1, 2, 0).numpy(), expected, atol=1e-6)  # 16 bits kept, not cut to 8


def test_image_size_reads_headers(tmp_path):
    cv2.imwrite(str(tmp_path / 'a.png'), np.zeros((7, 11), np.uint8))
    cv2.imwrite(str(tmp_path / 'b.jpg'), np.random.default_rng(0).integers(0, 256, (50, 30, 3), dtype=np.uint8))
    assert image_size(str(tmp_path / 'a.png')) == (7, 11) and image_size(str(tmp_path / 'b.jpg')) == (50, 30)
    _truncate(str(tmp_path / 'b.jpg'), keep=0.9)
    with pytest.raises(DataCheckError, match=r'b\.jpg is truncated \(its JPEG end marker is missing\)'):
        image_size(str(tmp_path / 'b.jpg'))


# --------------------------------------------------------------------------- LMDB
def test_corrupt_and_truncated_lmdb_name_the_lmdb_and_key(tmp_path, paired_lmdb):
    gt_lmdb, lq_lmdb = paired_lmdb['train']
    opt = {'dataroot_gt': gt_lmdb, 'dataroot_lq': lq_lmdb, 'io_backend': {'type': 'lmdb'}, 'gt_size': 32}
    check_dataset_files(opt, train=True)  # the intact pair passes

    corrupt = str(tmp_path / 'corrupt.lmdb')
    shutil.copytree(lq_lmdb, corrupt)
    with open(osp.join(corrupt, 'data.mdb'), 'r+b') as f:
        f.write(b'\0' * 8192)  # both meta pages
    with pytest.raises(DataCheckError, match=f'dataroot_lq: {corrupt} is not a readable LMDB'):
        check_dataset_files(dict(opt, dataroot_lq=corrupt), train=True)

    truncated = str(tmp_path / 'truncated.lmdb')
    shutil.copytree(lq_lmdb, truncated)
    size = osp.getsize(osp.join(truncated, 'data.mdb'))
    with open(osp.join(truncated, 'data.mdb'), 'r+b') as f:
        f.truncate(size // 2)
    with pytest.raises(DataCheckError, match=f'LMDB {truncated} is truncated: data.mdb has {size // 2} bytes'):
        check_dataset_files(dict(opt, dataroot_lq=truncated), train=True)

    extra = str(tmp_path / 'extra.lmdb')
    shutil.copytree(lq_lmdb, extra)
    with open(osp.join(extra, 'meta_info.txt'), 'a') as f:
        f.write('9999.png (40,40,3) 1\n')
    with pytest.raises(DataCheckError, match=f"key '9999' listed in {extra}/meta_info.txt is missing from LMDB"):
        check_dataset_files(dict(opt, dataroot_lq=extra), train=True)

    # the same through an option file and through our dataset's construction
    data = {'train': (gt_lmdb, corrupt), 'val': paired_lmdb['val']}
    opt_path = tiny_teacher_options(tmp_path, data, 'lmdb_bad', lmdb=True)
    with pytest.raises(OptionsError, match=f'datasets:train: dataroot_lq: {corrupt} is not a readable LMDB'):
        parse_options(['-opt', opt_path], root_path=str(tmp_path))
    multi = {'name': 'x', 'phase': 'train', 'gt_size': 16, 'io_backend': {'type': 'lmdb'},
             'sources': [{'name': 'haze', 'dataroot_gt': gt_lmdb, 'dataroot_lq': truncated}]}
    with pytest.raises(ValueError, match=f"sources\\[0\\] \\('haze'\\) dataroot_lq: LMDB {truncated} is truncated"):
        MultiDegradationDataset(multi)


def test_lmdb_sizes_from_meta_info_checked_against_the_patch(paired_lmdb):
    gt_lmdb, lq_lmdb = paired_lmdb['train']
    opt = {'dataroot_gt': gt_lmdb, 'dataroot_lq': lq_lmdb, 'io_backend': {'type': 'lmdb'}, 'gt_size': 48}
    with pytest.raises(DataCheckError, match=r'gt image .*0000\.png is 40x40 \(HxW\), smaller than the training patch'):
        check_dataset_files(opt, train=True)
