"""The smoothlive App for granian's command line (used by http_stack.py only)."""

import os
from pathlib import Path

from smoothlive.config import ServerConfig
from smoothlive.http.app import App

app = App(ServerConfig(root=Path(os.environ["SMOOTHLIVE_ROOT"]),
                       state_dir=Path(os.environ["SMOOTHLIVE_STATE_DIR"])))
