"""Batched replies over a prompt set report progress at every decoding step, so a long
batch (the demo parent's 80 teacher answers) shows where it is and stops on a Cancel
within a step, not at the batch's end."""

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from evaluation.batch import batch_replies
from evaluation.prompt_set import PromptCase
from inference.generation import GenerationSettings


class Cancelled(Exception):
    pass


def test_progress_comes_at_every_step_and_a_cancel_raised_from_it_stops_the_batch(tiny_models):
    folder = tiny_models("llama", 1)
    model, tokenizer = AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    cases = [PromptCase(({"role": "user", "content": f"question {i}"},)) for i in range(6)]
    settings = GenerationSettings(temperature=0, max_new_tokens=8, min_new_tokens=8)
    seen = []
    replies = batch_replies(model, tokenizer, cases, settings, batch_size=3, on_batch=lambda done, total: seen.append((done, total)))
    assert len(replies) == 6 and len(seen) >= 2 * 8  # every step of both batches, not only their ends
    assert [done for done, _ in seen] == sorted(done for done, _ in seen) and seen[-1] == (6, 6) and {t for _, t in seen} == {6}
    assert (1, 6) in seen and (4, 6) in seen  # within the first batch, and within the second

    def cancel_at_step_two(done, total, calls=[]):  # noqa: B006 -- counts the calls
        calls.append(done)
        if len(calls) == 2:
            raise Cancelled

    with pytest.raises(Cancelled):
        batch_replies(model, tokenizer, cases, settings, batch_size=6, on_batch=cancel_at_step_two)
