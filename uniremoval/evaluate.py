"""``python -m uniremoval.evaluate``: the same as ``uniremoval-evaluate`` (:mod:`uniremoval.commands.evaluate`)."""
import sys

from uniremoval.commands.evaluate import main

if __name__ == '__main__':
    sys.exit(main())
