"""`python -m bench --size-gb 1 [--json FILE]`: see bench/run.py."""

import sys

from bench.run import main

sys.exit(main(sys.argv[1:]))
