"""An offline second parent for the demo: SmolLM2 with a persona distilled into its
weights (context distillation), so merging it with the original gives a visible blend.

1. The teacher (the base model *with* the persona as system prompt) answers a fixed set
   of questions, greedily.
2. The student (the same base model, *without* a system prompt) is fine-tuned on those
   answers for a few epochs: loss on the answer tokens only, seeded, fp32, AdamW.
3. The student is saved as a bf16 safetensors folder in the cache, under a key of
   everything that shapes it, so it is built once per machine.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from core.sources import DEFAULT_MODEL, cache_root, resolve_model
from inference.chat import build_prompt

PERSONA = "You are a cheerful old pirate. Talk like a pirate, and keep your answers short and correct."
QUESTIONS = (
    "What is the capital of France?", "How many legs does a spider have?", "What is 7 times 8?",
    "Name a primary color.", "What do bees make?", "Why is the sky blue?", "What is the largest ocean?",
    "How do I boil an egg?", "Who wrote Romeo and Juliet?", "What is water made of?", "Give me a tip for sleeping well.",
    "What is the tallest animal?", "How many days are in a week?", "What is the opposite of hot?",
    "Recommend a book for a long trip.", "What planet do we live on?", "How do plants get energy?",
    "What is a computer?", "Tell me a fun fact.", "What language is spoken in Spain?",
)


@dataclass(frozen=True)
class DistillSettings:
    persona: str = PERSONA
    opening: str = "Arr!"
    questions: tuple[str, ...] = QUESTIONS
    answer_tokens: int = 40
    epochs: int = 3
    learning_rate: float = 1e-4
    seed: int = 0

    def key(self, base: str) -> str:
        text = json.dumps([base, self.persona, self.opening, self.questions, self.answer_tokens, self.epochs,
                           self.learning_rate, self.seed])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


Progress = Callable[[str, int, int], None]  # (stage, done, total)


def demo_parent_folder(base: str = DEFAULT_MODEL, settings: DistillSettings = DistillSettings(),
                       name: str = "SmolLM2-135M-Pirate") -> Path:
    """Where the demo parent of `base` lives once built (it may not exist yet)."""
    return cache_root() / "demo-parent" / f"{name}-{settings.key(str(resolve_model(base).resolve()))}"


def built_demo_parent(base: str = DEFAULT_MODEL, settings: DistillSettings = DistillSettings()) -> Path | None:
    """The demo parent's folder when it is already built, else None (never builds)."""
    target = demo_parent_folder(base, settings)
    return target if (target / "config.json").is_file() else None


def build_demo_parent(base: str = DEFAULT_MODEL, settings: DistillSettings = DistillSettings(),
                      on_progress: Progress | None = None) -> Path:
    """The distilled model's folder (built on first call, then cached)."""
    folder = resolve_model(base)
    target = demo_parent_folder(base, settings)
    if (target / "config.json").is_file():
        return target
    report = on_progress or (lambda stage, done, total: None)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    answers = _teacher_answers(model, tokenizer, settings, report)
    _fine_tune(model, tokenizer, answers, settings, report)
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model.to(torch.bfloat16).save_pretrained(work)
        tokenizer.save_pretrained(work)
        (work / "distillation.json").write_text(json.dumps({"persona": settings.persona, "answers": answers}, indent=2))
        work.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def _teacher_answers(model, tokenizer, settings: DistillSettings, report: Progress) -> dict[str, str]:
    """Greedy answers of the base model with the persona as system prompt. The answer is
    primed with the persona's opening ("Arr!"): a 135M model follows a system prompt only
    loosely, and the primed opening makes the distilled behaviour consistent and visible."""
    answers = {}
    for i, question in enumerate(settings.questions):
        prompt = build_prompt(tokenizer, [{"role": "user", "content": question}], system_prompt=settings.persona).text
        ids = tokenizer(prompt + settings.opening, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=settings.answer_tokens, eos_token_id=tokenizer.eos_token_id,
                                 pad_token_id=tokenizer.eos_token_id, temperature=None, top_p=None, top_k=None)
        answers[question] = (settings.opening + tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)).strip()
        report("teacher answers", i + 1, len(settings.questions))
    return answers


def _fine_tune(model, tokenizer, answers: dict[str, str], settings: DistillSettings, report: Progress) -> list[float]:
    """Returns the mean loss per epoch."""
    torch.manual_seed(settings.seed)
    examples = []
    for question, answer in answers.items():
        prompt = build_prompt(tokenizer, [{"role": "user", "content": question}]).input_ids  # no system prompt
        reply = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids = torch.tensor([prompt + reply])
        labels = torch.tensor([[-100] * len(prompt) + reply])  # learn the answer, not the question
        examples.append((ids, labels))
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=0.0)
    model.train()
    order = random.Random(settings.seed)
    losses, step, total = [], 0, settings.epochs * len(examples)
    for _ in range(settings.epochs):
        order.shuffle(examples)
        epoch_loss = 0.0
        for ids, labels in examples:
            loss = model(input_ids=ids, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            epoch_loss += float(loss)
            step += 1
            report("fine-tuning", step, total)
        losses.append(epoch_loss / len(examples))
    model.eval()
    return losses
