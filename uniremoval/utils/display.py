"""Text that came from outside (file names, option values) made safe to print.

A file name may hold a newline or a terminal escape sequence; printed raw into a log it could forge a
line or move the cursor. :func:`shown` escapes every control and non-printable character the way
``repr`` does, and leaves ordinary names (spaces and non-ASCII letters included) as they are.
"""


def shown(text):
    """``text`` (a str, bytes or path-like) with control characters escaped (``\\n``, ``\\x1b``, ...).

    >>> shown('a\\nb.png')
    'a\\\\nb.png'
    >>> shown('été 1.png')
    'été 1.png'
    """
    if isinstance(text, bytes):
        text = text.decode('utf-8', 'backslashreplace')
    text = str(text)
    if text.isprintable():
        return text
    return ''.join(c if c.isprintable() else repr(c)[1:-1] for c in text)
