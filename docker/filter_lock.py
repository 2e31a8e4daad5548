"""Print a hashed lock file without the named packages (shell-style patterns): `python filter_lock.py
worker.lock torch triton 'nvidia-*'`. The worker image uses it when torch comes from another index."""

from __future__ import annotations

import fnmatch
import re
import sys


def without(text: str, patterns: list[str]) -> str:
    # A requirement starts at column 0; its hash and `# via` lines are indented beneath it.
    blocks = re.split(r"\n(?=\S)", text)
    name = lambda block: re.split(r"[=<>\[ ;]", block, maxsplit=1)[0]  # noqa: E731
    keep = [b for b in blocks if not any(fnmatch.fnmatch(name(b), p) for p in patterns)]
    return "\n".join(keep)


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        sys.stdout.write(without(f.read(), sys.argv[2:]))
