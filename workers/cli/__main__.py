"""`python -m workers.cli`: what the `vigil` script runs (worker processes are started this way)."""
import sys

from workers.cli import main

sys.exit(main())
