"""The package's imports point down the layers of docs/architecture.md, with no circle, and no command
imports another command. Read from the source with ``ast`` (function-level imports included)."""
import ast
import os
from os import path as osp

import pytest

from conftest import REPO

PACKAGE = osp.join(REPO, 'uniremoval')

# Lowest first; a module belongs to the layer of its longest matching prefix.
LAYERS = (
    ('shared', ('uniremoval.utils', 'uniremoval.compat', 'uniremoval.version')),
    ('method', ('uniremoval.ads', 'uniremoval.ads.adaptive_conv', 'uniremoval.ads.faig', 'uniremoval.ads.selection')),
    ('registered', ('uniremoval', 'uniremoval.archs', 'uniremoval.losses', 'uniremoval.data', 'uniremoval.metrics',
                    'uniremoval.models')),
    ('library', ('uniremoval.options', 'uniremoval.restoration', 'uniremoval.onnx_export')),
    ('pipelines', ('uniremoval.train', 'uniremoval.test', 'uniremoval.evaluation', 'uniremoval.ads.select_workflow',
                   'uniremoval.ads.compare_workflow')),
    # the web app serves the shipped demo networks, so it sits beside the demo, over the library
    ('commands', ('uniremoval.commands', 'uniremoval.demo', 'uniremoval.evaluate', 'uniremoval.app')),
)
RANK = {prefix: rank for rank, (_, prefixes) in enumerate(LAYERS) for prefix in prefixes}
# Modules every command may share; the other modules of commands/ are commands.
COMMAND_SHARED = ('uniremoval.commands', 'uniremoval.commands.common')
# ``python -m uniremoval.evaluate`` is the evaluate command under its old name.
ALIASES = {'uniremoval.evaluate': 'uniremoval.commands.evaluate'}


def module_files():
    """{dotted module name: file} of every module of the package."""
    modules = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith('.py'):
                rel = osp.relpath(osp.join(folder, name), REPO)[:-3].replace(os.sep, '.')
                modules[rel[:-len('.__init__')] if rel.endswith('.__init__') else rel] = osp.join(folder, name)
    return modules


MODULES = module_files()


def imports_of(name, path):
    """The package modules that ``name`` imports anywhere in its source."""
    found = set()
    package = name if path.endswith('__init__.py') else name.rpartition('.')[0]
    for node in ast.walk(ast.parse(open(path, encoding='utf-8').read(), path)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:  # relative: up node.level - 1 packages from this module's own
                parts = package.split('.')[:len(package.split('.')) - node.level + 1]
                base = '.'.join(parts + ([base] if base else []))
            targets = [f'{base}.{alias.name}' if f'{base}.{alias.name}' in MODULES else base for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in MODULES and t != name)
    return found


GRAPH = {name: imports_of(name, path) for name, path in MODULES.items()}


def layer(name):
    parts = name.split('.')
    for n in range(len(parts), 0, -1):
        if '.'.join(parts[:n]) in RANK:
            return RANK['.'.join(parts[:n])]
    raise AssertionError(f'{name} is in no layer of tests/test_layers.py: add it where docs/architecture.md puts it')


def is_command(name):
    return name.startswith('uniremoval.commands.') and name not in COMMAND_SHARED


def test_every_module_has_a_layer():
    assert len(MODULES) > 50
    for name in MODULES:
        layer(name)


def test_every_package_folder_is_a_regular_package():
    """setup.py's find_packages ships only folders with an __init__.py: a namespace folder would be left out
    of the wheel and work only from a clone."""
    for folder, _, files in os.walk(PACKAGE):
        if '__pycache__' not in folder and any(name.endswith('.py') for name in files):
            assert '__init__.py' in files, f'{folder} has modules but no __init__.py'


def test_the_reader_finds_known_imports():
    """Guards the test itself: a few imports that exist must be seen (plain, from-import, function-level)."""
    assert 'uniremoval.restoration' in GRAPH['uniremoval.commands.restore']
    assert 'uniremoval.ads.adaptive_conv' in GRAPH['uniremoval.ads.selection']
    assert 'uniremoval.onnx_export' in GRAPH['uniremoval.commands.restore']  # imported inside a function


@pytest.mark.parametrize('name', sorted(MODULES))
def test_imports_point_down(name):
    upward = sorted(t for t in GRAPH[name] if layer(t) > layer(name))
    assert not upward, f'{name} ({LAYERS[layer(name)][0]}) imports from a higher layer: {upward}'


@pytest.mark.parametrize('name', sorted(n for n in MODULES if is_command(n) or n in ALIASES))
def test_no_command_imports_another(name):
    others = sorted(t for t in GRAPH[name] if is_command(t) and t != ALIASES.get(name))
    assert not others, f'{name} imports other commands {others}; move what they share into the library'


def test_no_import_circles():
    """Depth-first search for a cycle among the package's modules (a package's own submodules excluded:
    ``uniremoval/__init__`` importing its subpackages is how registration works)."""
    def edges(name):
        return [t for t in GRAPH[name] if not t.startswith(name + '.')]

    state, stack = {}, []

    def visit(name):
        state[name] = 'open'
        stack.append(name)
        for target in edges(name):
            if state.get(target) == 'open':
                raise AssertionError('import circle: ' + ' -> '.join(stack[stack.index(target):] + [target]))
            if target not in state:
                visit(target)
        stack.pop()
        state[name] = 'done'

    for name in sorted(MODULES):
        if name not in state:
            visit(name)
