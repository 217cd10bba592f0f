"""First start as a new visitor sees it: seconds from launching `python app.py` until
(1) the server answers, (2) the page is usable (the Merge tab's YAML box is filled), and
(3) the first chat reply on the offline default appears, measured in real Chromium. Also
printed: the seconds from navigation (browser started) to a usable page, whether the
first-conversion progress note was on screen then, and when the parents panel was ready.

    python benchmarks/first_start.py [--cache DIR] [--repo DIR]

With a fresh --cache (the default: a new temporary folder) this is a first start on a
new machine; run it again with the same --cache for a warm start.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from testkit.app_process import app_process
from testkit.browser import launch_chromium


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cache", help="SLERP_ARENA_CACHE for the app (default: a fresh temporary folder)")
    parser.add_argument("--repo", default=str(Path(__file__).resolve().parent.parent))
    args = parser.parse_args()
    from playwright.sync_api import expect, sync_playwright

    cache = args.cache or tempfile.mkdtemp(prefix="first-start-cache-")
    started = time.time()
    with app_process(cache, Path(args.repo)) as (url, server), sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        navigated = time.time()
        page.goto(url)
        expect(page.get_by_text("merge_method").first).to_be_visible(timeout=300_000)
        usable = time.time() - started
        after_navigation = time.time() - navigated
        progress_note = page.get_by_text("Preparing the bundled SmolLM2").is_visible()
        expect(page.get_by_text("✅ compatible")).to_be_visible(timeout=300_000)
        parents = time.time() - started
        page.get_by_role("tab", name="Chat").click()
        page.get_by_label("Message").fill("What is the capital of France?")
        page.get_by_role("button", name="Send").click()
        expect(page.locator(".message.bot").filter(has_text="Paris").first).to_be_visible(timeout=300_000)
        reply = time.time() - started
        browser.close()
    print(f"cache={cache} server_s={server:.1f} page_usable_s={usable:.1f} (navigation to usable {after_navigation:.1f} s, "
          f"conversion note shown: {progress_note}) parents_ready_s={parents:.1f} first_reply_s={reply:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
