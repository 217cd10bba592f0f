"""First run: the Merge tab's defaults with and without the built demo parent, its build
(progress, Cancel), and the Chat tab opened with no merge, which merges the defaults."""

import dataclasses
import threading
import time
from pathlib import Path

import gradio as gr
import pytest

from arena import chat_session
from core import places
from core.sources import DEFAULT_MODEL
from evaluation import defaults, demo_build
from evaluation.reply_quality import Quality
from merging.form import PRESETS, MergeForm
from ui import chat_actions, demo_panel, first_run, merge_tab
from ui.context import CancelSession

pytestmark = pytest.mark.usefixtures("isolated_app")
NO_PROGRESS = {"progress": lambda *args, **kwargs: None}


def demo_parent_is(monkeypatch, folder: Path | None) -> None:
    """The demo parent as built (folder) or not (None), on a machine whose bundled model is converted."""
    monkeypatch.setattr(defaults, "is_converted", lambda ref: True)
    monkeypatch.setattr(defaults, "built_demo_parent", lambda: folder)


def page_form() -> merge_tab.MergeTab:
    with gr.Blocks() as demo:
        return merge_tab.build_merge_tab(demo, gr.BrowserState(""))


def test_without_the_demo_parent_the_default_is_the_original_with_itself_and_the_tab_says_so(monkeypatch):
    demo_parent_is(monkeypatch, None)
    pair = defaults.start_pair()
    assert pair == defaults.StartPair(DEFAULT_MODEL, DEFAULT_MODEL, "constant 0.5", blend=False)
    tab = page_form()
    assert (tab.parent_a.value, tab.parent_b.value) == (DEFAULT_MODEL, DEFAULT_MODEL)
    notice = demo_panel.notice_html(pair)
    assert "The demo parent is not built yet" in notice and "background:#fff4ce" in notice  # highlighted
    assert "three panes are one model" in notice and "Build demo parent" in notice


def test_with_the_demo_parent_built_the_default_is_a_v_shaped_blend_of_the_original_and_it(monkeypatch, tiny_models):
    folder = tiny_models("llama", 7)
    demo_parent_is(monkeypatch, folder)
    pair = defaults.start_pair()
    assert pair == defaults.StartPair(DEFAULT_MODEL, str(folder), "V-shape", blend=True)
    assert pair.form() == MergeForm(DEFAULT_MODEL, str(folder), *PRESETS["V-shape"], layer_start=0, layer_end=0, dtype="bfloat16")
    tab = page_form()
    assert (tab.parent_a.value, tab.parent_b.value) == (DEFAULT_MODEL, str(folder))
    yaml_text = merge_tab.form_to_yaml(pair.form()).yaml_text
    assert f"base_model: {DEFAULT_MODEL}" in yaml_text and "[0, 0.5, 1, 0.5, 0]" in yaml_text
    notice = demo_panel.notice_html(pair)
    assert "Demo parent built" in notice and folder.name in notice and "background" not in notice
    # A page made before the build switches to the demo pair when it (re)loads.
    before = defaults.StartPair(DEFAULT_MODEL, DEFAULT_MODEL, "constant 0.5", blend=False)
    a, b, preset, attn, mlp, default, shown_notice = demo_panel.fresh_defaults(before)
    assert (a.value, b.value, preset, attn, mlp, default) == (DEFAULT_MODEL, str(folder), "V-shape", *PRESETS["V-shape"])
    assert shown_notice == notice
    assert demo_panel.fresh_defaults(pair) == (gr.skip(),) * 7  # unchanged: the form is left as the visitor has it


def test_start_up_does_not_look_for_the_demo_parent_before_the_bundled_model_is_converted(monkeypatch):
    def never(*args):
        raise AssertionError("built_demo_parent would convert the GGUF first (30 s) at start-up")

    monkeypatch.setattr(defaults, "is_converted", lambda ref: False)
    monkeypatch.setattr(defaults, "built_demo_parent", never)
    assert defaults.start_pair().blend is False


