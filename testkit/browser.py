"""Debian's Chromium, driven by Playwright without its browser download, for the browser
tests and the first-start benchmark; and a free port on loopback for the servers they start."""

from __future__ import annotations

import shutil
import socket

# Headless and quiet: without the background-networking flags Chromium's connections are
# refused by a closed network, many at a time.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


def chromium_path() -> str:
    return shutil.which("chromium") or "/usr/bin/chromium"


def launch_chromium(playwright):
    return playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
