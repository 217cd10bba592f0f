"""Replies to a whole prompt set at once: left-padded batches through `generate`.

For scoring a model over a prompt set (the demo parent's report, the sampling-defaults
measurement), not for chat: one batch of 16 conversations decodes in about the time of
two single replies on 2 cores. Sampling follows GenerationSettings exactly as a chat pane
does (repetition penalty, then temperature and top_p), seeded once per batch.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, StoppingCriteria, StoppingCriteriaList

from evaluation.prompt_set import PromptCase
from inference.chat import build_prompt
from inference.generation import GenerationSettings


def batch_replies(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, cases: list[PromptCase],
                  settings: GenerationSettings, system_prompt: str = "", batch_size: int = 16,
                  on_batch=None) -> list[str]:
    """One reply per case. `on_batch(done, total)` is called at every decoding step, with
    the cases done counted in proportion to the steps of the batch under way (a batch of
    80 takes most of a minute on 2 cores: progress, and a Cancel raised from it, come at
    once, not a minute later)."""
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    sampling = dict(do_sample=True, temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k or None) \
        if settings.temperature > 0 else dict(do_sample=False, temperature=None, top_p=None, top_k=None)
    replies: list[str] = []
    for start in range(0, len(cases), batch_size):
        chunk = cases[start:start + batch_size]
        prompts = [build_prompt(tokenizer, list(c.messages), system_prompt, max_new_tokens=settings.max_new_tokens).input_ids
                   for c in chunk]
        width = max(map(len, prompts))
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        torch.manual_seed(settings.seed + start)
        steps = StoppingCriteriaList([Steps(on_batch, start, len(chunk), len(cases), settings.max_new_tokens)] if on_batch else [])
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=settings.max_new_tokens,
                                 repetition_penalty=settings.repetition_penalty, eos_token_id=eos, pad_token_id=pad,
                                 stopping_criteria=steps, **sampling)
        replies += [tokenizer.decode(row[width:], skip_special_tokens=True).strip() for row in out]
        if on_batch:
            on_batch(len(replies), len(cases))
    return replies


class Steps(StoppingCriteria):
    """After each decoding step of a batch, `on_batch(done, total)` with the batch's cases
    counted in proportion to its steps; stops nothing."""

    def __init__(self, on_batch, start: int, size: int, total: int, max_steps: int):
        self.on_batch, self.start, self.size, self.total, self.max_steps, self.step = on_batch, start, size, total, max_steps, 0

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        self.step += 1
        self.on_batch(self.start + self.size * self.step // self.max_steps, self.total)
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
