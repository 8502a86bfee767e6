"""The ``ipvsproxy`` command's entry point, and ``python -m ipvsproxy``."""

import sys


def main() -> int:
    """Run the command line. Modules are found through directory listings read once
    (see listed_finder), from the first of them on: the command line's own."""
    from ipvsproxy import listed_finder

    listed_finder.install()
    from ipvsproxy.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
