"""First run in Debian's Chromium: on a fresh app (no merge, no demo parent) the Merge tab
says prominently that the demo parent is not built, and opening the Chat tab merges the
defaults and fills the merged model. Screenshots go to artifacts/."""

from conftest import ARTIFACTS
from playwright.sync_api import expect

from ui import context


def test_a_fresh_app_says_to_build_the_demo_parent_and_the_chat_tab_merges_the_defaults(browser_page, smollm2_dir):
    page = browser_page
    expect(page.get_by_text("✅ compatible")).to_be_visible(timeout=60_000)
    notice = page.locator("#demo-notice")
    expect(notice).to_contain_text("The demo parent is not built yet")
    expect(page.get_by_role("button", name="Build demo parent")).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "merge-tab-demo-parent-missing.png"))

    page.get_by_role("tab", name="Chat").click()
    expect(page.locator("#first-chat-notice")).to_contain_text("the original SmolLM2 with itself, so all three panes answer alike",
                                                               timeout=120_000)
    page.get_by_text("Models: merged folder, parents, precision, panes on/off").click()
    expect(page.locator("#chat-merged textarea")).to_have_value(str(context.outputs_root() / "demo-merge"))
    expect(page.get_by_text("Error", exact=True)).to_have_count(0)
    page.screenshot(path=str(ARTIFACTS / "chat-tab-first-run.png"), full_page=True)
    assert (context.outputs_root() / "demo-merge" / "mergekit_config.yml").is_file()