def test_the_build_runs_in_the_background_and_switches_an_untouched_form_to_the_demo_pair(monkeypatch, tiny_models):
    folder = tiny_models("llama", 7)
    demo_parent_is(monkeypatch, None)
    go_on = threading.Event()

    def fake_build(base, on_progress):  # the real one takes minutes; its own test is in test_demo_parent.py
        assert base == DEFAULT_MODEL  # keyed by the bundled model's name, as defaults.demo_parent() looks it up
        on_progress("teacher answers", 159, 159)
        on_progress("fine-tuning", 1, 48)
        go_on.wait(10)
        demo_parent_is(monkeypatch, folder)
        return folder

    monkeypatch.setattr(demo_build, "build_demo_parent", fake_build)
    monkeypatch.setattr(demo_panel, "demo_report", lambda f: {"demo parent": Quality(19, 0.95, 0.9, 0, 0)})
    job = demo_build.DemoBuild()
    untouched = (DEFAULT_MODEL, DEFAULT_MODEL, "constant 0.5", *PRESETS["constant 0.5"])
    assert demo_panel.start_build(job).startswith("⏳ Building the demo parent")  # at once: the build runs in a thread
    deadline = time.time() + 10
    while "fine-tuning 1/48" not in (line := job.status().line()):
        assert time.time() < deadline, line
        time.sleep(0.01)
    assert "left" in line and "the form stays usable" in line
    *form, notice, message, button, shown, timer = demo_panel.show_build(job, "idle", *untouched)
    assert form == [gr.skip()] * 6 and message.startswith("⏳ Building the demo parent: fine-tuning 1/48")
    assert button.interactive is False and shown == "building" and timer == gr.skip()  # Build off while it runs; Cancel on
    go_on.set()
    while job.status().state != "built":
        assert time.time() < deadline
        time.sleep(0.01)
    a, b, preset, attn, mlp, default, notice, message, button, shown, timer = demo_panel.show_build(job, "building", *untouched)
    assert (a.value, b.value, preset, attn, mlp, default) == (DEFAULT_MODEL, str(folder), "V-shape", *PRESETS["V-shape"])
    assert "Demo parent built" in notice and message.startswith("✅ Demo parent ready") and "press **Merge**" in message
    assert "- demo parent: persona=95% on_topic=90% loops=0 profane=0 n=19" in message and shown == "built"
    assert timer.active is False  # nothing more to follow
    assert demo_panel.show_build(job, "built", *untouched)[:-2] == (gr.skip(),) * 9  # told once
    touched = (DEFAULT_MODEL, "org/other", "constant 0.5", *PRESETS["constant 0.5"])
    *form, notice, message, _, _, _ = demo_panel.show_build(job, "building", *touched)
    assert form[2:] == [gr.skip()] * 4 and "press **Merge**" not in message  # the visitor's parents and t fields stay


def test_cancel_stops_the_build_between_two_steps_and_nothing_is_saved(monkeypatch):
    demo_parent_is(monkeypatch, None)

    def endless(base, on_progress):
        for step in range(10**6):
            on_progress("fine-tuning", step, 10**6)
            time.sleep(0.001)
        raise AssertionError("not cancelled")

    monkeypatch.setattr(demo_build, "build_demo_parent", endless)
    job = demo_build.DemoBuild()
    assert demo_panel.cancel_build(job) == "No build is running."
    job.start()
    assert job.start().state == "building"  # a second Build joins the running one
    assert demo_panel.cancel_build(job).startswith("⏹ Cancelling the build: it stops at its next step")  # said at once
    deadline = time.time() + 10
    while job.status().state in ("building", "cancelling"):
        assert time.time() < deadline
        time.sleep(0.01)
    assert job.status().line() == "⏹ Build cancelled — nothing was saved; the defaults stay the original with itself."


def test_the_time_left_follows_the_pace_this_host_has_shown():
    weights = demo_build.STAGE_WEIGHTS
    assert demo_build.time_left({}, "teacher answers", 0, 159, 5.0) is None  # nothing measured yet
    # At the weights' own pace, halfway through fine-tuning: the other half and both reports are left.
    left = demo_build.time_left({"teacher answers": weights["teacher answers"]}, "fine-tuning", 24, 48, weights["fine-tuning"] / 2)
    assert left == pytest.approx(weights["fine-tuning"] / 2 + weights["report: original"] + weights["report: demo parent"])
    # A host three times slower (a busy one) is told three times the wait.
    slow = demo_build.time_left({"teacher answers": 3 * weights["teacher answers"]}, "fine-tuning", 24, 48,
                                3 * weights["fine-tuning"] / 2)
    assert slow == pytest.approx(3 * left)


@pytest.fixture
def tiny_defaults(monkeypatch, tiny_models):
    """The start pair as two tiny models (the real one is SmolLM2: see the browser test)."""
    pair = defaults.StartPair(str(tiny_models("llama", 1)), str(tiny_models("llama", 2)), "V-shape", blend=True)
    monkeypatch.setattr(defaults, "start_pair", lambda: pair)
    return pair


