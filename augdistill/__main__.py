"""``python -m augdistill`` runs the command line."""

import sys

from augdistill.cli import main

sys.exit(main())
