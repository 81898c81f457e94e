"""Names from outside are printed with control characters escaped, so they cannot forge a log line."""
from uniremoval.utils.display import shown


def test_control_characters_are_escaped_and_ordinary_names_kept():
    assert shown('a\nb\x1b[2J.png') == 'a\\nb\\x1b[2J.png'
    assert '\n' not in shown('x\r\ny') and shown('x\r\ny') == 'x\\r\\ny'
    assert shown('été 1.png') == 'été 1.png'
    assert shown(b'x\xff\n') == 'x\\xff\\n'