def open_chat(merged: str = "", a: str = defaults.DEFAULT_A, b: str = defaults.DEFAULT_B) -> list[tuple]:
    """What the page gets on opening the Chat tab: the select's four outputs, then, when it
    asked for the default merge (a new State value, whose change event runs it), the merge's."""
    session = chat_session.ChatSession()
    *shown, request = first_run.on_chat_opened(merged, a, b, session)
    if not isinstance(request, first_run.DefaultMerge):
        assert request == gr.skip()  # no State change: nothing is queued for the device
        return [tuple(shown)]
    return [tuple(shown), first_run.merge_defaults(request, merged, a, b, session, **NO_PROGRESS)]


def test_opening_the_chat_with_no_merge_merges_the_defaults_once_and_fills_the_three_models(tiny_defaults):
    updates = open_chat()
    assert updates[0] == (gr.skip(), gr.skip(), gr.skip(), first_run.RUNNING)  # the notice line says what runs
    merged, a, b, notice = updates[-1]
    folder = places.outputs_root() / "demo-merge"
    assert (merged, a, b) == (str(folder), tiny_defaults.a, tiny_defaults.b)
    assert (folder / "mergekit_config.yml").read_text() == merge_tab.form_to_yaml(tiny_defaults.form()).yaml_text
    assert notice.startswith("✅ **First chat:** merged llama-1- (parent A) with llama-2- (parent B) on the V-shape curve")
    assert "`outputs/demo-merge`" in notice
    # Again with the merged field emptied: the latest merge (this one) is shown at once, not redone.
    stamp = (folder / "mergekit_config.yml").stat().st_mtime_ns
    assert open_chat() == [(str(folder), tiny_defaults.a, tiny_defaults.b, gr.skip())]
    assert (folder / "mergekit_config.yml").stat().st_mtime_ns == stamp


def test_two_requests_queued_before_the_first_merge_ends_merge_once(tiny_defaults):
    """The tab opened twice while the device was busy: the second request finds the first's merge."""
    session, start = chat_session.ChatSession(), ("", defaults.DEFAULT_A, defaults.DEFAULT_B)
    first, second = (first_run.on_chat_opened(*start, session)[-1] for _ in range(2))
    assert first != second  # each is a change of the State, so each runs
    assert first_run.merge_defaults(first, *start, session, **NO_PROGRESS) == first_run.merge_defaults(second, *start, session,
                                                                                                     **NO_PROGRESS)
    assert sorted(p.name for p in places.outputs_root().iterdir()) == ["demo-merge"]


def test_models_typed_while_the_default_merge_runs_are_kept(tiny_defaults, tiny_models):
    """Seen in Chromium: parents typed during the first-chat merge were replaced by the default pair."""
    session = chat_session.ChatSession()
    request = first_run.on_chat_opened("", defaults.DEFAULT_A, defaults.DEFAULT_B, session)[-1]
    mine = str(tiny_models("llama", 3))
    assert first_run.merge_defaults(request, "", mine, mine, session, **NO_PROGRESS) == (gr.skip(), gr.skip(), gr.skip(), "")
    assert (places.outputs_root() / "demo-merge" / "config.json").is_file()  # merged all the same, for later


def test_a_different_merge_named_demo_merge_is_never_replaced(tiny_defaults):
    other = merge_tab.form_to_yaml(MergeForm(tiny_defaults.a, tiny_defaults.b, "0.2", "0.2", "0.2")).yaml_text
    assert merge_tab.merge(other, "demo-merge", False, CancelSession(), **NO_PROGRESS)[0].startswith("### ✅")
    merged, *_ = open_chat()[-1]
    assert merged == str(places.outputs_root() / "demo-merge-2")  # the start pair's merge, beside it
    assert (places.outputs_root() / "demo-merge" / "mergekit_config.yml").read_text() == other


def test_after_the_demo_parent_is_built_a_fresh_chat_uses_the_demo_pair_not_the_old_self_merge(monkeypatch, tiny_models):
    """Seen in Chromium: the first visit's self-merge stayed the newest merge, so a fresh page
    after the build chatted with the original three times over, with no notice."""
    original, pirate = str(tiny_models("llama", 1)), str(tiny_models("llama", 2))
    monkeypatch.setattr(defaults, "start_pair", lambda: defaults.StartPair(original, original, "constant 0.5", blend=False))
    first, *_ = open_chat()[-1]
    assert first == str(places.outputs_root() / "demo-merge")
    blend = defaults.StartPair(original, pirate, "V-shape", blend=True)
    monkeypatch.setattr(defaults, "start_pair", lambda: blend)  # the demo parent is built
    assert chat_actions.open_chat("", "", chat_session.ChatSession())[0] == ""  # a fresh page's load does not pick the self-merge
    merged, a, b, notice = open_chat()[-1]
    assert (merged, a, b) == (str(places.outputs_root() / "demo-merge-2"), original, pirate) and notice.startswith("✅")
    assert chat_actions.open_chat("", "", chat_session.ChatSession())[0] == merged


