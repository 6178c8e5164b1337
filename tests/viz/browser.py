"""Finds a headless Chromium for the HTML explorer tests, installing Debian's package only when asked.

Set ``QKV_INSTALL_BROWSER=1`` to let :func:`find_chromium` run ``apt-get install -y chromium`` when no
browser is found, the process runs as root and ``apt-get`` exists (as in CI). Otherwise it only looks.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
_reason = ""


def _existing() -> str | None:
    for path in CANDIDATES:
        if Path(path).is_file() and os.access(path, os.X_OK):
            return path
    return shutil.which("chromium")


def find_chromium() -> str | None:
    """Path of a Chromium binary, or ``None`` (then :func:`skip_reason` says why)."""
    global _reason
    found = _existing()
    if found:
        return found
    apt = shutil.which("apt-get")
    if os.environ.get("QKV_INSTALL_BROWSER") != "1":
        _reason = "no chromium found; set QKV_INSTALL_BROWSER=1 (as root, with apt-get) to install Debian's"
        return None
    if os.geteuid() != 0 or apt is None:
        _reason = f"no chromium found and cannot install it (root: {os.geteuid() == 0}, apt-get: {apt})"
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        subprocess.run([apt, "update", "-qq"], check=True, capture_output=True, timeout=300, env=env)
        subprocess.run([apt, "install", "-y", "-qq", "chromium"], check=True, capture_output=True, timeout=600, env=env)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:
        tail = (getattr(err, "stderr", b"") or b"")[-300:].decode(errors="replace")
        _reason = f"apt-get install chromium failed: {err} {tail}"
        return None
    found = _existing()
    _reason = "" if found else "apt-get installed chromium but no binary was found"
    return found


def skip_reason() -> str:
    """Why :func:`find_chromium` returned ``None``."""
    return _reason
