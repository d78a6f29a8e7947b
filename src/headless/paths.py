"""Where the development data lives when no path is given: `$HEADLESS_SHARED_DATA`, else the
`shared/data` folder beside the current directory (the layout of ../shared/data/MANIFEST.md)."""

from __future__ import annotations

import os
from pathlib import Path


def shared_data_dir() -> Path:
    root = os.environ.get("HEADLESS_SHARED_DATA")
    return Path(root) if root else Path.cwd().parent / "shared" / "data"
