"""python -m arena VOTES.sqlite [--config HASH] [--include-flagged]: the results of a votes file."""

import sys

from arena.ratings import main

sys.exit(main())
