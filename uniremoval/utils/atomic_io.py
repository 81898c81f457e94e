"""All-or-nothing file writing: every writer of the package (checkpoints, training states, tables,
restored images) goes through :func:`atomic_open`, so an interrupted run never leaves a truncated
file under the final name."""
import os
import tempfile
from contextlib import contextmanager
from os import path as osp


def _current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_open(path, mode='wb', **open_kwargs):
    """Open a temporary file next to ``path``; rename it to ``path`` when the block succeeds.

    The temporary file is hidden (``.<name>.<random>.tmp``), gets the usual permissions (mkstemp
    makes 0600 files) and is fsynced before the rename; if the block raises, it is deleted and the
    previous ``path`` (if any) is left untouched.
    """
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(prefix=f'.{osp.basename(path)}.', suffix='.tmp', dir=folder)
    try:
        os.chmod(tmp_path, 0o666 & ~_current_umask())
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        if osp.exists(tmp_path):
            os.remove(tmp_path)
        raise
