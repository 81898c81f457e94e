"""Option files: safe YAML, --force_yml without eval, path set-up and errors."""
from os import path as osp

import pytest

import uniremoval  # noqa: F401  (compat shim + registration before BasicSR is used)
from uniremoval.options import OptionsError, apply_force_yml, load_option_file, parse_options, yaml_load_safe
from conftest import TINY_TEACHER_OPT


def test_safe_yaml_refuses_python_tags_and_reads_exponent_floats(tmp_path):
    evil = tmp_path / 'evil.yml'
    evil.write_text('name: !!python/object/apply:os.system ["echo pwned"]\n')
    with pytest.raises(OptionsError, match='evil.yml'):
        load_option_file(str(evil))
    assert yaml_load_safe('lr: 2e-4\nt: 1e-6\nf: !!float 3e-4\nx: 1.5\nn: 10') == {
        'lr': 2e-4, 't': 1e-6, 'f': 3e-4, 'x': 1.5, 'n': 10}


def test_force_yml_parses_values_without_eval():
    opt = {'name': 'a', 'train': {'total_iter': 5, 'periods': [1]}, 'val': {'save_img': False}}
    apply_force_yml(opt, ['train:total_iter=7', 'train:periods=[2, 3]', 'val:save_img=true',
                          "name=__import__('os').getcwd()"])
    assert opt == {'name': "__import__('os').getcwd()", 'train': {'total_iter': 7, 'periods': [2, 3]},
                   'val': {'save_img': True}}
    with pytest.raises(OptionsError, match='train:nope'):
        apply_force_yml(opt, ['train:nope=1'])
    with pytest.raises(OptionsError, match='key:subkey=value'):
        apply_force_yml(opt, ['train:total_iter'])


def test_parse_options_paths_and_errors(tmp_path):
    opt, _ = parse_options(['-opt', TINY_TEACHER_OPT], root_path=str(tmp_path), is_train=True, check_paths=False)
    assert opt['path']['experiments_root'] == osp.join(str(tmp_path), 'experiments', 'demo_teacher_tiny')
    assert opt['datasets']['train']['phase'] == 'train' and opt['datasets']['val']['phase'] == 'val'
    assert opt['train']['optim_g']['lr'] == 2e-4 and opt['dist'] is False and opt['num_gpu'] == 0
    bad = tmp_path / 'bad.yml'
    bad.write_text('name: x\nmodel_type: MPRNetModel\n')
    with pytest.raises(OptionsError, match=r"bad.yml lacks the required key 'datasets'"):
        parse_options(['-opt', str(bad)], root_path=str(tmp_path))
    with pytest.raises(OptionsError, match='not found'):
        parse_options(['-opt', str(tmp_path / 'missing.yml')], root_path=str(tmp_path))
