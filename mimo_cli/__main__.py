"""`python -m mimo_cli <command>` (torchrun: `torchrun ... -m mimo_cli stage2 ...`), the same as `mimo`."""

import sys

from mimo_cli.main import main

sys.exit(main())
