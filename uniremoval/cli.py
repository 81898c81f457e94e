"""The ``basicsr`` console script: ``basicsr train -opt ...`` and ``basicsr test -opt ...``.

Each subcommand takes BasicSR's own flags (``-opt``, ``--launcher``, ``--auto_resume``, ``--debug``,
``--force_yml``) and runs BasicSR's pipeline with the uniremoval plugin registered.
"""
import sys

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
    command, rest = argv[0], argv[1:]
    if command == 'train':
        from uniremoval.train import train_pipeline
        train_pipeline(rest)
    elif command == 'test':
        from uniremoval.test import test_pipeline
        test_pipeline(rest)
    else:
        print(f"basicsr: unknown command {command!r}; expected 'train' or 'test'\n\n{USAGE}", file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
