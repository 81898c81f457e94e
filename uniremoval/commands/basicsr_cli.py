"""The ``basicsr`` console script: ``basicsr train -opt ...`` and ``basicsr test -opt ...``.

Each subcommand takes BasicSR's own flags (``-opt``/``--opt``, ``--launcher``, ``--auto_resume``,
``--debug``, ``--force_yml``) and runs BasicSR's pipeline (:mod:`uniremoval.train`,
:mod:`uniremoval.test`) with the plugin registered, under the error policy of
:mod:`uniremoval.utils.errors`.
"""
import sys

from uniremoval.version import version_text

USAGE = """usage: basicsr {train,test} -opt OPTIONS.yml [--launcher {none,pytorch,slurm}] [--auto_resume]
                          [--debug] [--force_yml KEY:SUBKEY=VALUE ...]

BasicSR with the uniremoval plugin (MPRNet, Uni-Removal KT/DA, ADS) registered.
  train   train a model (experiments/<name>/ under the working directory)
  test    evaluate a model (results/<name>/ under the working directory)
Run 'basicsr train -h' for the flags."""


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ('-h', '--help'):
        print(USAGE)
        return 0 if argv else 2
    if argv[0] == '--version':
        print(version_text('basicsr'))
        return 0
    command, rest = argv[0], argv[1:]
    if command == 'train':
        from uniremoval.train import main as train_main  # imported on demand: it loads torch and BasicSR
        return train_main(rest, prog='basicsr train')
    if command == 'test':
        from uniremoval.test import main as test_main
        return test_main(rest, prog='basicsr test')
    print(f"basicsr: unknown command {command!r}; expected 'train' or 'test'\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == '__main__':
    sys.exit(main())
