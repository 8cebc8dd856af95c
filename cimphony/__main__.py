"""``python -m cimphony``: the ``cimphony`` command."""
import sys

from cimphony.cli import main

sys.exit(main())
