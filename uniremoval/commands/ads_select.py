"""``uniremoval-ads-select -opt select.yml [--method ...]``: ADS step 2, the discriminative filters.

The command layer over :mod:`uniremoval.ads.select_workflow`; exit 2 for a bad option file, checkpoint
or mask (:mod:`uniremoval.utils.errors`).
"""
import sys

from uniremoval.ads.select_workflow import check_select_options, run_select
from uniremoval.ads.selection import METHODS
from uniremoval.commands.common import add_force_yml_argument, add_option_file_argument, new_parser
from uniremoval.options import load_option_file
from uniremoval.utils.errors import run_command

PROG = 'uniremoval-ads-select'


def build_arg_parser():
    parser = new_parser(PROG, 'ADS step 2: score the filters of the unified model per degradation and write '
                        'the top-q% masks.')
    add_option_file_argument(parser, 'select option file (options/ads/paper/*/select.yml)')
    parser.add_argument('--method', choices=METHODS, default=None, help='selection method (default: select.method)')
    add_force_yml_argument(parser)
    return parser


def main(argv=None):
    """Run the command; returns the exit status (0 written, 2 usage error)."""
    return run_command(_select, build_arg_parser().parse_args(argv), PROG, usage=(ValueError,))


def _select(args):
    opt = load_option_file(args.opt, args.force_yml)
    check_select_options(opt, args.opt)
    run_select(opt, args.method)


if __name__ == '__main__':
    sys.exit(main())
