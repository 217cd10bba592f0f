"""The Chat tab in Debian's Chromium (Playwright) at 1400x900, on tiny random models:
a blind round shows nothing that tells the panes apart until an explicit vote; the
first screen holds the panes, the message box and Send; a second Send mid-reply is
queued, not lost; Clear mid-reply leaves no error. Screenshots go to artifacts/."""

import re

import pytest
from conftest import ARTIFACTS
from helpers import tiny_yaml
from playwright.sync_api import expect
from test_blind import slowed

from ui import chat_tab, merge_tab
from ui.votes import VoteStore, config_hash

REVEALING = re.compile(r"int8|bf16|fp8|fp32|torch|\d MB|tok/s|first token|SmolLM|llama", re.IGNORECASE)
ROLES = re.compile(r"Merged|Parent A|Parent B")  # case-sensitive: the pane roles


def open_chat(page, output: str, a: str, b: str, blind: bool, max_tokens: int) -> None:
    """Reload (the Chat tab picks up the latest merge), point the parents at tiny models."""
    page.reload()
    page.get_by_role("tab", name="Chat").click()
    page.get_by_text("Models: merged folder, parents, precision, panes on/off").click()
    expect(page.locator("#chat-merged textarea")).to_have_value(output, timeout=30_000)  # the page's load is done
    page.locator("#chat-parent-a textarea").fill(a)
    page.locator("#chat-parent-b textarea").fill(b)
    expect(page.locator("#chat-parent-a textarea")).to_have_value(a)
    page.get_by_text("Models: merged folder, parents, precision, panes on/off").click()  # closed again
    page.get_by_text("Sampling (shared by all panes)").click()
    box = page.get_by_label("max new tokens").first
    for _ in range(3):  # the accordion's first opening can re-render the slider under a fill (1 run in 4 kept 256)
        box.fill(str(max_tokens))
        box.press("Tab")
        page.wait_for_timeout(300)
        if box.input_value() == str(max_tokens):
            break
    expect(box).to_have_value(str(max_tokens))
    page.get_by_text("Sampling (shared by all panes)").click()
    if blind:
        page.get_by_label("Blind mode: shuffled, unnamed panes; vote, then see the names").check()


def send(page, text: str) -> None:
    page.locator("#chat-message textarea").fill(text)
    page.get_by_role("button", name="Send", exact=True).click()


def assert_no_error(page) -> None:
    assert page.locator(".toast-body").count() == 0, page.locator(".toast-body").all_inner_texts()
    assert "list index" not in page.inner_text("body") and not re.search(r"\bError\b", page.inner_text("#chat-panes"))


@pytest.fixture
def merged(tiny_models):
    a, b = str(tiny_models("llama", 1)), str(tiny_models("llama", 2))
    output = merge_tab.merge(tiny_yaml(a, b), "browser-blind", False, merge_tab.MergeSession(), progress=lambda *x, **k: None)[2]
    return output, a, b


