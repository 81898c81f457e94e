"""``uniremoval-app``: a local web page to try a restoration network on your images (Gradio).

The command layer over :mod:`uniremoval.app.page` (the page) and :mod:`uniremoval.app.service` (the same
library functions as ``uniremoval-restore``). Serves on 127.0.0.1 unless ``--host`` says otherwise; no share
link, no analytics. Needs the extra: ``pip install "uniremoval[app]"``. Details: ``docs/app.md``.
"""
import sys

from uniremoval.commands.common import new_parser
from uniremoval.utils.errors import UsageError, run_command

PROG = 'uniremoval-app'


def build_arg_parser():
    parser = new_parser(PROG, 'Serve a local web page that restores uploaded images with the shipped demo network '
                        'or your checkpoint.', epilog='Exit status: 0 stopped, 2 usage error (e.g. gradio missing).')
    parser.add_argument('--host', default='127.0.0.1', help='address to listen on (default: 127.0.0.1, this '
                        'machine only)')
    parser.add_argument('--port', type=int, default=7860, help='port (default: 7860)')
    return parser


def _run(args):
    if not 0 < args.port < 65536:
        raise UsageError(f'--port must be in 1..65535, got {args.port}')
    try:
        from uniremoval.app.page import serve
    except ImportError as e:  # pragma: no cover (the extra is installed in tests)
        raise UsageError(f'{e}; install the extra: pip install "uniremoval[app]"') from e
    print(f'{PROG}: serving on http://{args.host}:{args.port} (Ctrl+C stops)', flush=True)
    serve(args.host, args.port)
    return 0


def main(argv=None):
    """Run the command; returns the exit status."""
    return run_command(_run, build_arg_parser().parse_args(argv), PROG)


if __name__ == '__main__':
    sys.exit(main())
