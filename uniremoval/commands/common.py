"""Argument helpers every command shares, so that flags read the same everywhere.

Every command takes its option file as ``-opt`` (BasicSR's spelling) or ``--opt``, and answers
``--version``. Commands import this module and the library, never each other.
"""
import argparse

from uniremoval.version import version_text


def new_parser(prog, description, epilog=None):
    """An ``ArgumentParser`` for command ``prog`` with ``--version``."""
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_version_argument(parser)
    return parser


def add_version_argument(parser):
    parser.add_argument('--version', action='version', version=version_text('%(prog)s'))


def add_force_yml_argument(parser):
    """``--force_yml key:sub=value ...``: override option-file keys, as in ``basicsr train``."""
    parser.add_argument('--force_yml', nargs='+', default=None, metavar='KEY:SUB=VALUE',
                        help='override option keys, e.g. name=run2')


def add_option_file_argument(parser, help, required=True):
    """The option file flag: ``-opt`` or ``--opt``, stored as ``args.opt``."""
    parser.add_argument('-opt', '--opt', dest='opt', required=required, metavar='OPTIONS.yml', help=help)
