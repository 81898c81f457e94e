"""Option files are checked before anything is built: missing keys, wrong types, unregistered types,
missing data, a cosine schedule shorter than total_iter. Each error names the file, the key path and
what was expected; ``basicsr train`` prints it and exits 2 without a traceback."""
import glob
import os
from os import path as osp

import pytest
import yaml

from uniremoval.commands.basicsr_cli import main as cli_main
from uniremoval.options import OptionsError, check_options, load_option_file, parse_options
from conftest import REPO, run_cli, tiny_teacher_options


@pytest.fixture
def tiny(tmp_path, paired_folders):
    return tiny_teacher_options(tmp_path, paired_folders, 'checks')


def _edit(path, change):
    opt = load_option_file(path)
    change(opt)
    with open(path, 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    return path


def _error(tmp_path, opt_path, *force):
    args = ['-opt', opt_path] + (['--force_yml', *force] if force else [])
    with pytest.raises(OptionsError) as info:
        parse_options(args, root_path=str(tmp_path), is_train=True)
    msg = str(info.value)
    assert opt_path in msg, msg  # every message names the option file
    return msg


def test_valid_file_passes(tmp_path, tiny):
    opt, _ = parse_options(['-opt', tiny], root_path=str(tmp_path), is_train=True)
    assert opt['network_g']['n_feat'] == 8


@pytest.mark.parametrize('drop, keys', [
    (lambda o: o.pop('network_g'), 'network_g: required option is missing'),
    (lambda o: o['datasets']['train'].pop('type'), 'datasets:train:type: required option is missing'),
    (lambda o: o['train'].pop('total_iter'), 'train:total_iter: required option is missing (expected an integer)'),
    (lambda o: o['train']['optim_g'].pop('lr'), 'train:optim_g:lr: required option is missing'),
    (lambda o: o['datasets'].pop('train'), 'datasets:train: required option is missing'),
])
def test_missing_required_key(tmp_path, tiny, drop, keys):
    assert keys in _error(tmp_path, _edit(tiny, drop))


@pytest.mark.parametrize('force, expected', [
    ('network_g:n_feat=eight', "network_g:n_feat: expected a number (the default of MPRNet.n_feat is 40), got 'eight'"),
    ('train:optim_g:lr=fast', "train:optim_g:lr: expected a number, got 'fast' (str)"),
    ('train:total_iter=abc', "train:total_iter: expected an integer, got 'abc' (str)"),
    ('train:total_iter=2.5', 'train:total_iter: expected an integer, got 2.5'),
    ('datasets:train:batch_size_per_gpu=0', 'datasets:train:batch_size_per_gpu: expected a positive integer, got 0'),
    ('datasets:train:gt_size=big', "datasets:train:gt_size: expected an integer, got 'big'"),
    ('train:optim_g:betas=0.9', 'train:optim_g:betas: expected a list of numbers, got 0.9'),
    ('train:scheduler:periods=[ten]', "train:scheduler:periods: expected a list of integers, got ['ten']"),
    ('train:pixel_opt:eps=tiny', "train:pixel_opt:eps: expected a number (the default of CharbonnierLoss.eps"),
    ('train:edge_opt:loss_weight=heavy', 'train:edge_opt:loss_weight: expected a number'),
    ('val:val_freq=often', "val:val_freq: expected an integer, got 'often'"),
    ('logger:print_freq=-1', 'logger:print_freq: expected a positive integer, got -1'),
])
def test_wrong_type_through_force_yml(tmp_path, tiny, force, expected):
    assert expected in _error(tmp_path, tiny, force)


def test_unknown_constructor_argument_and_missing_required_argument(tmp_path, tiny):
    msg = _error(tmp_path, _edit(tiny, lambda o: o['network_g'].update(n_feats=8)))
    assert "network_g:n_feats: MPRNet takes no argument 'n_feats'; it takes: in_c, out_c, n_feat," in msg
    msg = _error(tmp_path, _edit(tiny, lambda o: (o['network_g'].pop('n_feats'),
                                                  o['train']['scheduler'].pop('periods'))))
    assert 'train:scheduler: CosineAnnealingRestartLR needs the argument(s) periods' in msg


@pytest.mark.parametrize('force, what, listed', [
    ('network_g:type=MPRNett', "network_g:type: unknown network type 'MPRNett'; registered network types:", 'MPRNet'),
    ('train:pixel_opt:type=L3Loss', "train:pixel_opt:type: unknown loss type 'L3Loss'; registered loss types:",
     'CharbonnierLoss'),
    ('datasets:train:type=PairedDataset', "datasets:train:type: unknown dataset type 'PairedDataset'; registered",
     'PairedImageDataset'),
    ('model_type=MPRNetModle', "model_type: unknown model type 'MPRNetModle'; registered model types:", 'MPRNetModel'),
    ('val:metrics:psnr:type=psnr', "val:metrics:psnr:type: unknown metric type 'psnr'", 'calculate_psnr'),
    ('train:optim_g:type=Adamm', "train:optim_g:type: unknown optimizer 'Adamm'", 'Adam'),
    ('train:scheduler:type=Cosine', "train:scheduler:type: unknown scheduler 'Cosine'", 'CosineAnnealingRestartLR'),
])
def test_unknown_types_list_what_is_registered(tmp_path, tiny, force, what, listed):
    msg = _error(tmp_path, tiny, force)
    assert what in msg and listed in msg.split(what)[1]


def test_missing_and_empty_data_paths(tmp_path, tiny):
    missing = str(tmp_path / 'no_such_folder')
    msg = _error(tmp_path, tiny, f'datasets:train:dataroot_gt={missing}')
    assert f'datasets:train: dataroot_gt: folder {missing} does not exist' in msg
    os.makedirs(tmp_path / 'empty')
    msg = _error(tmp_path, tiny, f"datasets:val:dataroot_lq={tmp_path / 'empty'}")
    assert f"datasets:val: dataroot_lq: folder {tmp_path / 'empty'} holds no images" in msg
    msg = _error(tmp_path, _edit(tiny, lambda o: o['datasets']['train'].update(meta_info_file='nope.txt')))
    assert 'meta_info_file nope.txt does not exist' in msg
    msg = _error(tmp_path, _edit(tiny, lambda o: (o['datasets']['train'].pop('meta_info_file'),
                                                  o['path'].update(pretrain_network_g='gone.pth'))))
    assert 'path:pretrain_network_g: checkpoint file gone.pth does not exist' in msg


def test_lmdb_without_meta_info(tmp_path, paired_lmdb):
    opt_path = tiny_teacher_options(tmp_path, paired_lmdb, 'checks_lmdb', lmdb=True)
    parse_options(['-opt', opt_path], root_path=str(tmp_path))
    bad = tmp_path / 'bad.lmdb'
    os.makedirs(bad)
    (bad / 'data.mdb').write_bytes(b'')
    msg = _error(tmp_path, opt_path, f'datasets:train:dataroot_lq={bad}')
    assert f'dataroot_lq: LMDB {bad} has no meta_info.txt' in msg


def test_cosine_periods_shorter_than_total_iter(tmp_path, tiny):
    # the README's --force_yml train:total_iter=... on a config with periods [20]: BasicSR would fail at iter 21
    msg = _error(tmp_path, tiny, 'train:total_iter=30')
    assert ('train:scheduler:periods: the periods [20] sum to 20, fewer than train:total_iter 30' in msg
            and 'train:scheduler:periods=[30]' in msg)
    parse_options(['-opt', tiny, '--force_yml', 'train:total_iter=30', 'train:scheduler:periods=[30]'],
                  root_path=str(tmp_path))
    msg = _error(tmp_path, tiny, 'train:scheduler:restart_weights=[1, 1]')
    assert 'train:scheduler:restart_weights: must have one weight per period' in msg


def test_every_shipped_training_file_passes_the_structure_checks():
    files = [f for f in glob.glob(osp.join(REPO, 'options', '**', '*.yml'), recursive=True)
             if 'train' in load_option_file(f) and 'model_type' in load_option_file(f)]
    assert len(files) >= 10
    for path in files:
        opt = load_option_file(path)
        from basicsr.utils.registry import ARCH_REGISTRY
        if not all(n in dict(iter(ARCH_REGISTRY)) for n in (opt['network_g']['type'],)):
            continue  # an architecture still being added by a parallel change
        check_options(opt, path, is_train=True, check_paths=False)


def test_cli_prints_the_error_and_exits_2(tmp_path, tiny, capsys):
    assert cli_main(['train', '-opt', tiny, '--force_yml', 'train:optim_g:lr=fast']) == 2
    err = capsys.readouterr().err
    assert err.startswith('basicsr train: error: Option file') and 'train:optim_g:lr' in err
    proc = run_cli(['train', '-opt', tiny, '--force_yml', 'network_g:n_feat=eight'], cwd=tmp_path)
    assert proc.returncode == 2
    assert 'network_g:n_feat: expected a number' in proc.stderr and 'Traceback' not in proc.stderr
    assert not (tmp_path / 'experiments').exists()  # nothing was built or written
