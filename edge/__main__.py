import sys

from edge.cli import main

if __name__ == "__main__":  # not when a spawned worker (edge.diagnostics.budget) imports it as __mp_main__
    sys.exit(main())
