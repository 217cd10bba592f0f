"""One real-browser run of the offline default: Debian's Chromium, driven by Playwright,
merges the bundled SmolLM2 with itself, opens the merge in the Chat tab and gets three
replies. A screenshot lands in artifacts/ (ignored by git)."""

import pytest
from conftest import ARTIFACTS
from playwright.sync_api import expect

from evaluation import defaults


@pytest.fixture
def no_demo_parent(monkeypatch):
    """A machine whose demo parent is not built (the default pair is then SmolLM2 with itself),
    whatever the machine cache holds; requested before the page is served."""
    monkeypatch.setattr(defaults, "built_demo_parent", lambda: None)


def test_merge_smollm2_with_itself_then_chat_with_three_panes(no_demo_parent, browser_page, smollm2_dir):
    page = browser_page
    expect(page.get_by_text("Slerp Arena").first).to_be_visible(timeout=60_000)
    expect(page.get_by_text("✅ compatible")).to_be_visible(timeout=60_000)  # parents inspected before anything runs
    page.get_by_label("Output name (under outputs/)").fill("browser-merge")
    page.get_by_role("button", name="Merge", exact=True).click()
    expect(page.get_by_text("Merged into")).to_be_visible(timeout=120_000)
    page.screenshot(path=str(ARTIFACTS / "browser-merge.png"), full_page=True)
    page.get_by_role("button", name="Chat with this merge").click()

    page.get_by_text("Sampling (shared by all panes)").click()
    expect(page.get_by_label("repetition penalty (1 = off)").first).to_have_value("1.2")  # the measured default
    page.get_by_role("button", name="Greedy").click()  # one click to deterministic replies
    expect(page.get_by_label("temperature (0 = greedy)").first).to_have_value("0")
    expect(page.get_by_label("repetition penalty (1 = off)").first).to_have_value("1")
    page.get_by_label("max new tokens").first.fill("12")
    page.get_by_label("Message").fill("What is the capital of France?")
    page.get_by_role("button", name="Send").click()
    bot_messages = page.locator(".message.bot")  # Gradio's class for assistant bubbles
    expect(bot_messages).to_have_count(3, timeout=180_000)
    expect(page.get_by_text("tok/s")).to_have_count(3, timeout=180_000)
    page.screenshot(path=str(ARTIFACTS / "browser-chat.png"), full_page=True)
    replies = [bot_messages.nth(i).inner_text() for i in range(3)]
    assert all("Paris" in reply for reply in replies), replies
