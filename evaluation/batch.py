"""Replies to a whole prompt set at once: left-padded batches through `generate`.

For scoring a model over a prompt set (the demo parent's report, the sampling-defaults
measurement), not for chat: one batch of 16 conversations decodes in about the time of
two single replies on 2 cores. Sampling follows GenerationSettings exactly as a chat pane
does (repetition penalty, then temperature and top_p), seeded once per batch.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from evaluation.prompt_set import PromptCase
from inference.chat import build_prompt
from inference.generation import GenerationSettings


def batch_replies(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, cases: list[PromptCase],
                  settings: GenerationSettings, system_prompt: str = "", batch_size: int = 16,
                  on_batch=None) -> list[str]:
    """One reply per case. `on_batch(done, total)` is called after each batch."""
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
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=settings.max_new_tokens,
                                 repetition_penalty=settings.repetition_penalty, eos_token_id=eos, pad_token_id=pad,
                                 **sampling)
        replies += [tokenizer.decode(row[width:], skip_special_tokens=True).strip() for row in out]
        if on_batch:
            on_batch(len(replies), len(cases))
    return replies
