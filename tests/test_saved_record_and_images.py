"""What the models write: checkpoints carry their record; validation images are written atomically."""
import errno
import os

import numpy as np
import pytest
import torch

from uniremoval.models.model_mixins import SafeCheckpointMixin
from uniremoval.utils import atomic_io
from uniremoval.utils.checkpoint_record import RECORD_KEY, read_record


class SavingModel(SafeCheckpointMixin):
    def __init__(self, opt):
        self.opt = opt

    def get_bare_model(self, net):
        return net


def test_saved_generator_checkpoint_carries_its_record(tmp_path):
    opt = {'network_g': {'type': 'MPRNet', 'n_feat': 8}, 'pixel_range': [-1, 1], 'path': {'models': str(tmp_path)},
           'datasets': {'train': {'sources': [{'name': 'rain'}, {'name': 'haze'}]}}}
    net = torch.nn.Conv2d(3, 3, 1)
    SavingModel(opt).save_network(net, 'net_g', 5)
    SavingModel(opt).save_network(net, 'net_d', 5)
    ckpt = torch.load(tmp_path / 'net_g_5.pth', weights_only=True)
    record = read_record(ckpt)
    assert record['network_g'] == {'type': 'MPRNet', 'n_feat': 8}
    assert record['pixel_range'] == [-1.0, 1.0] and record['degradation_types'] == ['rain', 'haze']
    assert torch.equal(ckpt['params']['weight'], net.weight)
    assert RECORD_KEY not in torch.load(tmp_path / 'net_d_5.pth', weights_only=True)  # only the generator's


def test_validation_image_write_leaves_no_truncated_png_on_a_full_disk(tmp_path, monkeypatch):
    path = tmp_path / 'val' / 'img_100.png'
    img = np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    atomic_io.atomic_imwrite(img, str(path))
    before = path.read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, 'No space left on device')

    monkeypatch.setattr(os, 'fsync', full)
    with pytest.raises(OSError, match='previous file is unchanged'):
        atomic_io.atomic_imwrite(img[::-1].copy(), str(path))
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ['img_100.png']  # no temporary file left
