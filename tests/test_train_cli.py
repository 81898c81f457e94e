"""End to end: ``basicsr train`` / ``basicsr test`` on CPU, folder and LMDB data, checkpoints and resume."""
import os
from os import path as osp

import pytest
import torch
import yaml

from uniremoval.test import test_pipeline as run_test_pipeline
from uniremoval.train import find_latest_state, train_pipeline
from conftest import run_cli, tiny_teacher_options


def _test_options(tmp_path, train_opt_path, checkpoint, name):
    """A ``basicsr test`` option file evaluating ``checkpoint`` on the train config's val set."""
    with open(train_opt_path) as f:
        opt = yaml.safe_load(f)
    test_opt = {
        'name': name, 'model_type': opt['model_type'], 'scale': 1, 'num_gpu': 0, 'manual_seed': 0,
        'datasets': {'test_1': opt['datasets']['val']}, 'network_g': opt['network_g'],
        'path': {'pretrain_network_g': checkpoint, 'param_key_g': 'params', 'strict_load_g': True},
        'val': {'save_img': True, 'metrics': opt['val']['metrics']},
    }
    path = osp.join(str(tmp_path), f'{name}.yml')
    with open(path, 'w') as f:
        yaml.safe_dump(test_opt, f, sort_keys=False)
    return path


def test_cli_train_folder_then_test_reproduces_psnr(tmp_path, paired_folders):
    opt_path = tiny_teacher_options(tmp_path, paired_folders, 'cli_folder', total_iter=4)
    proc = run_cli(['train', '-opt', opt_path, '--force_yml', 'logger:save_checkpoint_freq=2', 'val:val_freq=4'],
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    exp = tmp_path / 'experiments' / 'cli_folder'
    assert sorted(os.listdir(exp / 'models')) == ['net_g_2.pth', 'net_g_4.pth', 'net_g_latest.pth']
    assert sorted(os.listdir(exp / 'training_states')) == ['2.state', '4.state']
    latest = torch.load(exp / 'models' / 'net_g_latest.pth', weights_only=True)['params']
    at_4 = torch.load(exp / 'models' / 'net_g_4.pth', weights_only=True)['params']
    assert all(torch.equal(latest[k], at_4[k]) for k in latest)

    # basicsr test on the final checkpoint reproduces the final validation PSNR printed by training
    log = (proc.stdout + proc.stderr).splitlines()
    val_psnr = [float(line.split('# psnr:')[1].split()[0]) for line in log if '# psnr:' in line]
    assert len(val_psnr) == 1  # at iter 4 = the end of training (not repeated)
    test_opt = _test_options(tmp_path, opt_path, str(exp / 'models' / 'net_g_latest.pth'), 'cli_test')
    proc = run_cli(['test', '-opt', test_opt], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    test_psnr = [float(line.split('# psnr:')[1].split()[0]) for line in (proc.stdout + proc.stderr).splitlines()
                 if '# psnr:' in line]
    assert test_psnr == pytest.approx([val_psnr[-1]], abs=1e-4)
    assert len(os.listdir(tmp_path / 'results' / 'cli_test' / 'visualization' / 'demo_val')) == 2


def test_train_lmdb_and_test_pipeline_in_process(tmp_path, paired_lmdb):
    opt_path = tiny_teacher_options(tmp_path, paired_lmdb, 'lmdb_run', lmdb=True, total_iter=3)
    model = train_pipeline(['-opt', opt_path, '--force_yml', 'logger:save_checkpoint_freq=3'], root_path=str(tmp_path))
    ckpt = tmp_path / 'experiments' / 'lmdb_run' / 'models' / 'net_g_3.pth'
    assert ckpt.is_file()
    final_psnr = model.metric_results['psnr']
    assert 5 < final_psnr < 60

    test_opt = _test_options(tmp_path, opt_path, str(ckpt), 'lmdb_test')
    results = run_test_pipeline(['-opt', test_opt], root_path=str(tmp_path))
    assert results['demo_val']['psnr'] == pytest.approx(final_psnr, abs=1e-6)
    assert results['demo_val']['ssim'] == pytest.approx(model.metric_results['ssim'], abs=1e-6)


def test_auto_resume_continues_from_latest_state(tmp_path, paired_folders):
    opt_path = tiny_teacher_options(tmp_path, paired_folders, 'resume_run', total_iter=4)
    first = run_cli(['train', '-opt', opt_path, '--force_yml', 'logger:save_checkpoint_freq=2'], cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    states = tmp_path / 'experiments' / 'resume_run' / 'training_states'
    # a save interrupted by a kill leaves only a hidden temporary file: it must be ignored
    (states / '.6.state.abc.tmp').write_bytes(b'truncated')
    assert find_latest_state(str(states)) == str(states / '4.state')

    second = run_cli(['train', '-opt', opt_path, '--auto_resume', '--force_yml', 'train:total_iter=6',
                      'logger:save_checkpoint_freq=2'], cwd=tmp_path)
    out = second.stdout + second.stderr
    assert second.returncode == 0, out[-3000:]
    assert 'Resuming training from epoch' in out and 'iter: 4.' in out
    assert 'Set pretrain_network_g to' in out
    assert (states / '6.state').is_file()
    # resumed in place: the first run's checkpoints are still there, nothing was archived
    models = os.listdir(tmp_path / 'experiments' / 'resume_run' / 'models')
    assert {'net_g_2.pth', 'net_g_4.pth', 'net_g_6.pth'} <= set(models)
    assert not [d for d in os.listdir(tmp_path / 'experiments') if 'archived' in d]
    state = torch.load(states / '6.state', weights_only=True)
    assert state['iter'] == 6
    adam_steps = {int(s['step']) for s in state['optimizers'][0]['state'].values()}
    assert adam_steps == {6}  # 4 restored steps + 2 new ones
