"""All-or-nothing file writing: every writer of the package (checkpoints, training states, tables,
restored images) goes through :func:`atomic_open`, so an interrupted run never leaves a truncated
file under the final name."""
import errno
import os
import tempfile
from contextlib import contextmanager
from os import path as osp


def _current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def name_max(folder):
    """The file system's limit on one name's length in bytes under ``folder`` (255 if unknown)."""
    try:
        return int(os.pathconf(folder, 'PC_NAME_MAX'))
    except (OSError, ValueError, AttributeError):
        return 255


def temp_prefix(folder, name, extra=14):
    """A hidden temporary-name prefix ``.<name>.`` for ``name`` in ``folder`` that still fits the file system's
    name limit once ``extra`` bytes (a random part and a suffix) are added: the name part is shortened, on
    whole characters, when ``name`` itself is near the limit."""
    room = name_max(folder) - extra - 2
    encoded = os.fsencode(name)
    if len(encoded) > room:
        encoded = encoded[:max(room, 1)]
        name = os.fsdecode(encoded)
        while len(os.fsencode(name)) > max(room, 1):
            name = name[:-1]
    return f'.{name}.'


@contextmanager
def atomic_open(path, mode='wb', **open_kwargs):
    """Open a temporary file next to ``path``; rename it to ``path`` when the block succeeds.

    The temporary file is hidden (``.<name>.<random>.tmp``), gets the usual permissions (mkstemp
    makes 0600 files) and is fsynced before the rename; if the block raises, it is deleted and the
    previous ``path`` (if any) is left untouched. A full disk (``ENOSPC``, ``EDQUOT``) is re-raised as
    an ``OSError`` of the same errno naming ``path`` and saying that the previous file is intact.
    """
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(prefix=temp_prefix(folder, osp.basename(path)), suffix='.tmp', dir=folder)
    try:
        os.chmod(tmp_path, 0o666 & ~_current_umask())
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException as e:
        if osp.exists(tmp_path):
            os.remove(tmp_path)
        full = _disk_full(e)
        if full is not None:
            kept = 'the previous file is unchanged' if osp.exists(path) else 'nothing was written'
            raise OSError(full.errno, f'{os.strerror(full.errno)} while writing {path}; {kept} and the partial '
                                      'temporary file was removed') from e
        raise


def _disk_full(error):
    """The ``ENOSPC`` / ``EDQUOT`` ``OSError`` behind ``error``, if any: writers may hide it behind their own
    error (``torch.save``'s zip writer raises a ``RuntimeError`` while handling it)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return error
        error = error.__cause__ or error.__context__
    return None


def atomic_imwrite(img, path):
    """BasicSR's ``imwrite`` (an OpenCV BGR array, the format from ``path``'s extension), written through
    :func:`atomic_open`: a full disk or a kill leaves no truncated image under ``path``."""
    import cv2
    ok, encoded = cv2.imencode(osp.splitext(path)[1] or '.png', img)
    if not ok:
        raise OSError(f'OpenCV could not encode an image for {path}')
    with atomic_open(path, 'wb') as f:
        f.write(encoded.tobytes())
