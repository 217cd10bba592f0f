"""A blind round's shared pace, on scripted replies: a merge five times as fast as its
parents never shows more text than they do, and what it wrote ahead comes out at the
round's pace, not at once."""

from arena.pace import CATCH_UP, FINISH_S, SharedPace
from inference.generation import Reply


def replies(lengths: list[int], done: list[bool]) -> list[Reply]:
    return [Reply(f"m{i}", text="x" * n, done=d) for i, (n, d) in enumerate(zip(lengths, done, strict=True))]


def test_every_pane_shows_the_same_length_while_all_write_and_nothing_before_all_have_begun():
    pace = SharedPace()
    assert [len(t) for t in pace.texts(replies([40, 0, 0], [False] * 3), 0.0)] == [0, 0, 0]  # the first words come together
    for step in range(1, 50):
        now = step * 0.1
        shown = [len(t) for t in pace.texts(replies([50 * step, 10 * step, 12 * step], [False] * 3), now)]
        assert shown == [10 * step] * 3, (step, shown)  # the slowest writer sets everyone's length


def test_text_written_ahead_comes_out_at_the_round_s_pace_after_the_slow_panes_finish():
    pace, now = SharedPace(), 0.0
    for step in range(1, 11):  # 1 s: the merge writes 50 characters a tick, the parents 10
        now = step * 0.1
        pace.texts(replies([min(50 * step, 300), 10 * step, 10 * step], [False] * 3), now)
    assert pace.shown == 100
    finished = replies([300, 100, 100], [True, True, True])  # every model done: the merge wrote 200 characters ahead
    lengths = []
    while not pace.caught_up(finished):
        now += 0.05
        lengths.append(len(pace.texts(finished, now)[0]))
    # Never faster than CATCH_UP times the pace the round has shown: 100 characters from its first words at 0.1 s to 1 s.
    steps = [b - a for a, b in zip([100, *lengths], lengths, strict=False)]
    assert max(steps) <= CATCH_UP * 100 / 0.9 * 0.05 + 1 and lengths[-1] == 300, steps
    assert len(lengths) >= 17  # 200 characters at up to 222 a second: about a second, not one jump
    assert [len(t) for t in pace.texts(finished, now)] == [300, 100, 100]  # whole at the end


def test_a_failed_pane_does_not_hold_the_others_back():
    pace = SharedPace()
    failed = Reply("m2", error="boom", done=True)
    shown = pace.texts([Reply("m0", text="hello"), Reply("m1", text="hey there"), failed], 0.0)
    assert shown == ["hello", "hey t", ""]


def test_once_every_model_has_finished_the_rest_comes_out_within_finish_s_however_slow_the_round_was():
    pace = SharedPace()
    pace.texts(replies([1, 1, 1], [False] * 3), 0.0)
    pace.texts(replies([400, 5, 900], [False] * 3), 10.0)  # a pane that stalled: 0.5 characters a second
    finished, now = replies([400, 5, 900], [True] * 3), 10.0
    while not pace.caught_up(finished):
        now += 0.1
        pace.texts(finished, now)
        assert now < 10.0 + FINISH_S + 0.2, pace.shown  # not the 30 minutes the round's own pace would take
