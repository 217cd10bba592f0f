"""The app as a public Space sees it, in Debian's Chromium: `python app.py` with SPACE_ID
set and the Space's default parents (Qwen2.5-0.5B-Instruct and Qwen2.5-0.5B, tiny stand-ins
here) on the Hub-protocol server. The first screen offers no demo-parent build and shows
no server path; a server path typed as a parent is refused in one line that says what to
do; the Chat tab leaves another visitor's merge alone and merges the defaults instead.
Screenshots go to artifacts/."""

import re

import pytest
from conftest import ARTIFACTS
from helpers import tiny_yaml
from playwright.sync_api import expect, sync_playwright

from core.sources import cache_root
from testkit.app_process import app_process
from testkit.browser import launch_chromium
from testkit.hub_server import HubServer

pytestmark = pytest.mark.browser
SERVER_PATH = re.compile(r"/tmp/|/root/|/home/|/work/|site-packages|outputs/[\w-]+/")


def no_server_path(page) -> None:
    text = page.inner_text("body")
    assert not SERVER_PATH.search(text), SERVER_PATH.search(text)


def test_a_space_visitor_sees_no_server_path_no_build_and_no_other_visitor_s_merge(tiny_models, tmp_path):
    outputs = tmp_path / "outputs"
    neighbour = outputs / "someone-elses-merge"  # another visitor's merge, newer than anything of this one's
    neighbour.mkdir(parents=True)
    (neighbour / "mergekit_config.yml").write_text(tiny_yaml(str(tiny_models("qwen2", 5)), str(tiny_models("qwen2", 6))))
    with HubServer() as hub:
        hub.add("Qwen/Qwen2.5-0.5B-Instruct", tiny_models("qwen2", 1))
        hub.add("Qwen/Qwen2.5-0.5B", tiny_models("qwen2", 2))
        env = {"SPACE_ID": "someone/slerp-arena", "SLERP_ARENA_OUTPUTS": str(outputs), "HF_ENDPOINT": hub.url,
               "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_DISABLE_XET": "1", "HF_HUB_OFFLINE": "0", "HF_TOKEN": ""}
        with app_process(str(cache_root()), env=env, log=ARTIFACTS / "space-app.log") as (url, _), sync_playwright() as p:
            browser = launch_chromium(p)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(60_000)
            page.goto(url)
            expect(page.get_by_text("✅ compatible")).to_be_visible(timeout=60_000)
            expect(page.get_by_text("Qwen/Qwen2.5-0.5B-Instruct").first).to_be_visible()
            assert page.get_by_role("button", name="Build demo parent").count() == 0  # no build on a Space
            no_server_path(page)
            page.screenshot(path=str(ARTIFACTS / "space-first-screen.png"))

            box = page.get_by_label("Parent A (base_model, t = 0)")
            box.fill("/etc")
            box.press("Enter")
            refusal = "'/etc' is outside the folders this app may use — use a Hub id or a path under models/"
            expect(page.get_by_text(refusal).first).to_be_visible(timeout=30_000)
            page.get_by_role("button", name="Merge", exact=True).click()
            expect(page.get_by_text("Merge failed")).to_be_visible(timeout=30_000)
            no_server_path(page)
            assert page.locator(".toast-body").count() == 0
            page.screenshot(path=str(ARTIFACTS / "space-refused-merge.png"), full_page=True)

            page.get_by_role("tab", name="Chat").click()  # the first chat merges the defaults; the neighbour's merge stays theirs
            page.get_by_text("Models: merged folder, parents, precision, panes on/off").click()
            expect(page.locator("#chat-merged textarea")).to_have_value(re.compile(r"demo-merge$"), timeout=120_000)
            expect(page.locator("#chat-parent-a textarea")).to_have_value("Qwen/Qwen2.5-0.5B-Instruct")
            page.get_by_text("Models: merged folder, parents, precision, panes on/off").click()
            page.locator("#chat-message textarea").fill("hello")
            page.get_by_role("button", name="Send", exact=True).click()
            expect(page.locator("#chat-panes").get_by_text("tok/s")).to_have_count(3, timeout=120_000)
            assert "someone-elses-merge" not in page.inner_text("body") and page.locator(".toast-body").count() == 0
            page.screenshot(path=str(ARTIFACTS / "space-first-chat.png"))
            browser.close()
