"""The demo's quality checks, the prompt-set format and the teacher's pirate voice."""

import json
import random

import pytest

from core.errors import UserError
from evaluation.prompt_set import DEMO_PROMPTS, read_prompts, split_halves
from evaluation.reply_quality import in_persona, loops, on_topic, profane, score
from evaluation.teacher_data import pirate_voice, training_cases, whole_sentences


def test_checks_count_what_a_reader_would():
    assert in_persona("Arr, matey! Bees make honey.") and in_persona("Ye should rest.")
    assert not in_persona("Yesterday the array of bees was yellow.")  # markers are whole words
    assert on_topic("Bees make honey.", ("bee",)) and not on_topic("Paris is in France.", ("bee",))
    assert not on_topic("A frisbee flew.", ("bee",))  # topic words match word starts only
    assert loops("They're very happy. " * 4)  # 256 tokens of this were the old merge's reply
    assert not loops("They're very happy. They're very happy. Bees are calm.")
    assert profane("I's a bitch of a bee") and profane("Oh, hell.") and not profane("Hello, shell!")
    quality = score(["Arr! Bees buzz.", "Plain text about ants."], read_prompts(DEMO_PROMPTS, "x")[1:3])
    assert (quality.n, quality.persona, quality.loops) == (2, 0.5, 0)


def test_the_demo_prompt_set_has_30_plus_varied_cases_with_topics_and_alternating_halves():
    cases = read_prompts(DEMO_PROMPTS, "prompts")
    assert len(cases) >= 30 and all(c.topic for c in cases)
    multi = [c for c in cases if len(c.messages) > 1]
    seen, held_out = split_halves(cases)
    assert multi and all(c in held_out for c in multi)  # multi-turn is learned from teacher_data, reported here
    assert len(seen) + len(held_out) == len(cases) and not {c.text for c in seen} & {c.text for c in held_out}
    assert cases[1].text == "Tell me about bees." and cases[1].topic[0] == "bee"


def test_prompt_files_in_both_formats_and_their_errors(tmp_path):
    text = tmp_path / "p.txt"
    text.write_text("# comment\nhello\n\nhow are you?\n")
    assert [c.text for c in read_prompts(text, "--prompts")] == ["hello", "how are you?"]
    good = tmp_path / "p.jsonl"
    good.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
                                             {"role": "user", "content": "and?"}], "topic": ["Hi"]}) + "\n")
    (case,) = read_prompts(good, "--prompts")
    assert case.text == "and?" and len(case.messages) == 3 and case.topic == ("hi",)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\nnot json\n')
    with pytest.raises(UserError, match=r"--prompts: bad.jsonl line 2 is not a prompt object"):
        read_prompts(bad, "--prompts")
    bad.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}))
    with pytest.raises(UserError, match="does not end with a user turn"):
        read_prompts(bad, "--prompts")


def test_the_teacher_keeps_the_content_and_adds_the_voice():
    answer = whole_sentences("Bees make honey. You can see them in your garden. They dance! And then they")
    assert answer == "Bees make honey. You can see them in your garden. They dance!"
    voiced = pirate_voice(answer, random.Random(0))
    assert in_persona(voiced) and "Ye can see them in yer garden." in voiced and "Bees make honey." in voiced
    cases = training_cases()
    assert len(cases) >= 100 and len({c.text for c in cases}) > 0.9 * len(cases)
    demo = {c.text for c in read_prompts(DEMO_PROMPTS, "x")}
    assert not demo & {c.text for c in cases}  # the held-out half is never a training prompt
