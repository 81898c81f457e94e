"""Argument helpers every command shares, so that flags read the same everywhere.

Every command takes its option file as ``-opt`` (BasicSR's spelling) or ``--opt``, and answers
``--version``. Commands import this module and the library, never each other.
"""
import argparse

from uniremoval.version import __version__


def new_parser(prog, description, epilog=None):
    """An ``ArgumentParser`` for command ``prog`` with ``--version``."""
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_version_argument(parser)
    return parser


def add_version_argument(parser):
    parser.add_argument('--version', action='version', version=f'%(prog)s (uniremoval) {__version__}')


def add_option_file_argument(parser, help, required=True):
    """The option file flag: ``-opt`` or ``--opt``, stored as ``args.opt``."""
    parser.add_argument('-opt', '--opt', dest='opt', required=required, metavar='OPTIONS.yml', help=help)
