"""First run in Debian's Chromium: on a fresh app (no merge, no demo parent) the Merge tab
says prominently that the demo parent is not built, and opening the Chat tab merges the
defaults and fills the merged model. Screenshots go to artifacts/."""

import re
import time

import pytest
from conftest import ARTIFACTS
from helpers import pane_messages, set_max_new_tokens
from playwright.sync_api import expect

from core import places
from evaluation import defaults, demo_build
from evaluation.reply_quality import in_persona
from ui import merge_tab


@pytest.fixture
def no_demo_parent(monkeypatch):
    """A machine where the demo parent was never built (another test may have built it)."""
    monkeypatch.setattr(defaults, "built_demo_parent", lambda: None)


def test_a_fresh_app_says_to_build_the_demo_parent_and_the_chat_tab_merges_the_defaults(no_demo_parent, browser_page, smollm2_dir):
    page = browser_page
    expect(page.get_by_text("✅ compatible")).to_be_visible(timeout=60_000)
    notice = page.locator("#demo-notice")
    expect(notice).to_contain_text("The demo parent is not built yet")
    expect(page.get_by_role("button", name="Build demo parent")).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "merge-tab-demo-parent-missing.png"))

    page.get_by_role("tab", name="Chat").click()
    expect(page.locator("#first-chat-notice")).to_contain_text("the original SmolLM2 with itself, so the three panes are one model",
                                                               timeout=120_000)
    page.get_by_text("Models: merged folder, parents, precision, panes on/off").click()
    expect(page.locator("#chat-merged textarea")).to_have_value(str(places.outputs_root() / "demo-merge"))
    expect(page.get_by_text("Error", exact=True)).to_have_count(0)
    page.screenshot(path=str(ARTIFACTS / "chat-tab-first-run.png"), full_page=True)
    assert (places.outputs_root() / "demo-merge" / "mergekit_config.yml").is_file()