def test_a_public_app_offers_no_visitor_its_neighbours_merges(monkeypatch, tiny_defaults):
    mine = merge_tab.merge(tiny_defaults.yaml(), "someone-elses", False, CancelSession(), **NO_PROGRESS)[2]
    monkeypatch.setenv("SLERP_ARENA_PUBLIC", "1")
    assert defaults.latest_merge() == "" and mine not in defaults.known_models()
    *shown, request = first_run.on_chat_opened("", defaults.DEFAULT_A, defaults.DEFAULT_B, chat_session.ChatSession())
    assert shown[0] == gr.skip() and request.name == "demo-merge"  # the first chat merges the start pair instead
    (places.outputs_root() / "demo-merge").mkdir()
    (places.outputs_root() / "demo-merge" / "mergekit_config.yml").write_text(tiny_defaults.yaml())
    assert defaults.latest_merge() == str(places.outputs_root() / "demo-merge")  # the app's own merge is everyone's
    monkeypatch.setenv("SLERP_ARENA_PUBLIC", "0")
    assert mine in defaults.known_models()


def test_a_browser_gets_its_own_latest_merge_back_after_a_reload(monkeypatch, tiny_defaults, tmp_path):
    """Signing in reloads the page: the merge this browser made before (its storage keeps
    the path) comes back in the Merge tab's panel and the Chat tab, on a public app too."""
    mine = merge_tab.merge(tiny_defaults.yaml(), "made-before-sign-in", False, CancelSession(), **NO_PROGRESS)[2]
    monkeypatch.setenv("SLERP_ARENA_PUBLIC", "1")
    assert chat_actions.open_chat("", mine, chat_session.ChatSession())[0] == mine
    result, output = merge_tab.restored_merge(mine)
    assert output == mine and "made-before-sign-in" in result and str(places.outputs_root()) not in result
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "mergekit_config.yml").write_text(tiny_defaults.yaml())
    for stored in ("", "../elsewhere", str(tmp_path / "elsewhere"), str(places.outputs_root() / "gone")):
        assert defaults.own_merge(stored) == "" and merge_tab.restored_merge(stored) == (gr.skip(), gr.skip())
    assert chat_actions.open_chat("", "../elsewhere", chat_session.ChatSession())[0] == ""  # nothing else offered on a public app


def test_a_loaded_merge_is_kept_and_gets_its_parents_and_typed_parents_are_left_alone(tiny_defaults):
    output = merge_tab.merge(tiny_defaults.yaml(), "mine", False, CancelSession(), **NO_PROGRESS)[2]
    assert open_chat(output) == [(gr.skip(), tiny_defaults.a, tiny_defaults.b, gr.skip())]
    for merged in (output, ""):  # parents the visitor typed are theirs: nothing is merged or replaced
        assert open_chat(merged, "org/typed-a") == [(gr.skip(),) * 4]
    assert not (places.outputs_root() / "demo-merge").exists()


def test_the_self_merge_says_that_the_demo_parent_gives_a_real_blend(monkeypatch, tiny_models):
    a = str(tiny_models("llama", 1))
    monkeypatch.setattr(defaults, "start_pair", lambda: defaults.StartPair(a, a, "constant 0.5", blend=False))
    *_, notice = open_chat()[-1]
    assert "the original SmolLM2 with itself, so the three panes are one model" in notice
    assert "press **Build demo parent** on the Merge tab" in notice


def test_a_failed_default_merge_says_why_in_one_line_and_fills_nothing(monkeypatch, tmp_path):
    missing = str(tmp_path / "gone")
    monkeypatch.setattr(defaults, "start_pair", lambda: defaults.StartPair(missing, missing, "V-shape", blend=True))
    *models, notice = open_chat()[-1]
    assert models == [gr.skip()] * 3
    assert notice.startswith("⚠️ The default merge failed: model: '") and notice.endswith("— merge on the Merge tab.")
    assert "\n" not in notice


