"""Every command reads its option file as ``-opt`` or ``--opt``, answers ``--version``, has a console script,
and ends by the one error policy of :mod:`uniremoval.utils.errors`."""
import ast
import importlib
import pkgutil
from os import path as osp

import pytest

import uniremoval
from uniremoval import commands
from uniremoval.options import OptionsError, build_arg_parser
from uniremoval.restoration import SetupError
from uniremoval.utils.checkpoint import CheckpointError, load_state_dict_file
from uniremoval.utils.errors import RunFailure, UsageError, exit_status, run_command
from conftest import REPO

COMMANDS = sorted(m.name for m in pkgutil.iter_modules(commands.__path__) if m.name != 'common')
# the flags each parser needs besides the option file
REQUIRED = {'restore': ['-i', 'in', '-o', 'out'], 'export_onnx': ['-o', 'x.onnx']}


def console_scripts():
    """{script name: 'module:function'} from setup.py's entry_points."""
    tree = ast.parse(open(osp.join(REPO, 'setup.py'), encoding='utf-8').read())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == 'entry_points':
            entries = ast.literal_eval(node.value)['console_scripts']
            return dict(tuple(part.strip() for part in entry.split('=')) for entry in entries)
    raise AssertionError('setup.py has no entry_points')


def test_every_command_has_a_console_script_that_resolves():
    scripts = console_scripts()
    assert set(scripts) >= {'basicsr', 'uniremoval-restore', 'uniremoval-evaluate', 'uniremoval-export-onnx',
                            'uniremoval-ads-select', 'uniremoval-ads-compare'}
    targets = {target.split(':')[0] for target in scripts.values()}
    assert targets == {f'uniremoval.commands.{name}' for name in COMMANDS}
    for target in scripts.values():
        module, function = target.split(':')
        assert callable(getattr(importlib.import_module(module), function)), target


# basicsr's flags are tested below; the app takes option files in its page, none at start
@pytest.mark.parametrize('name', [n for n in COMMANDS if n not in ('basicsr_cli', 'app')])
@pytest.mark.parametrize('flag', ['-opt', '--opt'])
def test_option_file_flag_both_spellings(name, flag):
    parser = importlib.import_module(f'uniremoval.commands.{name}').build_arg_parser()
    args = parser.parse_args(REQUIRED.get(name, []) + [flag, 'x.yml'])
    assert args.opt == 'x.yml'


@pytest.mark.parametrize('flag', ['-opt', '--opt'])
def test_basicsr_flags_both_spellings(flag):
    assert build_arg_parser(is_train=True).parse_args([flag, 'x.yml']).opt == 'x.yml'


def test_restore_reads_basicsr_spelling_not_as_output():
    """``-opt x.yml`` used to parse as ``-o pt``: the output folder 'pt'."""
    args = importlib.import_module('uniremoval.commands.restore').build_arg_parser().parse_args(
        ['-i', 'in', '-o', 'out', '-opt', 'x.yml'])
    assert (args.opt, args.output) == ('x.yml', 'out')


@pytest.mark.parametrize('name', COMMANDS)
def test_version(name, capsys):
    main = importlib.import_module(f'uniremoval.commands.{name}').main
    try:
        status = main(['--version'])
    except SystemExit as e:  # argparse's version action
        status = e.code
    assert status == 0
    assert capsys.readouterr().out.strip().endswith(f'(uniremoval) {uniremoval.__version__}')


def test_policy_classes():
    assert exit_status(OptionsError('x')) == exit_status(SetupError('x')) == exit_status(CheckpointError('x')) == 2
    assert exit_status(FileNotFoundError(2, 'No such file', 'a.yml')) == 2
    assert exit_status(OSError(28, 'No space left on device', 'net_g.pth')) is None  # not the user's input
    assert exit_status(RunFailure('nan')) == 1
    assert exit_status(ValueError('bug')) is None and exit_status(ValueError('x'), usage=(ValueError,)) == 2
    # the classes stay what they were for existing except clauses
    assert isinstance(OptionsError('x'), ValueError) and isinstance(SetupError('x'), RuntimeError)


def test_run_command_reports_one_line_and_status(capsys):
    def fails(error):
        def func(argv):
            raise error
        return func

    assert run_command(fails(UsageError('Option file a.yml: bad key')), [], 'prog') == 2
    assert capsys.readouterr().err == 'prog: error: Option file a.yml: bad key\n'
    assert run_command(fails(RunFailure('loss is NaN')), [], 'prog') == 1
    assert run_command(lambda argv: 1, [], 'prog') == 1
    assert run_command(lambda argv: {'table': 1}, [], 'prog') == 0
    with pytest.raises(KeyError):  # a bug keeps its traceback
        run_command(fails(KeyError('x')), [], 'prog')


def test_unreadable_checkpoint_is_a_usage_error(tmp_path):
    path = tmp_path / 'net.pth'
    path.write_bytes(b'not a checkpoint')
    with pytest.raises(CheckpointError) as err:
        load_state_dict_file(str(path))
    assert str(path) in str(err.value) and exit_status(err.value) == 2
