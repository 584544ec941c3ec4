"""``python -m crelu.analysis ...``: see :mod:`crelu.analysis.cli`."""

import sys

from crelu.analysis.cli import main

if __name__ == "__main__":
    sys.exit(main())
