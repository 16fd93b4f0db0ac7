"""Debian's Chromium and chromedriver for the tests that drive a real browser (OBS-04).

`ensure_chromium()` installs them with apt when missing (the base image has neither),
as `fleet` does for iptables; the test drives them with selenium (a dev dependency).
`chromium_arguments()` are the flags a headless browser needs here: root (no sandbox), a
small /dev/shm, no GPU.
"""

from __future__ import annotations

import shutil
import subprocess

__all__ = ["CHROMEDRIVER", "CHROMIUM", "chromium_arguments", "ensure_chromium"]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
_PACKAGES = ("chromium", "chromium-driver")


def ensure_chromium() -> None:
    """Install Debian's chromium and chromium-driver when either is missing."""
    if shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER):
        return
    install = ["apt-get", "install", "-y", "--no-install-recommends", *_PACKAGES]
    if subprocess.run(install, check=False, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update"], check=True, capture_output=True)
        subprocess.run(install, check=True, capture_output=True)


def chromium_arguments(width: int = 1400, height: int = 1000) -> list[str]:
    return [
        "--headless=new",
        "--no-sandbox",  # tests run as root, where Chromium's sandbox refuses to start
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        f"--window-size={width},{height}",
    ]
