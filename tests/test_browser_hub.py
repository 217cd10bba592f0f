"""Hub parents in Debian's Chromium, through the Hub-protocol server (testkit/hub_server.py)
that the app, launched as `python app.py` with HF_ENDPOINT pointed at it, downloads from:
a gated parent is refused in its pane with one line that says what to do, and a slow
download shows its progress (MB, MB/s, time left) in its pane's load line until the reply
comes. Screenshots go to artifacts/."""


import re

import pytest
from conftest import ARTIFACTS
from playwright.sync_api import expect, sync_playwright

from core.sources import cache_root
from testkit.app_process import app_process
from testkit.browser import launch_chromium
from testkit.hub_server import HubServer

pytestmark = pytest.mark.browser


@pytest.fixture
def hub_page(tiny_models, tmp_path):
    with HubServer() as hub:
        hub.add("org/gated", tiny_models("qwen2", 1), gated_for={"hf_granted"})
        hub.add("org/slow", tiny_models("qwen2", 2, hidden=256), bytes_per_s=0.8e6)  # 5 MB: about 6 s
        hub.add("org/slow-b", tiny_models("qwen2", 3, hidden=256), bytes_per_s=0.8e6)
        env = {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_DISABLE_XET": "1", "HF_HUB_OFFLINE": "0",
               "HF_TOKEN": ""}
        with app_process(str(cache_root()), env=env, log=ARTIFACTS / "hub-app.log") as (url, _), sync_playwright() as p:
            browser = launch_chromium(p)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(60_000)
            page.goto(url)
            try:
                yield page, hub
            finally:
                page.screenshot(path=str(ARTIFACTS / "hub-last.png"))
                browser.close()


def test_a_gated_parent_is_refused_in_one_line_and_a_download_shows_its_progress(hub_page):
    page, _ = hub_page
    page.get_by_role("tab", name="Chat").click()
    page.get_by_text("Models: merged folder, parents, precision, panes on/off").click()
    expect(page.locator("#chat-merged textarea")).not_to_have_value("", timeout=60_000)  # the page's load is done
    page.get_by_label("Merged on").uncheck()
    page.locator("#chat-parent-a textarea").fill("org/gated")
    page.locator("#chat-parent-b textarea").fill("org/slow")
    expect(page.locator("#chat-parent-b textarea")).to_have_value("org/slow")
    page.get_by_text("Models: merged folder, parents, precision, panes on/off").click()
    page.locator("#chat-message textarea").fill("hello")
    page.get_by_role("button", name="Send", exact=True).click()
    progress = page.locator("#chat-panes").get_by_text("MB downloaded")
    expect(progress).to_contain_text("loading org/slow (bf16):", timeout=60_000)
    expect(progress).to_have_text(re.compile(r"loading org/slow \(bf16\): [1-4] of 5 MB downloaded, 0\.[1-9] MB/s, about \d+ s left"))
    page.screenshot(path=str(ARTIFACTS / "hub-download-progress.png"))
    gated = page.locator("#chat-panes").get_by_text("is gated")
    expect(gated).to_have_text("⚠️ model: 'org/gated' is gated: only accounts granted access may download it — accept its license "
                               "at https://huggingface.co/org/gated, then log in with hf auth login or set HF_TOKEN")  # `code` rendered
    expect(page.locator("#chat-panes").get_by_text("tok/s")).to_have_count(1, timeout=120_000)  # the slow parent answered
    page.screenshot(path=str(ARTIFACTS / "hub-gated-refused.png"))
    assert page.locator(".toast-body").count() == 0


def test_a_merge_of_hub_parents_shows_their_download_and_cancel_stops_it(hub_page):
    """The Plan of two Hub parents, from their headers: it names the download and the disk,
    and downloads no weight. The Merge tab's panel while the parents download, both at once,
    and the merge follows them (MB, MB/s, time left, tensors merged, on one line); Cancel
    ends it as a cancelled merge; the next Merge fetches the rest and merges."""
    page, hub = hub_page
    plan = page.get_by_role("button", name="Plan (dry run)")
    expect(page.get_by_text("✅ compatible")).to_be_visible(timeout=60_000)
    page.get_by_label("Parent B (t = 1)").fill("org/missing")  # a typo'd Hub id: one line where the plan would be
    page.get_by_label("Parent B (t = 1)").press("Enter")
    missing = page.get_by_text(re.compile(r"⚠️? ?model: 'org/missing' was not found, or it is private or gated — check the id"))
    expect(missing).to_have_count(1, timeout=60_000)  # the parents panel says it at once
    plan.click()
    expect(missing).to_have_count(2, timeout=60_000)  # and the plan, in the same line
    missing.last.scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "hub-plan-missing-repo.png"))
    for label, name in (("Parent A (base_model, t = 0)", "org/slow"), ("Parent B (t = 1)", "org/slow-b")):
        page.get_by_label(label).fill(name)
        page.get_by_label(label).press("Enter")
    expect(page.get_by_text("Parent B: org/slow-b")).to_be_visible(timeout=60_000)
    expect(page.get_by_text("✅ compatible")).to_be_visible(timeout=60_000)  # read from each config.json alone
    plan.click()
    disk = page.get_by_text(re.compile(r"disk: 10 MB of parents to download \(0 MB here already\) and 5 MB of output"))
    expect(disk).to_be_visible(timeout=60_000)
    disk.scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "hub-plan-from-headers.png"))
    weights = [r for r in hub.requests if r[0] == "GET" and r[1].endswith(".safetensors")]
    assert weights and all(r[2] == "bytes=0-65535" for r in weights)  # each shard's header, in one range request
    page.get_by_label("Output name (under outputs/)").fill("hub-merge")
    page.get_by_role("button", name="Merge", exact=True).click()
    line = page.get_by_text(re.compile(r"Downloading the parents · [1-8] of 10 MB downloaded, [0-9.]+ MB/s, about \d+ s left · "
                                       r"merged \d+/\d+ tensors · \d+ MB written")).first
    expect(line).to_be_visible(timeout=60_000)
    line.scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "hub-merge-download-progress.png"))
    page.get_by_role("button", name="Cancel", exact=True).click()
    expect(page.get_by_text("Cancelled — nothing was written")).to_be_visible(timeout=30_000)
    page.get_by_role("button", name="Merge", exact=True).click()
    expect(page.get_by_text("Merged into")).to_be_visible(timeout=180_000)
    page.get_by_text("Merged into").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "hub-merge-done.png"))
    assert page.locator(".toast-body").count() == 0
