"""Checkpoints that describe themselves (issue [13] item 3): the record of uniremoval.utils.checkpoint_record,
read by uniremoval-restore without an option file, conflicts named, BasicSR's loader unaffected."""
import logging
import types

import cv2
import numpy as np
import pytest
import torch
import yaml

import uniremoval  # noqa: F401  (compat shim + registration)
from basicsr.archs import build_network
from basicsr.models.base_model import BaseModel
from uniremoval.commands.restore import main
from uniremoval.restoration import resolve_network_settings
from uniremoval.utils.checkpoint_record import RECORD_KEY, RecordConflict, make_record, merge_setting, read_record

TINY_MPRNET = {'type': 'MPRNet', 'n_feat': 8, 'scale_unetfeats': 4, 'scale_orsnetfeats': 4, 'num_cab': 2}
OPT = {'name': 'tiny', 'network_g': dict(TINY_MPRNET), 'pixel_range': [-1, 1],
       'datasets': {'train': {'sources': [{'name': 'haze'}, {'name': 'rain'}]}}}


@pytest.fixture(scope='module')
def recorded(tmp_path_factory):
    """(checkpoint with a record, option file saying the same, the state dict)."""
    root = tmp_path_factory.mktemp('record')
    torch.manual_seed(0)
    state = build_network(dict(TINY_MPRNET)).state_dict()
    ckpt = str(root / 'net_g.pth')
    torch.save({'params_ema': state, RECORD_KEY: make_record(OPT)}, ckpt)
    opt = str(root / 'tiny.yml')
    with open(opt, 'w') as f:
        yaml.safe_dump(OPT, f)
    return ckpt, opt, state


def test_record_is_plain_and_read_back_with_weights_only(recorded):
    ckpt, _, _ = recorded
    record = read_record(torch.load(ckpt, weights_only=True))
    assert record == {'version': 1, 'network_g': TINY_MPRNET, 'pixel_range': [-1.0, 1.0],
                      'degradation_types': ['haze', 'rain']}
    assert read_record({'params': {}}) is None


def test_basicsr_load_network_ignores_the_record(recorded):
    ckpt, _, state = recorded
    net = build_network(dict(TINY_MPRNET))
    for p in net.parameters():
        p.data.zero_()
    fake = types.SimpleNamespace(get_bare_model=lambda n: n, _print_different_keys_loading=lambda *a, **k: None)
    BaseModel.load_network(fake, net, ckpt, strict=True, param_key='params_ema')
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())


def test_merge_rule_names_both_values():
    assert merge_setting('pixel_range', (0.0, 1.0)) == (0.0, 1.0)
    assert merge_setting('pixel_range', None, (0.0, 1.0), (-1.0, 1.0)) == (-1.0, 1.0)
    assert merge_setting('pixel_range', [-1.0, 1.0], (-1, 1)) == [-1.0, 1.0]
    with pytest.raises(RecordConflict, match=r'flag gives \(0.0, 1.0\).*trained with \[-1.0, 1.0\]'):
        merge_setting('pixel_range', [-1.0, 1.0], None, (0.0, 1.0))


def test_restore_without_option_file_gives_the_same_pixels(recorded, tmp_path):
    """Known answer: the record alone reproduces restore with the option file (pixel range -1,1 included)."""
    ckpt, opt, _ = recorded
    src = tmp_path / 'in.png'
    rng = np.random.default_rng(0)
    assert cv2.imwrite(str(src), rng.integers(0, 256, (24, 30, 3), dtype=np.uint8))
    assert main(['-i', str(src), '-o', str(tmp_path / 'a'), '-w', ckpt, '--opt', opt, '-q']) == 0
    assert main(['-i', str(src), '-o', str(tmp_path / 'b'), '-w', ckpt, '-q']) == 0
    a, b = cv2.imread(str(tmp_path / 'a' / 'in.png')), cv2.imread(str(tmp_path / 'b' / 'in.png'))
    assert a is not None and np.array_equal(a, b)
    assert main(['-i', str(src), '-o', str(tmp_path / 'c'), '-w', ckpt, '--opt', opt, '-q',
                 '--pixel-range=-1,1']) == 0


def test_a_contradicting_flag_or_option_file_is_an_error(recorded, tmp_path, capsys):
    ckpt, _, _ = recorded
    src = tmp_path / 'in.png'
    assert cv2.imwrite(str(src), np.full((24, 30, 3), 9, np.uint8))
    assert main(['-i', str(src), '-o', str(tmp_path / 'a'), '-w', ckpt, '-q', '--pixel-range', '0,1']) == 2
    err = capsys.readouterr().err
    assert 'flag gives (0.0, 1.0)' in err and 'trained with (-1.0, 1.0)' in err and 'net_g.pth' in err, err
    wrong = str(tmp_path / 'wrong.yml')
    with open(wrong, 'w') as f:
        yaml.safe_dump(dict(OPT, network_g=dict(TINY_MPRNET, n_feat=16)), f)
    assert main(['-i', str(src), '-o', str(tmp_path / 'b'), '-w', ckpt, '--opt', wrong, '-q']) == 2
    err = capsys.readouterr().err
    assert "'n_feat': 16" in err and "'n_feat': 8" in err and 'wrong.yml' in err, err


def test_an_official_checkpoint_under_minus_one_one_gets_a_warning(tmp_path, caplog):
    torch.manual_seed(0)
    ckpt = str(tmp_path / 'official.pth')
    torch.save({'state_dict': build_network(dict(TINY_MPRNET)).state_dict()}, ckpt)
    with caplog.at_level(logging.WARNING, logger='uniremoval.restoration'):
        _, range_, _, _ = resolve_network_settings(weights=ckpt, pixel_range='-1,1')
    assert range_ == (-1.0, 1.0)
    assert any('official' in r.getMessage() and '[0, 1]' in r.getMessage() for r in caplog.records)
