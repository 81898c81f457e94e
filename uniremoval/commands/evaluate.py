"""``uniremoval-evaluate -opt options/eval_*.yml``: the comparison tables into ``results/<name>/``.

The command layer over :mod:`uniremoval.evaluation`: flags, the log file, and the error policy of
:mod:`uniremoval.utils.errors` (exit 2 for a bad option file or checkpoint).
"""
import logging
import os
import sys
from os import path as osp

from basicsr.utils import get_root_logger, get_time_str
from uniremoval.commands.common import add_force_yml_argument, add_option_file_argument, new_parser
from uniremoval.evaluation import evaluate, parse_eval_options, write_outputs
from uniremoval.utils.errors import run_command

PROG = 'uniremoval-evaluate'


def build_arg_parser():
    parser = new_parser(PROG, 'Score checkpoints on test sets and write the Uni-Removal comparison table '
                        '(Markdown, CSV, JSON) into results/<name>/.')
    add_option_file_argument(parser, 'the evaluation option file (options/eval_*.yml)')
    add_force_yml_argument(parser)
    return parser


def evaluate_pipeline(args=None, root_path=None):
    """Parse ``args`` (command-line flags), evaluate and write the table; return the table dict."""
    args = build_arg_parser().parse_args(sys.argv[1:] if args is None else args)
    opt = parse_eval_options(args.opt, args.force_yml, root_path=root_path)
    results_root = opt['path']['results_root']
    os.makedirs(results_root, exist_ok=True)
    log_file = osp.join(results_root, f"eval_{opt['name']}_{get_time_str()}.log")
    logger = get_root_logger(logger_name='basicsr', log_level=logging.INFO, log_file=log_file)
    logger.info(f'Evaluating {args.opt} on {opt["device"]}')
    table = evaluate(opt, logger)
    table['option_file'] = osp.abspath(args.opt)
    paths = write_outputs(table, opt['metrics'], results_root)
    logger.info('Table written to ' + ', '.join(paths))
    return table


def main(argv=None):
    """Run the command; returns the exit status (0 written, 2 usage error)."""
    return run_command(evaluate_pipeline, argv, PROG)


if __name__ == '__main__':
    sys.exit(main())
