"""``uniremoval-ads-compare -opt compare.yml``: the slides' table of selection methods x q x seeds.

The command layer over :mod:`uniremoval.ads.compare_workflow`; exit 2 for a bad option file,
checkpoint or mask (:mod:`uniremoval.utils.errors`).
"""
import sys

from uniremoval.ads.compare_workflow import check_compare_options, run_compare
from uniremoval.commands.common import add_force_yml_argument, add_option_file_argument, new_parser
from uniremoval.options import load_option_file
from uniremoval.utils.errors import run_command

PROG = 'uniremoval-ads-compare'


def build_arg_parser():
    parser = new_parser(PROG, "ADS: train and score CNN-ADS for every selection method, q and seed; the slides' "
                        'comparison table.')
    add_option_file_argument(parser, 'compare option file (options/ads/paper/*/compare.yml)')
    add_force_yml_argument(parser)
    return parser


def main(argv=None):
    """Run the command; returns the exit status (0 written, 2 usage error)."""
    return run_command(_compare, build_arg_parser().parse_args(argv), PROG, usage=(ValueError,))


def _compare(args):
    opt = load_option_file(args.opt, args.force_yml)
    check_compare_options(opt, args.opt)
    run_compare(opt)


if __name__ == '__main__':
    sys.exit(main())
