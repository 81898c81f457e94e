"""Temporary names fit the file system's name limit: a legal name near the limit can still be written."""
import os

from uniremoval.utils.atomic_io import atomic_open


def test_atomic_open_writes_a_250_byte_name(tmp_path):
    limit = os.pathconf(str(tmp_path), "PC_NAME_MAX")
    name = 'a' * (min(limit, 255) - 5) + '.bin'  # 250 bytes on a 255-byte file system
    assert len(name.encode()) == min(limit, 255) - 1
    with atomic_open(tmp_path / name) as f:
        f.write(b'payload')
    assert (tmp_path / name).read_bytes() == b'payload'
    assert os.listdir(tmp_path) == [name]  # no temporary left behind


def test_atomic_open_multibyte_name_near_limit(tmp_path):
    name = '\u00e9' * 120 + '.txt'  # 244 bytes in UTF-8
    with atomic_open(tmp_path / name, 'w') as f:
        f.write('x')
    assert (tmp_path / name).read_text() == 'x'
