"""One run per run folder: an advisory lock held by ``basicsr train`` / ``basicsr test`` for the whole run.

The lock is ``fcntl.flock`` on a hidden file beside the run folder (``experiments/.<name>.lock`` for
``experiments/<name>``), not inside it: BasicSR's archive-on-exists (``mkdir_and_rename``) then still
moves a finished run's folder to ``<name>_archived_<time>`` and the lock stays with the name, not with
the folder that is renamed. The holder writes its PID into the file, so a second run can name it. The
kernel drops the lock when the holder exits, however it exits (``kill -9`` included); a lock file left
behind by an ended run locks nothing. Under ``torchrun`` only rank 0 takes it (see ``uniremoval.train``).

The lock file is written in place, not through ``atomic_open``: renaming a new file over it would give
a second run another file to lock.
"""
import errno
import fcntl
import os
from os import path as osp

from uniremoval.utils.display import shown
from uniremoval.utils.errors import UsageError


class RunLockedError(UsageError, RuntimeError):
    """Another live process holds the run folder's lock; the message names the folder and its PID."""


def lock_path(run_folder):
    """The lock file of ``run_folder``: ``<parent>/.<name>.lock``."""
    run_folder = osp.abspath(run_folder)
    return osp.join(osp.dirname(run_folder), f'.{osp.basename(run_folder)}.lock')


class RunLock:
    """The held lock of one run folder; :meth:`release` (or leaving a ``with`` block) gives it up."""

    def __init__(self, run_folder, fd):
        self.run_folder, self.path, self._fd = run_folder, lock_path(run_folder), fd

    def release(self):
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def _holder_pid(fd):
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 64).decode('ascii', 'replace').strip()
    return text if text.isdigit() else None


def acquire_run_lock(run_folder, what='run'):
    """Lock ``run_folder`` for this process, before the folder is created or archived.

    Args:
        run_folder (str): ``experiments/<name>`` or ``results/<name>``; its parent is created if needed.
        what (str): how the message names the other process (``'training run'``, ``'test run'``).

    Returns:
        RunLock: held until :meth:`RunLock.release` or the end of the process.

    Raises:
        RunLockedError: another live process holds the lock; the message names the folder and its PID.
    """
    path = lock_path(run_folder)
    os.makedirs(osp.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        pid = _holder_pid(fd)
        os.close(fd)
        if e.errno not in (errno.EWOULDBLOCK, errno.EACCES, errno.EAGAIN):
            raise
        holder = f'PID {pid}' if pid else 'a process that has not written its PID yet'
        raise RunLockedError(f'{shown(run_folder)} is in use by another {what} ({holder}, lock file {shown(path)}); '
                             'wait for it to end, stop it, or give this run another name') from None
    os.ftruncate(fd, 0)
    os.write(fd, f'{os.getpid()}\n'.encode('ascii'))
    return RunLock(run_folder, fd)
