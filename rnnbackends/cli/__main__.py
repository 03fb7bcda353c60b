"""``python -m rnnbackends.cli``: the same as the ``rnnbackends`` console script."""
import sys

from . import main

sys.exit(main())
