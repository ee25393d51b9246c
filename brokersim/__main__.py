"""`python -m brokersim [serve options]` starts the simulator; other subcommands work too."""

from __future__ import annotations

import sys

from brokersim.cli import app

if len(sys.argv) == 1 or (sys.argv[1].startswith("-") and sys.argv[1] not in {"--help", "-h"}):
    sys.argv.insert(1, "serve")
app(prog_name="brokersim")
