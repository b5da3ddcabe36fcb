"""`python -m spendgate.cli`: the same as the `spendgate` console script."""

import sys

from spendgate.cli import main

sys.exit(main())
