"""The Chat tab in Debian's Chromium (Playwright) at 1400x900, on tiny random models:
a blind round shows nothing that tells the panes apart until an explicit vote; the
first screen holds the panes, the message box and Send; a message typed mid-reply waits
in the box (Send is off) and Stop keeps the partial replies; Regenerate answers again
with a new seed; Stop then Clear leaves empty panes and no error. Screenshots go to artifacts/."""

import re

import pytest
from conftest import ARTIFACTS
from helpers import tiny_yaml
from playwright.sync_api import expect
from test_blind import slowed

from arena.votes import VoteStore, config_hash, votes_path
from ui import merge_tab

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
    store = VoteStore(votes_path())  # earlier rounds of this merge, so the results plot has data
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


def test_a_message_typed_mid_reply_waits_in_the_box_and_stop_keeps_the_partial_replies(browser_page, merged, monkeypatch):
    slowed(monkeypatch, 0.08)
    page, (output, a, b) = browser_page, merged
    open_chat(page, output, a, b, blind=False, max_tokens=64)
    send(page, "first message")
    expect(page.locator(".message.bot")).to_have_count(3, timeout=60_000)  # replies are streaming
    send_button = page.get_by_role("button", name="Send", exact=True)
    expect(send_button).to_be_disabled()
    expect(page.locator("#chat-clear")).to_be_disabled()
    expect(page.locator("#chat-note")).to_contain_text("Replies are streaming")
    page.locator("#chat-message textarea").fill("second message")  # typed meanwhile: it stays in the box
    for i in range(3):  # some text in every pane before the Stop
        expect(page.locator("#chat-panes .message.bot").nth(i)).to_have_text(re.compile(r"\S"), timeout=30_000)
    page.get_by_role("button", name="Stop", exact=True).click()
    expect(page.locator("#chat-panes").get_by_text(re.compile(r"stopped"))).to_have_count(3, timeout=20_000)
    expect(send_button).to_be_enabled()
    expect(page.get_by_label("Blind mode: shuffled, unnamed panes; vote, then see the names")).to_be_enabled()
    expect(page.locator("#chat-message textarea")).to_have_value("second message")
    partial = [len(t) for t in page.locator("#chat-panes .message.bot").all_inner_texts()]
    assert all(n > 0 for n in partial), partial  # the partial replies stay on screen
    page.screenshot(path=str(ARTIFACTS / "stopped-mid-reply.png"))
    send_button.click()
    expect(page.locator("#chat-panes .message.user").filter(has_text="second message")).to_have_count(3, timeout=60_000)
    expect(page.locator("#chat-message textarea")).to_have_value("")
    expect(page.locator("#chat-panes .message.bot")).to_have_count(6, timeout=60_000)
    page.get_by_role("button", name="Stop", exact=True).click()  # then Clear: the panes empty and nothing comes back
    page.locator("#chat-clear").click()
    expect(page.locator("#chat-panes .message")).to_have_count(0, timeout=30_000)
    page.wait_for_timeout(1500)  # a late view or error would show by now
    expect(page.locator("#chat-panes .message")).to_have_count(0)
    assert_no_error(page)
    send(page, "after clear")
    expect(page.locator("#chat-panes .message.user")).to_have_count(3, timeout=60_000)
    assert_no_error(page)


def test_regenerate_answers_again_with_a_new_seed_and_stop_then_clear_empties_the_panes(browser_page, merged, monkeypatch):
    slowed(monkeypatch, 0.08)
    page, (output, a, b) = browser_page, merged
    open_chat(page, output, a, b, blind=False, max_tokens=64)
    send(page, "first message")
    expect(page.locator("#chat-panes").get_by_text(re.compile(r"seed 0\b"))).to_have_count(3, timeout=60_000)
    regenerate = page.get_by_role("button", name="Regenerate")
    expect(regenerate).to_be_enabled(timeout=60_000)  # the replies have ended
    regenerate.click()
    expect(regenerate).to_be_disabled()
    new_seed = page.locator("#chat-panes").get_by_text(re.compile(r"seed [1-9]\d*"))
    expect(new_seed).to_have_count(3, timeout=30_000)
    expect(page.locator("#chat-panes .message.user")).to_have_count(3)  # the message answered again, not repeated
    expect(page.locator("#chat-panes .message.bot")).to_have_count(3)
    page.screenshot(path=str(ARTIFACTS / "regenerating.png"))
    page.get_by_role("button", name="Stop", exact=True).click()  # mid-regeneration: 64 pieces at 0.08 s each
    page.locator("#chat-clear").click()
    expect(page.locator("#chat-panes .message")).to_have_count(0, timeout=20_000)
    page.wait_for_timeout(1500)  # a late view would show the replies back by now
    expect(page.locator("#chat-panes .message")).to_have_count(0)
    assert_no_error(page)
