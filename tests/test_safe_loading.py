"""Safe loading and saving: a checkpoint whose pickle would run code is refused by every command (training,
``basicsr test``, ``uniremoval-restore``, ``uniremoval.evaluate``), YAML python tags are refused, output
names derived from input files stay in the output folder, and a disk that fills while saving leaves
the previous checkpoint intact."""
import builtins
import errno
import io
import os
from os import path as osp

import pytest
import torch
import yaml

from basicsr.archs import build_network
from uniremoval import evaluation
from uniremoval.commands import evaluate, restore
from uniremoval.commands.basicsr_cli import main as cli_main
from uniremoval.options import OptionsError, apply_force_yml, load_option_file
from uniremoval.utils import atomic_io
from uniremoval.utils.checkpoint import atomic_torch_save
from conftest import TINY_TEACHER_OPT, tiny_teacher_options


class _RunsCode:
    """Unpickling this calls ``open(marker, 'w')``: a stand-in for any code a malicious pickle could run."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (builtins.open, (self.marker, 'w'))


@pytest.fixture
def evil(tmp_path):
    """(checkpoint path, marker path): a checkpoint that would create the marker file when unpickled."""
    marker = str(tmp_path / 'MARKER_code_ran')
    net = build_network(dict(load_option_file(TINY_TEACHER_OPT)['network_g']))
    state = dict(net.state_dict())
    state['payload'] = _RunsCode(marker)
    path = str(tmp_path / 'evil.pth')
    torch.save({'params': state, 'params_ema': state}, path)
    return path, marker


def test_the_payload_is_real(evil):
    path, marker = evil
    torch.load(path, weights_only=False)  # what an unsafe loader does
    assert osp.exists(marker)


def _refused(err, path, marker):
    assert not osp.exists(marker), 'the pickle ran code'
    assert 'Cannot read checkpoint' in err and path in err and 'Traceback' not in err


def test_training_refuses_it_as_pretrain_network_g(tmp_path, paired_folders, evil, monkeypatch, capsys):
    path, marker = evil
    opt_path = tiny_teacher_options(tmp_path, paired_folders, 'evil_train')
    monkeypatch.chdir(tmp_path)
    assert cli_main(['train', '-opt', opt_path, '--force_yml', f'path:pretrain_network_g={path}']) == 2
    _refused(capsys.readouterr().err, path, marker)


def test_basicsr_test_refuses_it(tmp_path, paired_folders, evil, monkeypatch, capsys):
    path, marker = evil
    train = load_option_file(TINY_TEACHER_OPT)
    opt = {'name': 'evil_test', 'model_type': 'MPRNetModel', 'num_gpu': 0, 'manual_seed': 0,
           'datasets': {'test_1': dict(train['datasets']['val'], dataroot_gt=paired_folders['val'][0],
                                       dataroot_lq=paired_folders['val'][1])},
           'network_g': train['network_g'], 'path': {'pretrain_network_g': path, 'strict_load_g': True}}
    opt_path = str(tmp_path / 'test.yml')
    with open(opt_path, 'w') as f:
        yaml.safe_dump(opt, f)
    monkeypatch.chdir(tmp_path)
    assert cli_main(['test', '-opt', opt_path]) == 2
    _refused(capsys.readouterr().err, path, marker)


def test_restore_refuses_it(tmp_path, paired_folders, evil, capsys):
    path, marker = evil
    image = osp.join(paired_folders['val'][1], '0000.png')
    rc = restore.main(['-i', image, '-o', str(tmp_path / 'out'), '-w', path, '--opt', TINY_TEACHER_OPT, '-q'])
    assert rc == 2
    err = capsys.readouterr().err
    assert not osp.exists(marker) and path in err and 'Traceback' not in err
    assert not osp.exists(tmp_path / 'out' / '0000.png')


def test_evaluate_refuses_it(tmp_path, paired_folders, evil, capsys, monkeypatch):
    path, marker = evil
    opt = {'name': 'evil_eval', 'num_gpu': 0, 'network_g': load_option_file(TINY_TEACHER_OPT)['network_g'],
           'checkpoints': [{'name': 'evil', 'path': path, 'param_key': 'params'}],
           'datasets': {'haze': {'name': 'val', 'type': 'PairedImageDataset', 'io_backend': {'type': 'disk'},
                                 'dataroot_gt': paired_folders['val'][0], 'dataroot_lq': paired_folders['val'][1]}},
           'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 0}}}
    opt_path = str(tmp_path / 'eval.yml')
    with open(opt_path, 'w') as f:
        yaml.safe_dump(opt, f)
    monkeypatch.chdir(tmp_path)  # results/<name>/ in the test's folder
    assert evaluate.main(['-opt', opt_path]) == 2
    _refused(capsys.readouterr().err, path, marker)


def test_yaml_python_tags_are_refused(tmp_path):
    marker = str(tmp_path / 'MARKER_yaml')
    evil = tmp_path / 'evil.yml'
    evil.write_text(f'name: !!python/object/apply:builtins.open ["{marker}", "w"]\nmodel_type: x\n')
    with pytest.raises(OptionsError, match='evil.yml is not valid \\(safe\\) YAML'):
        load_option_file(str(evil))
    with pytest.raises(OptionsError, match='is not a YAML scalar or list'):
        apply_force_yml({'name': 'a'}, [f'name=!!python/object/apply:builtins.open ["{marker}", "w"]'])
    assert not osp.exists(marker)
    with pytest.raises(yaml.constructor.ConstructorError):
        yaml.safe_load('x: !!python/name:os.system')  # the loader is a SafeLoader


@pytest.mark.parametrize('name', ['../x.png', '../../x.png', '/tmp/x.png', '..\\..\\x.png', 'a/../../x', '..',
                                  '.hidden.png'])
def test_evaluate_output_names_stay_in_the_folder(tmp_path, name):
    save_dir = str(tmp_path / 'out' / 'col' / 'row')
    out = evaluation.output_path(save_dir, name)
    assert osp.dirname(out) == save_dir and osp.basename(out).endswith('.png')
    assert not osp.basename(out).startswith('.')


def test_evaluate_writes_restorations_only_inside_the_folder(tmp_path):
    save_dir = str(tmp_path / 'a' / 'b')
    loader = [{'lq': torch.rand(1, 3, 8, 8), 'lq_path': [p]} for p in ('../../escape.png', '/abs/y.png', 'ok.png')]
    evaluation.score_set(loader, {}, None, desc='t', save_dir=save_dir)
    assert sorted(os.listdir(save_dir)) == ['escape.png', 'ok.png', 'y.png']
    assert sorted(os.listdir(tmp_path)) == ['a'] and os.listdir(tmp_path / 'a') == ['b']


# --------------------------------------------------------------------------- a disk that fills while saving
class _FullDisk(io.FileIO):
    """A file that accepts ``limit`` bytes, then fails like a full disk."""

    limit = 1000

    def write(self, data):
        if self.tell() + len(data) > self.limit:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(data)


def test_disk_full_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = str(tmp_path / 'models' / 'net_g_latest.pth')
    old = {'params': {'w': torch.arange(10.)}}
    atomic_torch_save(old, path)
    before = open(path, 'rb').read()

    real_fdopen = os.fdopen
    monkeypatch.setattr(atomic_io.os, 'fdopen', lambda fd, mode='r', **kw: _FullDisk(fd, 'wb', closefd=True)
                        if 'w' in mode else real_fdopen(fd, mode, **kw))
    with pytest.raises(OSError) as info:
        atomic_torch_save({'params': {'w': torch.rand(10000)}}, path)  # ~40 kB: fails midway
    assert info.value.errno == errno.ENOSPC
    assert f'while writing {path}; the previous file is unchanged' in str(info.value)
    assert os.listdir(tmp_path / 'models') == ['net_g_latest.pth']  # the temporary file was removed
    assert open(path, 'rb').read() == before
    assert torch.equal(torch.load(path, weights_only=True)['params']['w'], torch.arange(10.))

    with pytest.raises(OSError, match='nothing was written'):  # a first save that fails leaves nothing
        atomic_torch_save({'params': {'w': torch.rand(10000)}}, str(tmp_path / 'models' / 'net_g_2.pth'))
    assert os.listdir(tmp_path / 'models') == ['net_g_latest.pth']


def test_model_save_on_a_full_disk_keeps_the_previous_state(tmp_path, monkeypatch):
    from basicsr.models import build_model
    from uniremoval.options import parse_options
    opt, _ = parse_options(['-opt', TINY_TEACHER_OPT], root_path=str(tmp_path), check_paths=False)
    for key in ('models', 'training_states'):
        os.makedirs(opt['path'][key])
    model = build_model(opt)
    model.save(0, 2)
    files = {f: open(osp.join(opt['path'][k], f), 'rb').read() for k in ('models', 'training_states')
             for f in os.listdir(opt['path'][k])}
    assert sorted(files) == ['2.state', 'net_g_2.pth']
    real_fdopen = os.fdopen
    monkeypatch.setattr(atomic_io.os, 'fdopen', lambda fd, mode='r', **kw: _FullDisk(fd, 'wb', closefd=True)
                        if 'w' in mode else real_fdopen(fd, mode, **kw))
    with pytest.raises(OSError, match='No space left on device while writing'):
        model.save(0, 2)  # overwrite the same names: both must survive
    monkeypatch.undo()
    for key in ('models', 'training_states'):
        for f in os.listdir(opt['path'][key]):
            assert open(osp.join(opt['path'][key], f), 'rb').read() == files[f]
