"""Resume after ``kill -9`` (issue [9], item 3): ``--auto_resume`` continues exactly where the killed run was.

Every run is ``basicsr train``'s pipeline in a forked child process (a real process, killed with a real
SIGKILL; forking spares re-importing torch) on the tiny teacher config with random crops, flips and
rotations (6 pairs of 40x40 cropped to 32x32, batch 2: 3 batches per epoch), without a data-loader
worker (augmentation drawn by the main process) and with one (BasicSR seeds it per epoch), validation
every 4 iterations and a checkpoint every 4: the checkpoints at 4 and 8 fall in the middle of epochs 1
and 2, so a resume has to restore the position in the epoch, the generators, the optimiser and the
scheduler. (Without replaying the epoch's first batches, or without restoring the generators, the
final weights differ by ~1e-4: checked when the tests were written.)

Tolerance: none. On CPU with one thread, a resumed run's final weights are bit-identical to an
uninterrupted run's (``torch.equal``), as two uninterrupted runs are.
"""
import glob
import logging
import multiprocessing
import os
import signal
import time
from os import path as osp

import pytest
import torch

from uniremoval.utils.checkpoint import KILL_DURING_SAVE_ENV, capture_rng_state, find_resumable_state, restore_rng_state
from conftest import tiny_teacher_options, write_pairs

TOTAL = 12
# the cosine period does not depend on total_iter, so a run told to go on for 1000 iterations trains the
# same first 12 iterations as one told to stop at 12
SCHEDULER = {'type': 'CosineAnnealingRestartLR', 'periods': [1000], 'restart_weights': [1], 'eta_min': 1.0e-6}
FORCE = ['datasets:train:batch_size_per_gpu=2', 'logger:print_freq=1', 'logger:save_checkpoint_freq=4',
         'val:val_freq=4']


def _child(args, root, env):
    """Body of a training process: ``basicsr train`` in a forked child (no second import of torch/BasicSR)."""
    os.environ.update(env)
    import basicsr.utils.logger as basicsr_logger
    basicsr_logger.initialized_logger.clear()  # the child logs to its own file even if this process trained before
    logging.getLogger('basicsr').handlers.clear()
    from uniremoval.train import train_pipeline
    train_pipeline(args, root_path=str(root))


def _start(opt_path, root, workers, total_iter=TOTAL, resume=False, env=None):
    args = (['-opt', opt_path] + (['--auto_resume'] if resume else [])
            + ['--force_yml', f'train:total_iter={total_iter}', f'datasets:train:num_worker_per_gpu={workers}'] + FORCE)
    proc = multiprocessing.get_context('fork').Process(target=_child, args=(args, root, dict(env or {})))
    proc.start()
    return proc


def _train(opt_path, root, workers, **kwargs):
    """Run a training process to its end; return its exit code and the text of its newest log."""
    proc = _start(opt_path, root, workers, **kwargs)
    proc.join(600)
    logs = sorted(glob.glob(osp.join(str(root), 'experiments', 'run', 'train_run_*.log')), key=osp.getmtime)
    return proc.exitcode, (open(logs[-1]).read() if logs else '')


def _weights(root):
    return torch.load(osp.join(str(root), 'experiments', 'run', 'models', 'net_g_latest.pth'),
                      weights_only=True)['params']


def _assert_same(a, b):
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f'{len(different)} tensors differ, e.g. {different[0]}: max |diff| ' \
        f'{(a[different[0]] - b[different[0]]).abs().max().item():.3g}'


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp('resume_data')
    return {'train': write_pairs(str(root / 'train'), 6, seed=1), 'val': write_pairs(str(root / 'val'), 2, seed=2)}


@pytest.fixture(scope='module')
def reference(tmp_path_factory, data):
    """``workers -> final weights`` of uninterrupted 12-iteration runs (computed on first use)."""
    cache = {}

    def get(workers):
        if workers not in cache:
            root = tmp_path_factory.mktemp(f'reference_{workers}')
            code, log = _train(tiny_teacher_options(root, data, 'run', scheduler=SCHEDULER), root, workers)
            assert code == 0, log[-3000:]
            cache[workers] = _weights(root)
        return cache[workers]
    return get


def _states(root):
    return osp.join(str(root), 'experiments', 'run', 'training_states')