def test_with_the_demo_parent_the_first_message_gets_three_different_replies(demo_parent, browser_page):
    """The offline demo as a first visitor sees it: open Chat, ask, and the merge, the
    original and the pirate answer differently to a suggested prompt (no merge made by hand,
    no stale hint); one click leads from the chat to the t-sweep."""
    page = browser_page
    expect(page.locator("#demo-notice")).to_contain_text("Demo parent built", timeout=60_000)
    page.get_by_role("tab", name="Chat").click()
    expect(page.locator("#first-chat-notice")).to_contain_text("demo-merge", timeout=120_000)
    expect(page.get_by_text("No merged model yet")).to_have_count(0)
    page.locator("#chat-examples").get_by_text("What is the capital of France?").click()  # a suggestion fills the box
    expect(page.locator("#chat-message textarea")).to_have_value("What is the capital of France?")
    page.get_by_role("button", name="Send").click()
    expect(page.locator(".message.bot")).to_have_count(3, timeout=60_000)
    expect(page.locator("#chat-panes").get_by_text("tok/s")).to_have_count(3, timeout=240_000)
    # Read once the round has ended (Regenerate on again): a CI run read a fourth bubble, the
    # "Loading content" dots the step after the stream showed under the finished replies.
    expect(page.get_by_role("button", name="Regenerate")).to_be_enabled(timeout=60_000)
    expect(page.locator(".message.bot")).to_have_count(3)
    expect(page.locator("#chat-panes").get_by_text("Loading content")).to_have_count(0)
    replies = page.locator(".message.bot").all_inner_texts()
    page.screenshot(path=str(ARTIFACTS / "chat-first-message-demo.png"), full_page=True)
    assert len(set(replies)) == 3, replies
    assert in_persona(replies[2]) and not in_persona(replies[1]), replies  # B is the pirate, A the original
    page.locator("#to-t-sweep").click()  # the whole blend along t, one click from the chat
    expect(page.get_by_role("tab", name="Merge")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#t-sweep")).to_be_in_viewport(timeout=10_000)
    page.screenshot(path=str(ARTIFACTS / "chat-to-t-sweep.png"))


def test_the_demo_build_runs_in_the_background_with_its_own_line_and_the_form_stays_usable(no_demo_parent, browser_page,
                                                                                          smollm2_dir, monkeypatch):
    def slow_build(base, on_progress):  # the real one takes minutes; its own test is in test_builds.py
        for stage, steps in (("teacher answers", 4), ("fine-tuning", 400)):
            for step in range(1, steps + 1):
                time.sleep(0.1)
                on_progress(stage, step, steps)
        raise AssertionError("not cancelled")

    monkeypatch.setattr(demo_build, "build_demo_parent", slow_build)
    page = browser_page
    expect(page.get_by_text("✅ compatible")).to_be_visible(timeout=60_000)
    build = page.get_by_role("button", name="Build demo parent")
    build.click()
    line = page.locator("#demo-build-line")
    expect(line).to_contain_text(re.compile(r"⏳ Building the demo parent: fine-tuning \d+/400 · .* about .* left"), timeout=20_000)
    expect(build).to_be_disabled()
    # The form is not covered and answers: a t field takes an edit, and the YAML follows it.
    attn = page.get_by_label("t gradient for self_attn")
    attn.fill("0, 0.25, 1")
    expect(page.locator(".cm-content")).to_contain_text("0.25", timeout=10_000)
    assert page.get_by_text(re.compile(r"processing")).count() == 0, "a progress overlay covers the form"
    expect(page.locator("#demo-notice")).to_contain_text("The demo parent is not built yet")
    page.screenshot(path=str(ARTIFACTS / "demo-build-in-progress.png"))
    page.get_by_role("button", name="Cancel build").click()
    expect(line).to_contain_text("⏹ Build cancelled — nothing was saved", timeout=10_000)
    expect(build).to_be_enabled()


def test_a_message_sent_while_the_first_chat_merges_is_answered_in_all_three_panes(no_demo_parent, browser_page, smollm2_dir,
                                                                                  monkeypatch):
    """Seen in a walkthrough: a first visitor who pressed Send before the first-chat merge had
    filled the Merged field got no reply in the Merged pane, which joined at the next
    message without the first. Now the message waits for the merge, and the pane says so."""
    merge = merge_tab.merge

    def slow_merge(*args, **kwargs):  # a bigger default pair, or a busy host: Send lands during it
        time.sleep(5)
        return merge(*args, **kwargs)

    monkeypatch.setattr(merge_tab, "merge", slow_merge)
    page = browser_page
    expect(page.get_by_text("✅ compatible")).to_be_visible(timeout=60_000)
    page.get_by_role("tab", name="Chat").click()
    expect(page.locator("#first-chat-notice")).to_contain_text("First chat: merging the default pair")
    set_max_new_tokens(page, 16)
    page.locator("#chat-message textarea").fill("What is the capital of France?")
    page.get_by_role("button", name="Send", exact=True).click()
    expect(page.locator("#chat-panes").get_by_text("waiting for the first-chat merge")).to_be_visible()
    expect(page.locator("#chat-panes .message.user").filter(has_text="waiting its turn")).to_have_count(3)
    page.screenshot(path=str(ARTIFACTS / "first-chat-send-during-merge.png"))
    expect(page.locator("#first-chat-notice")).to_contain_text("the original SmolLM2 with itself", timeout=120_000)
    expect(page.locator("#chat-panes").get_by_text("tok/s")).to_have_count(3, timeout=180_000)
    expect(page.get_by_role("button", name="Regenerate")).to_be_enabled(timeout=60_000)  # the round has ended
    panes = pane_messages(page, lambda panes: len(panes) == 3 and all(len(pane) == 2 and pane[1][1] for pane in panes))
    assert [[role for role, _ in pane] for pane in panes] == [["user", "bot"]] * 3, panes
    assert all(pane[0][1] == "What is the capital of France?" for pane in panes), panes
    page.screenshot(path=str(ARTIFACTS / "first-chat-answered-after-merge.png"))
    page.locator("#chat-message textarea").fill("And of Italy?")
    page.get_by_role("button", name="Send", exact=True).click()
    asked = ["What is the capital of France?", "And of Italy?"]
    # Its round has begun once no pane marks it waiting; it has ended once Regenerate is on again.
    pane_messages(page, lambda panes: len(panes) == 3 and all([t for r, t in pane if r == "user"] == asked for pane in panes), 120)
    expect(page.get_by_role("button", name="Regenerate")).to_be_enabled(timeout=60_000)
    panes = pane_messages(page, lambda panes: all(len(pane) == 4 and pane[3][1] for pane in panes))
    assert [[role for role, _ in pane] for pane in panes] == [["user", "bot"] * 2] * 3, panes
    expect(page.locator(".toast-body")).to_have_count(0)
