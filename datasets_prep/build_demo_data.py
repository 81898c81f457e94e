#!/usr/bin/env python
"""Build the embedded haze/rain/blur demo dataset from photos bundled with installed packages.

    python datasets_prep/build_demo_data.py --out datasets/demo [--seed 0] [--overwrite]

The builder lives in :mod:`uniremoval.demo.data` (the demo pipeline imports it); this is its
command line, as is ``python -m uniremoval.demo.data``. Run ``--help`` for the options.
"""
import sys

from uniremoval.demo.data import main

if __name__ == '__main__':
    sys.exit(main())
