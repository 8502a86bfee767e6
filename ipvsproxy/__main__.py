"""``python -m ipvsproxy``: the same as the ``ipvsproxy`` command."""

import sys

from ipvsproxy.cli import main

if __name__ == "__main__":
    sys.exit(main())
