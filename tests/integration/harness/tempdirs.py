# SPDX-License-Identifier: Apache-2.0
"""Temporary directories that the harness creates and always removes.

pytest's own tmp_path keeps the last runs' directories under /tmp; the harness
uses its own so that a run leaves nothing behind. Set POPBRIDGE_KEEP_TMP=1 to
keep them for debugging (their paths are printed on removal instead).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

PREFIX = "popbridge-it-"

_live: set[str] = set()
_made: list[str] = []


def make(kind: str) -> str:
    path = tempfile.mkdtemp(prefix=f"{PREFIX}{kind}-")
    _live.add(path)
    _made.append(path)
    return path


def remove(path: str) -> None:
    _live.discard(path)
    if os.environ.get("POPBRIDGE_KEEP_TMP") == "1":
        print(f"[harness] keeping {path}", file=sys.stderr)
        return
    shutil.rmtree(path, ignore_errors=True)


def made() -> list[str]:
    """Every directory this process made (removed or not)."""
    return list(_made)


def live() -> set[str]:
    """Directories made and not yet removed (for the end-of-session leak check)."""
    return {p for p in _live if os.path.exists(p)}
