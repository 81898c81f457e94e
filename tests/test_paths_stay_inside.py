"""Paths from option files and command lines stay where they belong (issue [12], items 1 and 2): a run name is
one plain folder name inside experiments/ or results/, and no route to an input lets restore overwrite it."""
import os

import cv2
import numpy as np
import pytest

from uniremoval.commands.basicsr_cli import main as cli_main
from uniremoval.commands.restore import is_same_file
from uniremoval.commands.restore import main as restore_main
from uniremoval.options import run_name_problem
from conftest import tiny_teacher_options, write_tiny_model

TINY_MPRNET = {'type': 'MPRNet', 'n_feat': 8, 'scale_unetfeats': 4, 'scale_orsnetfeats': 4, 'num_cab': 1}


@pytest.mark.parametrize('name', ['/tmp/x', '../../x', '..', '.', 'a/b', 'a\\b', '', 'x\ny'])
def test_unsafe_run_names_are_refused(name):
    assert run_name_problem(name)


@pytest.mark.parametrize('name', ['kt_paper', 'teacher-dehaze.v2', 'debug_x'])
def test_plain_run_names_pass(name):
    assert run_name_problem(name) is None


@pytest.mark.parametrize('name', ['ABS', '../escaped', '..'])
def test_train_refuses_a_name_outside_experiments_and_renames_nothing(name, tmp_path, paired_folders, capsys,
                                                                      monkeypatch):
    victim = tmp_path / 'victim'
    victim.mkdir()
    (victim / 'keep.txt').write_text('precious')
    name = str(victim) if name == 'ABS' else name
    work = tmp_path / 'work'
    work.mkdir()
    monkeypatch.chdir(work)
    opt = tiny_teacher_options(tmp_path, paired_folders, 'paths')
    assert cli_main(['train', '-opt', opt, '--force_yml', f'name={name}']) == 2
    err = capsys.readouterr().err
    assert 'name: must be a plain folder name' in err and 'Traceback' not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ['paths.yml', 'victim', 'work']  # nothing archived
    assert (victim / 'keep.txt').read_text() == 'precious' and not list(work.iterdir())


@pytest.fixture(scope='module')
def tiny_model(tmp_path_factory):
    root = tmp_path_factory.mktemp('paths_model')
    return write_tiny_model(root, TINY_MPRNET)


def _photos(folder):
    folder.mkdir()
    rng = np.random.default_rng(0)
    images = {}
    for name in ('a.png', 'b.png'):
        images[name] = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        assert cv2.imwrite(str(folder / name), images[name])
    return images


def _unchanged(folder, images):
    return all(np.array_equal(cv2.imread(str(folder / n), cv2.IMREAD_UNCHANGED), img) for n, img in images.items())


def test_restore_into_a_symlink_to_the_input_folder_overwrites_nothing(tiny_model, tmp_path):
    ckpt, opt = tiny_model
    photos = tmp_path / 'photos'
    images = _photos(photos)
    os.symlink(photos, tmp_path / 'link')
    rc = restore_main(['-i', str(photos), '-o', str(tmp_path / 'link'), '-w', ckpt, '-opt', opt, '-q'])
    assert rc == 1 and _unchanged(photos, images)
    # relative route to the same folder
    rc = restore_main(['-i', str(photos), '-o', str(tmp_path / 'link' / '..' / 'photos'), '-w', ckpt, '-opt', opt,
                       '-q'])
    assert rc == 1 and _unchanged(photos, images)


def test_restore_onto_a_hard_link_of_an_input_overwrites_nothing(tiny_model, tmp_path):
    ckpt, opt = tiny_model
    photos = tmp_path / 'photos'
    images = _photos(photos)
    out = tmp_path / 'out'
    out.mkdir()
    os.link(photos / 'a.png', out / 'a.png')
    rc = restore_main(['-i', str(photos), '-o', str(out), '-w', ckpt, '-opt', opt, '-q'])
    assert rc == 1  # a.png refused, b.png restored
    assert _unchanged(photos, images) and (out / 'b.png').exists()
    assert is_same_file(str(photos / 'a.png'), str(out / 'a.png'))
    assert not is_same_file(str(photos / 'b.png'), str(tmp_path / 'new.png'))
