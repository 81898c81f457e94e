"""A YAML alias bomb (nested anchors, about a kilobyte) is refused at load with exit 2, in a real ``basicsr train``
process under a memory limit, instead of growing past gigabytes when the options are logged (issue [12], item 4)."""
import resource
import subprocess
import sys
from os import path as osp

import pytest

from uniremoval.options import MAX_OPTION_NODES, OptionsError, expanded_size, load_option_file
from conftest import TINY_TEACHER_OPT

MEMORY_LIMIT = 6 << 30  # the child may import torch; the bomb alone would need far more


def alias_bomb(levels=9, width=9):
    """YAML whose ``bomb`` key expands to width**levels strings."""
    lines = ['l0: &l0 [' + ', '.join(['lol'] * width) + ']']
    for i in range(1, levels):
        lines.append(f'l{i}: &l{i} [' + ', '.join([f'*l{i - 1}'] * width) + ']')
    return '\n'.join(lines) + f'\nbomb: *l{levels - 1}\n'


def test_expanded_size_counts_shared_parts_and_stops_early():
    shared = [1, 2, 3]
    assert expanded_size({'a': shared, 'b': shared}, 100) == 1 + 2 * 4
    node = shared
    for _ in range(30):  # 2**30 values if expanded
        node = [node, node]
    assert expanded_size(node, 1000) == 1001


def test_bomb_is_refused_by_the_loader(tmp_path):
    path = tmp_path / 'bomb.yml'
    path.write_text(open(TINY_TEACHER_OPT).read() + alias_bomb())
    assert len(path.read_text()) < 4000
    with pytest.raises(OptionsError, match='alias'):
        load_option_file(str(path))
    assert expanded_size(load_option_file(TINY_TEACHER_OPT), MAX_OPTION_NODES) < 1000


def _limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def test_train_with_a_bomb_exits_2_under_a_memory_limit(tmp_path):
    path = tmp_path / 'bomb.yml'
    path.write_text(open(TINY_TEACHER_OPT).read() + alias_bomb())
    exe = osp.join(osp.dirname(sys.executable), 'basicsr')
    proc = subprocess.run([exe, 'train', '-opt', str(path)], cwd=str(tmp_path), capture_output=True, text=True,
                          timeout=300, preexec_fn=_limit_memory)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert 'alias' in proc.stderr and str(path) in proc.stderr and 'Traceback' not in proc.stderr
    assert not (tmp_path / 'experiments').exists()
