"""`python -m agent` is `prepull-agent`."""

import sys

from agent.cli import main

sys.exit(main())
