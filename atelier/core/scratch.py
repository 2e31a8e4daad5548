"""Scratch directories for work files too large for memory: under ATELIER_WORK_DIR when it is set.

A 20 GB ZIP finalize does not fit a container's /tmp (the writable layer, or a small tmpfs), so
compose mounts a volume for it and names it in ATELIER_WORK_DIR; unset, the system temporary
directory is used, as on a developer's machine. Nothing is kept between tasks (the next unit of the
same job may run on another host): each directory is removed when its `with` block ends.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from atelier.core.config import get_settings


def scratch_dir(prefix: str) -> tempfile.TemporaryDirectory:
    root = get_settings().work_dir
    if root:
        Path(root).mkdir(parents=True, exist_ok=True)
    return tempfile.TemporaryDirectory(prefix=prefix, dir=root)
