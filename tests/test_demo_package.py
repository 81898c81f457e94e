"""The demo is self-contained: every file of the repository it reads lies inside the package, and every such
file is package data of the wheel (setup.py), so ``pip install .`` then ``python -m uniremoval.demo`` runs."""
import ast
import fnmatch
import json
import os
import subprocess
import sys
from os import path as osp

from conftest import REPO

PACKAGE = osp.join(REPO, 'uniremoval')

# Builds every option dict the two demos train with, and reads the shipped checkpoints' manifest, with an
# audit hook recording each file opened for reading (the way open(), torch.load and yaml reach files).
SCRIPT = r'''
import json, os, sys
opened = set()

def hook(event, args):
    if event == 'open' and isinstance(args[0], (str, bytes)):
        mode, flags = args[1], args[2]
        if (isinstance(mode, str) and 'r' in mode and '+' not in mode) or (mode is None and not flags & 3):
            opened.add(os.path.realpath(os.fsdecode(args[0])))

sys.addaudithook(hook)
import torch
from uniremoval.demo import ads, options, shipped
data = sys.argv[1]
opts = [options.teacher_options(k, data, 2, 32, 2) for k in ('haze', 'rain', 'blur')]
ckpts = shipped.shipped_checkpoints()
opts.append(options.kt_options(data, ckpts, 2, 32, 2))
opts += [options.kt_options(data, ckpts, 2, 32, 2, variant) for _, variant in options.KT_LADDER + options.KT_FIDELITY]
opts += [options.da_options(data, ckpts['kt'], 2, 32, 2, variant)
         for _, variant in options.DA_LADDER + options.DA_FIDELITY]
opts += [ads.demo_option(n, data) for n in ('um', 'finetune_rain', 'finetune_blur', 'finetune_noise', 'select',
                                            'classifier', 'ads', 'compare')]
shipped.read_manifest()
for path in ckpts.values():
    torch.load(path, map_location='cpu', weights_only=True)
print(json.dumps({'opened': sorted(opened), 'options': opts, 'checkpoints': sorted(ckpts.values())}, default=str))
'''


def strings(node):
    if isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)
    elif isinstance(node, str):
        yield node


def package_data():
    """{package: globs} that setup.py ships as package data."""
    tree = ast.parse(open(osp.join(REPO, 'setup.py'), encoding='utf-8').read())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == 'package_data':
            return ast.literal_eval(node.value)
    raise AssertionError('setup.py has no package_data')


def is_package_data(path):
    """Whether ``path`` (a data file inside the package) matches a package_data glob of its package."""
    for package, globs in package_data().items():
        folder = osp.join(REPO, *package.split('.'))
        rel = osp.relpath(path, folder)
        if not rel.startswith('..') and any(fnmatch.fnmatch(rel, g) for g in globs):
            return True
    return False


def test_every_repository_file_the_demo_reads_is_package_data(tmp_path):
    data = str(tmp_path / 'data')
    out = subprocess.run([sys.executable, '-c', SCRIPT, data], cwd=str(tmp_path), capture_output=True, text=True,
                         check=True).stdout
    found = json.loads(out.splitlines()[-1])
    inside_repo = [p for p in found['opened'] if p.startswith(REPO + os.sep) and '.venv' not in p]
    assert len(inside_repo) >= 10, inside_repo  # the option files and checkpoints were seen
    outside_package = [p for p in inside_repo if not p.startswith(PACKAGE + os.sep)]
    assert not outside_package, f'the demo reads files outside the package: {outside_package}'
    # paths written into the options: the demo data, files of the package, or names relative to the run
    for value in strings(found['options']):
        if osp.isabs(value) and osp.exists(value):
            assert value.startswith((data, PACKAGE + os.sep)), value
    for path in inside_repo:
        if not path.endswith(('.py', '.pyc')):  # modules ship as the package itself
            assert is_package_data(path), f'{path} is not package data in setup.py'


def test_package_data_covers_every_demo_file():
    for folder in ('configs', 'checkpoints'):
        for root, _, files in os.walk(osp.join(PACKAGE, 'demo', folder)):
            for name in files:
                assert is_package_data(osp.join(root, name)), f'{name} in {root} would be missing from the wheel'
