"""The demo-checkpoint command (uniremoval.demo.pretrain) on a tiny demo data set: checkpoints and manifest."""
import json

import pytest
import torch
import yaml

import uniremoval  # noqa: F401  (compat shim + registration)
from uniremoval.demo import pretrain, shipped
from uniremoval.demo.data import build_demo_data

TINY_DATA = dict(n_train=3, n_val=1, n_real=1, n_clear=2, train_size=48, val_size=48, real_size=48, progress=False)
TINY_RUN = {'iters': 2, 'patch': 32, 'batch': 2}


@pytest.fixture(scope='module')
def demo_data(tmp_path_factory):
    root = tmp_path_factory.mktemp('demo_data')
    build_demo_data(str(root / 'data'), seed=1, **TINY_DATA)
    return str(root / 'data')


def test_pretrain_publishes_checkpoints_and_manifest(demo_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the command runs from the repository root; here tmp_path stands for it
    folder = str(tmp_path / 'checkpoints')
    with pytest.raises(FileNotFoundError, match='teacher'):  # kt distils the shipped teachers
        pretrain.pretrain(['kt'], demo_data, str(tmp_path / 'work'), folder, TINY_RUN)
    pretrain.pretrain(['haze', 'rain', 'blur', 'kt'], demo_data, str(tmp_path / 'work'), folder, TINY_RUN)
    assert set(shipped.shipped_checkpoints(folder)) == set(shipped.STAGES)
    manifest = json.loads((tmp_path / 'checkpoints' / 'manifest.json').read_text())
    assert manifest['haze']['iterations'] == 2 and manifest['haze']['lr'] == pretrain.STAGE_SETTINGS['haze']['lr']
    assert set(manifest['kt']['val_psnr']) == {'haze', 'rain', 'blur'}
    assert list(manifest['rain']['val_psnr']) == ['rain']
    # the published weights are the run's final weights, under 'params' only
    run = torch.load(tmp_path / 'work' / 'experiments' / 'pretrain_teacher_rain' / 'models' / 'net_g_latest.pth',
                     weights_only=True)['params']
    published = torch.load(shipped.checkpoint_file('rain', folder), weights_only=True)
    assert list(published) == ['params'] and all(torch.equal(run[k], v) for k, v in published['params'].items())
    # the published option file: paths under the working directory relative to it, others left absolute
    opt = yaml.safe_load((tmp_path / 'checkpoints' / 'pretrain_kt_student.yml').read_text())
    expected = [f'checkpoints/teacher_{k}.pth' for k in ('haze', 'rain', 'blur')]
    assert [t['pretrain_path'] for t in opt['teachers']] == expected
    assert opt['datasets']['train']['sources'][0]['dataroot_gt'] == f'{demo_data}/train/haze/gt'
    # resume: start from the published weights (Adam moves each by at most about lr per step, so lr 1e-12 keeps
    # them; random weights would differ by ~0.1), keep the earlier run's record and option file
    before = torch.load(shipped.checkpoint_file('rain', folder), weights_only=True)['params']
    pretrain.pretrain(['rain'], demo_data, str(tmp_path / 'work'), folder, {**TINY_RUN, 'lr': 1e-12}, resume=True)
    after = torch.load(shipped.checkpoint_file('rain', folder), weights_only=True)['params']
    assert max((before[k] - v).abs().max().item() for k, v in after.items()) < 1e-9
    resumed = json.loads((tmp_path / 'checkpoints' / 'manifest.json').read_text())['rain']
    assert resumed['continued_from'] == manifest['rain'] and resumed['lr'] == 1e-12
    assert resumed['option_file'] == 'pretrain_teacher_rain_run2.yml'
    assert [run['option_file'] for run in shipped.training_runs(resumed)] == [
        'pretrain_teacher_rain.yml', 'pretrain_teacher_rain_run2.yml']
    run2 = yaml.safe_load((tmp_path / 'checkpoints' / 'pretrain_teacher_rain_run2.yml').read_text())
    assert run2['path']['pretrain_network_g'] == 'checkpoints/teacher_rain.pth'
    (tmp_path / 'checkpoints' / 'teacher_haze.pth').unlink()
    with pytest.raises(FileNotFoundError, match='teacher_haze.pth'):
        pretrain.pretrain(['haze'], demo_data, str(tmp_path / 'work'), folder, TINY_RUN, resume=True)
    with pytest.raises(ValueError, match='snow'):
        pretrain.pretrain(['snow'], demo_data, str(tmp_path / 'work'), folder, TINY_RUN)
