"""`python tests/vmlab build` builds the VM image ahead; `python tests/vmlab run SCRIPT [FILE...]` runs a script."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vmlab import main

sys.exit(main(sys.argv[1:]))