def test_blind_round_in_chromium_reveals_nothing_before_an_explicit_vote(browser_page, merged):
    page, (output, a, b) = browser_page, merged
    store = VoteStore(chat_tab.context.votes_path())  # earlier rounds of this merge, so the results plot has data
    for i in range(24):
        store.record(config_hash(output), "q", [("best", ["Merged", "Merged", "Parent A"][i % 3]), ("worst", "Parent B")],
                     {"Merged": output, "Parent A": a, "Parent B": b}, {}, {"seed": i})
    open_chat(page, output, a, b, blind=True, max_tokens=8)
    send(page, "Tell me about SLERP.")
    expect(page.locator(".message.bot")).to_have_count(3, timeout=60_000)
    expect(page.locator("#chat-panes").get_by_text(re.compile(r"^[1-8] tokens · seed 0$"))).to_have_count(3, timeout=60_000)
    expect(page.get_by_role("button", name="Vote and reveal")).to_be_visible()
    for box in ("#chat-message textarea", "#chat-panes"):  # first screen: panes, message box and Send
        assert page.locator(box).bounding_box()["y"] + 40 < 900
    assert page.get_by_role("button", name="Send", exact=True).bounding_box()["y"] < 900
    body = page.inner_text("body")
    assert not REVEALING.search(body), REVEALING.search(body)
    assert not ROLES.search(page.inner_text("#chat-panes")) and page.title() == "Slerp Arena"
    assert output not in body and a not in body
    page.screenshot(path=str(ARTIFACTS / "blind-before-reveal.png"))

    page.get_by_role("button", name="Vote and reveal").click()  # no choice made
    expect(page.get_by_text("Vote refused: best reply: nothing chosen")).to_be_visible(timeout=10_000)
    assert not ROLES.search(page.inner_text("#chat-panes")) and not re.search(r"\bError\b", page.inner_text("#chat-panes"))
    page.screenshot(path=str(ARTIFACTS / "refused-vote.png"))
    page.locator("#vote-best label").filter(has_text="Model 2").click()
    page.get_by_role("button", name="Vote and reveal").click()
    expect(page.get_by_text(re.compile(r"Model 1 = (Merged|Parent A|Parent B)"))).to_be_visible(timeout=10_000)
    expect(page.locator("#chat-panes").get_by_text("tok/s")).to_have_count(3)
    assert len(re.findall(r"\d MB", page.inner_text("#chat-panes"))) == 3
    page.screenshot(path=str(ARTIFACTS / "blind-after-reveal.png"))
    page.get_by_text("Results: does the merge beat its parents?").click()
    expect(page.get_by_text(re.compile(r"Merged beats Parent A in \d+%")).first).to_be_visible()
    assert "25 votes" in page.inner_text("body")
    page.get_by_text("Results: does the merge beat its parents?").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "results-plot.png"), full_page=True)


def test_second_send_mid_reply_is_queued_and_clear_mid_reply_leaves_no_error(browser_page, merged, monkeypatch):
    slowed(monkeypatch, 0.08)
    page, (output, a, b) = browser_page, merged
    open_chat(page, output, a, b, blind=False, max_tokens=64)
    send(page, "first message")
    expect(page.locator(".message.bot")).to_have_count(3, timeout=60_000)  # replies are streaming
    send(page, "second message")
    expect(page.locator("#chat-pending")).to_contain_text("second message")
    expect(page.locator("#chat-message textarea")).to_have_value("")
    expect(page.locator("#chat-panes .message.user").filter(has_text="second message")).to_have_count(3, timeout=60_000)
    expect(page.locator("#chat-panes .message.bot")).to_have_count(6, timeout=60_000)
    page.screenshot(path=str(ARTIFACTS / "queued-second-message.png"))
    page.locator("#chat-clear").click()  # mid-reply: the second reply streams for ~5 s
    expect(page.locator("#chat-panes .message")).to_have_count(0, timeout=30_000)
    page.wait_for_timeout(1500)  # a late error would show by now
    assert_no_error(page)
    send(page, "after clear")
    expect(page.locator("#chat-panes .message.user")).to_have_count(3, timeout=60_000)
    assert_no_error(page)


def test_regenerate_mid_reply_answers_again_at_once_and_a_clear_mid_regeneration_empties_the_panes(browser_page, merged, monkeypatch):
    """Regenerate once waited out its own stream's confirmation (SHOWN_WAIT_S) before it began."""
    slowed(monkeypatch, 0.08)
    monkeypatch.setattr(chat_tab, "SHOWN_WAIT_S", 60.0)  # such a stall now outlasts the wait below by far
    page, (output, a, b) = browser_page, merged
    open_chat(page, output, a, b, blind=False, max_tokens=64)
    send(page, "first message")
    expect(page.locator("#chat-panes .message.bot")).to_have_count(3, timeout=60_000)  # streaming
    page.get_by_role("button", name="Regenerate").click()
    new_seed = page.locator("#chat-panes").get_by_text(re.compile(r"seed [1-9]\d*"))
    expect(new_seed).to_have_count(3, timeout=20_000)  # begun at once (a stalled one showed seed 0 for 60 s)
    expect(page.locator("#chat-panes .message.user")).to_have_count(3)  # the message answered again, not repeated
    page.screenshot(path=str(ARTIFACTS / "regenerated-mid-reply.png"))
    page.locator("#chat-clear").click()  # mid-regeneration: 64 tokens at 0.08 s each
    expect(page.locator("#chat-panes .message")).to_have_count(0, timeout=20_000)
    page.wait_for_timeout(1500)  # a late view would show the replies back by now
    expect(page.locator("#chat-panes .message")).to_have_count(0)
    assert_no_error(page)
