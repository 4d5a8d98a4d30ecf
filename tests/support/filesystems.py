"""A small filesystem a test mounts (tmpfs, as root): a disk that fills up for real."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path


def mount_tiny(size: str = "64k") -> Path:
    # Outside pytest's tmp_path (mode 0700): the database server's own user reaches it too.
    folder = Path(tempfile.mkdtemp(prefix="tradebot-tiny-"))
    os.chmod(folder, 0o755)  # noqa: S103  (a mount point, readable by design)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0777", "tmpfs", str(folder)], check=True)
    return folder


def unmount(folder: Path) -> None:
    subprocess.run(["umount", "-l", str(folder)], check=False)
    folder.rmdir()
