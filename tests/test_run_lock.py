"""One run per experiment folder (issue [12]): a second ``basicsr train`` with the same name exits 2 naming the
running one's PID and leaves its folder alone; once the first has ended, a new run archives its folder as before.

Real processes: the first run is the ``basicsr`` console script with a long ``total_iter``, killed at the end.
"""
import glob
import os
import signal
import subprocess
import sys
import time
from os import path as osp

from conftest import run_cli, tiny_teacher_options


def _wait_for_log(folder, proc, timeout=120):
    deadline = time.time() + timeout
    while not glob.glob(osp.join(folder, 'train_*.log')):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline, 'the first run did not start training'
        time.sleep(0.1)


def test_second_training_run_with_the_same_name_exits_2_and_leaves_the_first_alone(tmp_path, paired_folders):
    opt_path = tiny_teacher_options(tmp_path, paired_folders, 'run')
    exe = osp.join(osp.dirname(sys.executable), 'basicsr')
    first = subprocess.Popen([exe, 'train', '-opt', opt_path, '--force_yml', 'train:total_iter=100000',
                              'train:scheduler:periods=[100000]', 'val:val_freq=100000',
                              'logger:save_checkpoint_freq=100000'],
                             cwd=str(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             env=dict(os.environ, OMP_NUM_THREADS='1'))
    folder = osp.join(str(tmp_path), 'experiments', 'run')
    try:
        _wait_for_log(folder, first)
        logs_before = sorted(os.listdir(folder))
        second = run_cli(['train', '-opt', opt_path, '--force_yml', 'train:total_iter=2'], cwd=str(tmp_path))
        assert second.returncode == 2, second.stderr[-3000:]
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith('basicsr train: error: ')
        assert f'PID {first.pid}' in lines[0] and folder in lines[0]
        assert first.poll() is None  # still training
        assert sorted(os.listdir(osp.join(str(tmp_path), 'experiments'))) == ['.run.lock', 'run']  # nothing archived
        assert sorted(os.listdir(folder)) == logs_before
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(60)

    # the first run has ended: a new run archives its folder, as BasicSR does, and trains
    third = run_cli(['train', '-opt', opt_path, '--force_yml', 'train:total_iter=2'], cwd=str(tmp_path))
    assert third.returncode == 0, third.stderr[-3000:]
    archived = glob.glob(osp.join(str(tmp_path), 'experiments', 'run_archived_*'))
    assert len(archived) == 1 and sorted(os.listdir(archived[0])) == logs_before
    assert osp.isfile(osp.join(folder, 'models', 'net_g_latest.pth'))


def test_lock_names_holder_pid_and_is_released(tmp_path):
    from uniremoval.utils.run_lock import RunLockedError, acquire_run_lock, lock_path
    folder = str(tmp_path / 'experiments' / 'x')
    holder = subprocess.Popen([sys.executable, '-c', 'import sys, time\nfrom uniremoval.utils.run_lock import '
                               'acquire_run_lock\nlock = acquire_run_lock(sys.argv[1])\nprint("held", flush=True)\n'
                               'time.sleep(60)', folder], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'held'
        try:
            acquire_run_lock(folder, 'training run')
            raise AssertionError('the lock was taken twice')
        except RunLockedError as e:
            assert f'PID {holder.pid}' in str(e) and 'another training run' in str(e)
    finally:
        holder.kill()
        holder.wait(30)
    with acquire_run_lock(folder) as lock:  # kill -9 released it
        assert lock.path == lock_path(folder) == str(tmp_path / 'experiments' / '.x.lock')
        assert open(lock.path).read() == f'{os.getpid()}\n'
    acquire_run_lock(folder).release()  # and so did leaving the block
