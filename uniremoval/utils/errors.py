"""How every command ends: the one policy from an error to a message and an exit status.

A command's errors fall in two families, told apart by class, not by message:

- :class:`UsageError` (exit 2): something the user can fix before running again, an option file, a flag,
  a path, a checkpoint that is refused or does not fit the network, data that fail the checks. The
  project's own error classes (``OptionsError``, ``SetupError``, ``DataCheckError``, ...) derive from it,
  beside the built-in class they have always been (``ValueError``, ``RuntimeError``), so existing
  ``except`` clauses keep working.
- :class:`RunFailure` (exit 1): a run that started and could not finish (e.g. a NaN / inf loss).

:func:`run_command` prints either as ``<prog>: error: <message>`` on one line, without a traceback.
Anything else is a bug and propagates with its traceback.
"""
import errno
import sys

USAGE_STATUS = 2
FAILURE_STATUS = 1
PATH_ERRNOS = (errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EACCES, errno.EPERM, errno.ENAMETOOLONG)


class UsageError(Exception):
    """An error the user can fix (bad option, flag, path, checkpoint or data): exit status 2."""


class RunFailure(Exception):
    """A run that started and could not finish: exit status 1."""


def exit_status(error, usage=()):
    """The exit status the policy gives ``error``, or ``None`` for an error that is a bug.

    ``usage``: built-in exception classes that a command declares to be usage errors in its context
    (the ADS commands: the ``ValueError`` a mask file or network that does not fit raises).
    """
    if isinstance(error, UsageError) or isinstance(error, tuple(usage)):
        return USAGE_STATUS
    if isinstance(error, RunFailure):
        return FAILURE_STATUS
    if isinstance(error, OSError) and error.filename is not None and error.errno in PATH_ERRNOS:
        return USAGE_STATUS  # a path given that does not exist or may not be used; a full disk is no usage error
    return None


def report_error(prog, error):
    """Print ``error`` as the one line a user reads: ``<prog>: error: <message>``."""
    print(f'{prog}: error: {error}', file=sys.stderr)


def run_command(func, argv, prog, usage=()):
    """Run ``func(argv)`` under the policy; returns the exit status.

    ``func`` returns its own exit status as an ``int``, or anything else for success (0). A :class:`UsageError`, a
    :class:`RunFailure` or an ``OSError`` naming a file is reported in one line; any other exception
    propagates; ``usage`` as in :func:`exit_status`.
    """
    try:
        status = func(argv)
    except Exception as e:  # noqa: BLE001  (classified below; the rest re-raised)
        status = exit_status(e, usage)
        if status is None:
            raise
        report_error(prog, e)
        return status
    return status if isinstance(status, int) and not isinstance(status, bool) else 0
