"""`python -m iggy_fast.cli`: the `iggy-fast` command."""

import sys

from iggy_fast.cli import main

sys.exit(main())
