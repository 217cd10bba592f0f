"""The t-sweep in Debian's Chromium: a sweep of a small subset shows the plot with the
parents at the ends, the table and the sample replies; a bad grid then shows its one-line
error and nothing of the last result. Screenshots go to artifacts/."""

import pytest
from conftest import ARTIFACTS
from helpers import peaked
from playwright.sync_api import expect

from evaluation import defaults


@pytest.fixture
def tiny_start(monkeypatch, tiny_models, tmp_path):
    """The page's start pair as two tiny models (SmolLM2 would take a minute per sweep here)."""
    a, b = peaked(tiny_models("llama", 1), tmp_path / "tiny-a"), peaked(tiny_models("llama", 2), tmp_path / "tiny-b")
    monkeypatch.setattr(defaults, "start_pair", lambda: defaults.StartPair(str(a), str(b), "constant 0.5", blend=False))


def test_t_sweep_of_a_small_subset_shows_plot_table_and_replies(tiny_start, browser_page):
    page = browser_page
    expect(page.get_by_text("✅ compatible")).to_be_visible(timeout=60_000)
    prompts = page.get_by_label("prompts (the first N of 38 in prompts/demo.jsonl)")
    prompts.first.fill("2")
    prompts.first.press("Tab")
    page.get_by_label("grid: values of t in [0, 1]").fill("0, 0.5, 1")
    page.get_by_role("button", name="t-sweep", exact=True).click()
    expect(page.get_by_text("t-sweep: 2 prompts × 3 values of t")).to_be_visible(timeout=120_000)
    plot = page.locator("svg[aria-label='Resemblance to parent B against t']")
    expect(plot).to_be_visible()
    expect(plot.locator("circle")).to_have_count(3)
    for label in ("Parent A", "Parent B", "◀ Parent A: tiny-a", "Parent B: tiny-b ▶"):
        expect(plot.get_by_text(label, exact=True)).to_be_visible()
    table = page.get_by_role("grid", name="t-sweep results")
    for header in ("t", "resemblance to B", "gap (B − A)", "n"):
        expect(table.get_by_role("columnheader", name=header, exact=True)).to_be_visible()
    expect(table.get_by_role("row")).to_have_count(4)  # the header and one row per t
    expect(table.get_by_role("gridcell", name="0.5", exact=True)).to_be_visible()
    expect(page.get_by_text("The merge's greedy reply to “What is the capital of France?” at each t")).to_be_visible()
    page.get_by_text("t-sweep: which parent does the merge resemble, along t?").scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "merge-tab-t-sweep.png"), full_page=True)

    page.get_by_label("grid: values of t in [0, 1]").fill("0, 2")
    page.get_by_role("button", name="t-sweep", exact=True).click()
    expect(page.get_by_text("grid: '0, 2' is not a list of numbers in [0, 1] — write e.g. 0, 0.25, 0.5, 0.75, 1")).to_be_visible()
    expect(plot).to_have_count(0)  # the last result is gone, not left under the error
    expect(page.get_by_text("The merge's greedy reply to")).to_have_count(0)
    expect(page.get_by_text("Error", exact=True)).to_have_count(0)
    page.screenshot(path=str(ARTIFACTS / "merge-tab-t-sweep-bad-grid.png"), full_page=True)
