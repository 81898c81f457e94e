__version__ = '0.1.0'


def version_text(prog):
    """What ``--version`` prints for command ``prog`` (argparse's ``'%(prog)s'`` works too)."""
    return f'{prog} (uniremoval) {__version__}'