def test_sigkill_midway_then_auto_resume_equals_uninterrupted(tmp_path, data, reference):
    opt_path = tiny_teacher_options(tmp_path, data, 'run', scheduler=SCHEDULER)
    # no data-loader worker: crops and flips come from the main process's generators, which the state restores
    proc = _start(opt_path, tmp_path, 0, total_iter=1000)
    try:
        deadline = time.time() + 300
        while not osp.exists(osp.join(_states(tmp_path), '4.state')):
            assert proc.is_alive() and time.time() < deadline, 'the run ended before saving its first state'
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)  # kill -9, not a polite stop
        proc.join(60)
        assert proc.exitcode == -signal.SIGKILL
    finally:
        if proc.is_alive():
            proc.kill()
    saved = sorted(int(f.split('.')[0]) for f in os.listdir(_states(tmp_path)) if f.endswith('.state'))
    assert saved and saved[-1] < TOTAL, f'killed too late to test a resume: states {saved}'

    code, log = _train(opt_path, tmp_path, 0, resume=True)
    assert code == 0, log[-3000:]
    assert f'Resuming training from epoch: {(saved[-1] - 1) // 3}, iter: {saved[-1]}.' in log
    _assert_same(_weights(tmp_path), reference(0))


def test_kill_while_saving_then_truncated_state_falls_back_and_resumes_exactly(tmp_path, data, reference):
    opt_path = tiny_teacher_options(tmp_path, data, 'run', scheduler=SCHEDULER)
    # SIGKILL inside the save of 8.state, after its bytes are written and before the rename
    # one data-loader worker: BasicSR seeds it per epoch; the resume replays the epoch's first batches through it
    code, _ = _train(opt_path, tmp_path, 1, env={KILL_DURING_SAVE_ENV: '8.state'})
    assert code == -signal.SIGKILL
    states = _states(tmp_path)
    files = os.listdir(states)
    assert '4.state' in files and '8.state' not in files
    assert any(f.startswith('.8.state.') and f.endswith('.tmp') for f in files)  # the interrupted write
    assert torch.load(osp.join(states, '4.state'), weights_only=True)['iter'] == 4
    assert osp.isfile(osp.join(str(tmp_path), 'experiments', 'run', 'models', 'net_g_8.pth'))  # saved just before

    # and a truncated newest state (a copy of 4.state cut in half, named 8.state): --auto_resume warns and falls
    # back to 4.state instead of failing with EOFError
    with open(osp.join(states, '4.state'), 'rb') as f:
        data_4 = f.read()
    newest = osp.join(states, '8.state')
    with open(newest, 'wb') as f:
        f.write(data_4[:len(data_4) // 2])
    code, log = _train(opt_path, tmp_path, 1, resume=True)
    assert code == 0, log[-3000:]
    assert f'training state {newest} cannot be resumed from' in log
    assert 'resuming from the previous state' in log
    assert 'Resuming training from epoch: 1, iter: 4.' in log
    assert 'Replayed the first 1 batches of epoch 1' in log
    _assert_same(_weights(tmp_path), reference(1))


def test_find_resumable_state_skips_truncated_state_and_network(tmp_path):
    states, models = tmp_path / 'training_states', tmp_path / 'models'
    states.mkdir()
    models.mkdir()
    for it in (2, 4, 6):
        torch.save({'iter': it, 'epoch': 0}, states / f'{it}.state')
        torch.save({'params': {'w': torch.ones(3) * it}}, models / f'net_g_{it}.pth')
    (states / '.8.state.x1.tmp').write_bytes(b'partial')
    data = (states / '6.state').read_bytes()
    (states / '6.state').write_bytes(data[:len(data) // 2])  # truncated newest state
    pth = (models / 'net_g_4.pth').read_bytes()
    (models / 'net_g_4.pth').write_bytes(pth[:-30])  # the previous state's network file is cut short

    path, state, skipped = find_resumable_state(str(states), lambda it: [str(models / f'net_g_{it}.pth')])
    assert path == str(states / '2.state') and state == {'iter': 2, 'epoch': 0}
    assert len(skipped) == 2 and '6.state' in skipped[0] and 'net_g_4.pth cannot be read' in skipped[1]
    (models / 'net_g_2.pth').unlink()
    assert find_resumable_state(str(states), lambda it: [str(models / f'net_g_{it}.pth')])[0] is None


def test_rng_state_round_trip_through_weights_only_file(tmp_path):
    import random

    import numpy as np
    torch.manual_seed(3)
    np.random.seed(4)
    random.seed(5)
    np.random.normal()  # a cached gaussian in numpy's state
    state = capture_rng_state()
    expected = (random.random(), np.random.normal(), np.random.rand(3).tolist(), torch.rand(4))
    torch.save({'rng': state}, tmp_path / 'x.state')
    restore_rng_state(torch.load(tmp_path / 'x.state', weights_only=True)['rng'])
    again = (random.random(), np.random.normal(), np.random.rand(3).tolist(), torch.rand(4))
    assert expected[:3] == again[:3] and torch.equal(expected[3], again[3])
