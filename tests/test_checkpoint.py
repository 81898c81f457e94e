"""Checkpoints: atomic saving and state-dict loading (weights_only)."""
import os

import numpy as np
import pytest
import torch

import uniremoval  # noqa: F401  (compat shim + registration before BasicSR is used)
from uniremoval.utils.checkpoint import atomic_torch_save, load_state_dict_file


def test_atomic_save_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / 'net.pth'
    atomic_torch_save({'params': {'w': torch.ones(2)}}, str(path))
    with pytest.raises(Exception):
        atomic_torch_save({'params': {'w': lambda: None}}, str(path))  # unpicklable
    assert os.listdir(tmp_path) == ['net.pth']
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    assert torch.equal(load_state_dict_file(str(path))['w'], torch.ones(2))


def test_load_state_dict_file_formats_and_refusals(tmp_path):
    sd = {'a.weight': torch.arange(3.)}
    torch.save({'state_dict': {'module.a.weight': sd['a.weight']}}, tmp_path / 'official.pth')
    torch.save({'params': sd, 'params_ema': {'a.weight': sd['a.weight'] + 1}}, tmp_path / 'basicsr.pth')
    torch.save({'params': sd}, tmp_path / 'no_ema.pth')
    assert torch.equal(load_state_dict_file(str(tmp_path / 'official.pth'))['a.weight'], sd['a.weight'])
    assert torch.equal(load_state_dict_file(str(tmp_path / 'basicsr.pth'), 'params_ema')['a.weight'],
                       sd['a.weight'] + 1)
    assert torch.equal(load_state_dict_file(str(tmp_path / 'no_ema.pth'), 'params_ema')['a.weight'], sd['a.weight'])
    torch.save({'params': sd, 'obj': np.dtype('float32').type}, tmp_path / 'pickled.pth')
    with pytest.raises(RuntimeError, match='pickled.pth'):  # weights_only refuses python objects
        load_state_dict_file(str(tmp_path / 'pickled.pth'))
    with pytest.raises(FileNotFoundError, match='nothing.pth'):
        load_state_dict_file(str(tmp_path / 'nothing.pth'))