def test_a_demo_parent_built_elsewhere_reaches_every_page_through_the_same_job(monkeypatch, tiny_models):
    demo_parent_is(monkeypatch, None)
    job = demo_build.DemoBuild()
    untouched = (DEFAULT_MODEL, DEFAULT_MODEL, "constant 0.5", *PRESETS["constant 0.5"])
    assert demo_panel.show_build(job, "idle", *untouched)[:6] == (gr.skip(),) * 6
    folder = tiny_models("llama", 7)
    demo_parent_is(monkeypatch, folder)  # the command line, or another app, built it
    assert job.status().state == "built" and job.start().state == "built"  # found, not built again
    a, b, *_, notice, _, _, shown, _ = demo_panel.show_build(job, "idle", *untouched)
    assert b.value == str(folder) and "Demo parent built" in notice and shown == "built"


def answering(request: chat_session.ChatRequest, session: chat_session.ChatSession) -> tuple[threading.Thread, list]:
    """The stream step in a thread of its own, as Gradio runs it; its views, as they come."""
    views: list = []
    thread = threading.Thread(target=lambda: views.extend(chat_actions.stream(request, session)), daemon=True)
    thread.start()
    return thread, views


def test_a_message_sent_while_the_default_merge_runs_is_answered_by_the_three_models_it_fills_in(tiny_defaults):
    """Seen in Chromium: a first visitor who sent at once got no reply in the Merged pane, which
    joined at the second message, the first missing from it."""
    session, start = chat_session.ChatSession(), ("", defaults.DEFAULT_A, defaults.DEFAULT_B)
    request = first_run.on_chat_opened(*start, session)[-1]
    page = chat_session.ChatRequest(temperature=0.0, max_new_tokens=4, merged="", parent_a=start[1], parent_b=start[2])
    box, shown = chat_actions.take_message("hello", page, session)
    assert box == "" and shown.stats[0] == chat_session.WAITING_FOR_MERGE
    assert shown.chats == [[{"role": "user", "content": "hello\n\n*⏳ waiting its turn*"}]] * 3
    thread, views = answering(page, session)
    time.sleep(1.0)
    assert thread.is_alive() and views[-1].stats[0] == chat_session.WAITING_FOR_MERGE  # it waits for the merge, saying so
    assert views[-1].chats == shown.chats  # the message still shown, waiting
    filled = first_run.merge_defaults(request, *start, session, **NO_PROGRESS)[:3]
    thread.join(60)
    assert not thread.is_alive() and session.merged_coming is None
    assert filled == (str(places.outputs_root() / "demo-merge"), tiny_defaults.a, tiny_defaults.b)
    assert tuple(p.ref for p in session.arena.panes) == filled  # the parents too: the demo pair, not the fields' start values
    assert [[m["role"] for m in chat] for chat in views[-1].chats] == [["user", "assistant"]] * 3
    assert all(chat[0]["content"] == "hello" and chat[1]["content"] for chat in views[-1].chats)
    # The next message, with the fields the merge filled, is answered after the first in every pane.
    page = dataclasses.replace(page, merged=filled[0], parent_a=filled[1], parent_b=filled[2])
    chat_actions.take_message("and again?", page, session)
    thread, views = answering(page, session)
    thread.join(60)
    assert [[m["content"] for m in chat if m["role"] == "user"] for chat in views[-1].chats] == [["hello", "and again?"]] * 3


def test_a_stop_while_the_default_merge_runs_gives_the_message_back_and_a_later_send_is_answered(tiny_defaults):
    session, start = chat_session.ChatSession(), ("", defaults.DEFAULT_A, defaults.DEFAULT_B)
    request = first_run.on_chat_opened(*start, session)[-1]
    page = chat_session.ChatRequest(temperature=0.0, max_new_tokens=4, merged="", parent_a=start[1], parent_b=start[2])
    chat_actions.take_message("hello", page, session)
    thread, views = answering(page, session)
    time.sleep(0.5)
    box, stopped = chat_actions.stop_replies("", session)
    thread.join(5)
    assert not thread.is_alive() and box == "hello"  # back in the box, nothing in the panes
    assert stopped.chats == [[], [], []] and stopped.stats[0] != chat_session.WAITING_FOR_MERGE and not session.busy
    merged, a, b, _ = first_run.merge_defaults(request, *start, session, **NO_PROGRESS)
    page = dataclasses.replace(page, merged=merged, parent_a=a, parent_b=b)  # the fields the merge filled
    chat_actions.take_message("hello", page, session)
    thread, views = answering(page, session)
    thread.join(60)
    assert [[m["role"] for m in chat] for chat in views[-1].chats] == [["user", "assistant"]] * 3
