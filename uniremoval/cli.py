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


def run_reporting_errors(pipeline, argv, prog):
    """Run ``pipeline(argv)``; report the errors a user can fix in one line, without a traceback.

    Returns the exit status: 0 on success, 2 for an invalid option file or data
    (:class:`~uniremoval.options.OptionsError`), a checkpoint refused by ``torch.load(weights_only=True)``
    or one that does not fit the network (:class:`~uniremoval.utils.state_dict_check.StateDictMismatchError`),
    1 when training stopped on a NaN / inf loss
    (:class:`~uniremoval.models.model_mixins.NonFiniteLossError`). Other errors propagate with their traceback.
    """
    import pickle

    from uniremoval.models.model_mixins import NonFiniteLossError
    from uniremoval.options import OptionsError
    try:
        pipeline(argv)
    except OptionsError as e:
        print(f'{prog}: error: {e}', file=sys.stderr)
        return 2
    except NonFiniteLossError as e:
        print(f'{prog}: error: {e}', file=sys.stderr)
        return 1
    except RuntimeError as e:
        from uniremoval.utils.state_dict_check import StateDictMismatchError
        if not isinstance(e, StateDictMismatchError) and not isinstance(e.__cause__, pickle.UnpicklingError):
            raise
        print(f'{prog}: error: {e}', file=sys.stderr)  # a checkpoint that would run code, or not a checkpoint
        return 2
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ('-h', '--help'):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == 'train':
        from uniremoval.train import train_pipeline
        return run_reporting_errors(train_pipeline, rest, 'basicsr train')
    if command == 'test':
        from uniremoval.test import test_pipeline
        return run_reporting_errors(test_pipeline, rest, 'basicsr test')
    print(f"basicsr: unknown command {command!r}; expected 'train' or 'test'\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == '__main__':
    sys.exit(main())
