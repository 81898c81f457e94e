#!/usr/bin/env python
"""Build the embedded haze/rain/blur demo dataset from photos bundled with installed packages.

    python datasets_prep/build_demo_data.py --out datasets/demo [--seed 0] [--overwrite]

The builder lives in :mod:`uniremoval.data.demo_data` (the demo pipeline imports it); this is its
command line. Run ``--help`` for the options.
"""
import sys

from uniremoval.data.demo_data import main

if __name__ == '__main__':
    sys.exit(main())
