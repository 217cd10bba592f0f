"""Sign in with Hugging Face in Debian's Chromium: Gradio's own LoginButton, routes and
session cookie, in the local stand-in Gradio runs for Hugging Face's OAuth server
(SLERP_ARENA_SIGN_IN=1; on a Space, `hf_oauth: true` turns on the real one). The stand-in
signs in as the machine's own HF login, here the Space's token "hf_owner", whose account the
Hub-protocol server (testkit/hub_server.py) names "owner", and hands the page Gradio's mock
OAuth token. Only that token was granted the gated parent: what downloads after sign-in
was fetched with the visitor's token, not the Space's. A merge made before signing in (which
reloads the page) is still in the Merge tab after it. Screenshots go to artifacts/."""

import re

import pytest
from conftest import ARTIFACTS
from helpers import choose_parents
from playwright.sync_api import expect, sync_playwright

from core.sources import cache_root
from testkit.app_process import app_process
from testkit.browser import launch_chromium
from testkit.hub_server import HubServer

pytestmark = pytest.mark.browser

VISITOR_TOKEN = "mock-oauth-token-for-local-dev"  # what Gradio's stand-in puts in a signed-in session
MODELS = "Models: merged folder, parents, precision, panes on/off"
GATED_LINE = ("⚠️ model: 'org/gated' is gated: only accounts granted access may download it — accept its license at "
              "https://huggingface.co/org/gated, then sign in with Hugging Face (the button at the top of the page)")


def ask_gated(page) -> None:
    """Parent A on the gated repo, the other panes off, and a message."""
    page.get_by_role("tab", name="Chat").click()
    page.get_by_text(MODELS).click()
    expect(page.locator("#chat-merged textarea")).not_to_have_value("", timeout=60_000)  # the page's load is done
    page.get_by_label("Merged on").uncheck()
    page.get_by_label("Parent B on").uncheck()
    page.locator("#chat-parent-a textarea").fill("org/gated")
    expect(page.locator("#chat-parent-a textarea")).to_have_value("org/gated")
    page.get_by_text(MODELS).click()
    page.locator("#chat-message textarea").fill("hello")
    page.get_by_role("button", name="Send", exact=True).click()
    expect(page.locator("#chat-message textarea")).to_have_value("")  # taken


def merge_before_sign_in(page, a: str, b: str) -> None:
    choose_parents(page, a, b)
    page.get_by_label("Output name (under outputs/)").fill("before-sign-in")
    page.get_by_role("button", name="Merge", exact=True).click()
    expect(page.get_by_text("Merged into")).to_be_visible(timeout=60_000)


def test_a_gated_parent_downloads_for_the_visitor_who_signed_in_and_no_one_else(tiny_models, tmp_path):
    with HubServer() as hub:
        hub.users["hf_owner"] = "owner"
        hub.add("org/gated", tiny_models("qwen2", 1), gated_for={VISITOR_TOKEN})
        env = {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_DISABLE_XET": "1", "HF_HUB_OFFLINE": "0",
               "HF_TOKEN": "hf_owner", "SLERP_ARENA_SIGN_IN": "1"}
        with app_process(str(cache_root()), env=env, log=ARTIFACTS / "sign-in-app.log") as (url, _), sync_playwright() as p:
            browser = launch_chromium(p)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(60_000)
            try:
                page.goto(url)
                expect(page.locator("#signed-in")).to_contain_text("Not signed in")
                merge_before_sign_in(page, str(tiny_models("llama", 1)), str(tiny_models("llama", 2)))
                ask_gated(page)  # not signed in: downloads as the Space does, whose own token has no access
                expect(page.locator("#chat-panes").get_by_text("is gated")).to_have_text(GATED_LINE)
                expect(page.locator("#chat-message textarea")).to_have_value("hello")  # no pane took it: back in the box
                page.screenshot(path=str(ARTIFACTS / "sign-in-gated-refused.png"))

                page.get_by_role("button", name="Sign in with Hugging Face").click()
                expect(page.locator("#signed-in")).to_contain_text("Signed in as owner")
                expect(page.get_by_role("button", name="Logout (owner)")).to_be_visible()
                # Signing in reloaded the page: the merge made before is still this visitor's.
                page.get_by_role("tab", name="Merge").click()
                expect(page.get_by_text("Your latest merge: before-sign-in")).to_be_visible(timeout=30_000)
                expect(page.get_by_label("Output folder")).to_have_value(re.compile(r"/before-sign-in$"))
                page.screenshot(path=str(ARTIFACTS / "sign-in-merge-kept.png"))
                page.get_by_role("button", name="Chat with this merge").click()
                page.get_by_text(MODELS).click()
                expect(page.locator("#chat-merged textarea")).to_have_value(re.compile(r"/before-sign-in$"))
                expect(page.locator("#chat-parent-a textarea")).to_have_value(str(tiny_models("llama", 1)))
                page.get_by_text(MODELS).click()
                ask_gated(page)
                expect(page.locator("#chat-panes").get_by_text("tok/s")).to_have_count(1, timeout=120_000)
                expect(page.locator("#chat-panes").get_by_text("is gated")).to_have_count(0)
                page.screenshot(path=str(ARTIFACTS / "sign-in-downloaded.png"))
                assert any(method == "GET" and "/org/gated/resolve/" in path for method, path, _ in hub.requests)

                # Another visitor, not signed in: the model is in the app's memory and cache, and still refused.
                other = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
                other.set_default_timeout(60_000)
                other.goto(url)
                expect(other.locator("#signed-in")).to_contain_text("Not signed in")
                ask_gated(other)
                expect(other.locator("#chat-panes").get_by_text("is gated")).to_have_text(GATED_LINE)
                expect(other.locator("#chat-panes").get_by_text("tok/s")).to_have_count(0)
                expect(other.locator("#chat-message textarea")).to_have_value("hello")
                other.screenshot(path=str(ARTIFACTS / "sign-in-other-visitor-refused.png"))
            finally:
                page.screenshot(path=str(ARTIFACTS / "sign-in-last.png"))
                browser.close()
