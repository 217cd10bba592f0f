"""An offline second parent for the demo: SmolLM2 that answers in a pirate's voice while
keeping the original's knowledge, so merging it with the original gives a visible blend.

1. Teacher data (evaluation/teacher_data.py): the original model answers about 140 varied
   prompts (its own subjects plus the seen half of prompts/demo.jsonl) greedily with a
   repetition penalty; answers that loop, stray off topic or swear are dropped; the rest
   are cut to whole sentences and given a pirate voice by rule.
2. The student (the same original, no system prompt) is fine-tuned on them: loss on the
   answer tokens only, seeded, fp32 weights, AdamW, small padded batches; the steps run
   under bf16 autocast only where the CPU has native bf16 (core.cpu.native_bf16).
3. A report on the *held-out* half of the prompt set, under the app's default sampling
   (the first 128 tokens of each reply): persona, on topic, loops and profanity for the
   original and the student.
4. Saved as a bf16 safetensors folder in the cache, under a key of everything that
   shapes it, so it is built once per machine.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from core.cpu import native_bf16
from core.errors import UserError
from core.sources import BUNDLED_PREFIX, DEFAULT_MODEL, bundled_gguf, cache_root, kind_of, resolve_model
from evaluation import teacher_data
from evaluation.batch import batch_replies
from evaluation.prompt_set import DEMO_PROMPTS, PromptCase, read_prompts, split_halves
from evaluation.reply_quality import Quality, loops, on_topic, profane, score
from inference.chat import build_prompt
from inference.generation import GenerationSettings

NAME = "SmolLM2-135M-Pirate"
REPORT = "demo_report.json"
MIN_EXAMPLES = 20  # the bundled SmolLM2 keeps 121 of 159
# The voice and the topic show in a reply's first sentences; at the app's 256 tokens the two
# held-out reports took a third of the build (about 160 of 457 s on a 2-core AVX2 host).
REPORT_TOKENS = 128


@dataclass(frozen=True)
class DistillSettings:
    answer_tokens: int = 56
    teacher_repetition_penalty: float = 1.2  # greedy without it looped on 8 of 38 demo prompts
    epochs: int = 3
    batch_size: int = 8
    learning_rate: float = 5e-5
    seed: int = 0
    compute: str = "auto"  # "bf16", "fp32", or "auto": bf16 where the CPU has it natively

    def compute_dtype(self) -> torch.dtype:
        """The dtype the build computes in (weights are saved in bf16 either way)."""
        if self.compute == "auto":
            return torch.bfloat16 if native_bf16() else torch.float32
        return {"bf16": torch.bfloat16, "fp32": torch.float32}[self.compute]

    def key(self, base: str) -> str:
        recipe = [base, {**asdict(self), "compute": str(self.compute_dtype())}, asdict(GenerationSettings()), REPORT_TOKENS,
                  teacher_data.SUBJECTS,
                  teacher_data.QUESTION_TEMPLATES, teacher_data.TASKS,
                  teacher_data.OPENINGS, teacher_data.CLOSINGS, teacher_data.SWAPS, DEMO_PROMPTS.read_text(encoding="utf-8")]
        return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


Progress = Callable[[str, int, int], None]  # (stage, done, total)


def demo_parent_folder(base: str = DEFAULT_MODEL, settings: DistillSettings = DistillSettings()) -> Path:
    """Where the demo parent of `base` lives once built (it may not exist yet). The bundled
    model is keyed by its name and size, not by where pip put it (a new virtualenv, or a
    fresh clone, keeps the demo parent); another base in the cache by its place there, so
    a cache that moves keeps its demo parent."""
    if kind_of(base) == "bundled":
        where = f"{base.strip()}:{bundled_gguf(base.strip().removeprefix(BUNDLED_PREFIX)).stat().st_size}"
    else:
        folder, root = resolve_model(base).resolve(), cache_root().resolve()
        where = str(folder.relative_to(root)) if folder.is_relative_to(root) else str(folder)
    return cache_root() / "demo-parent" / f"{NAME}-{settings.key(where)}"


def built_demo_parent(base: str = DEFAULT_MODEL, settings: DistillSettings = DistillSettings()) -> Path | None:
    """The demo parent's folder when it is already built, else None (never builds)."""
    target = demo_parent_folder(base, settings)
    return target if (target / "config.json").is_file() else None


def build_demo_parent(base: str = DEFAULT_MODEL, settings: DistillSettings = DistillSettings(),
                      on_progress: Progress | None = None, prompt_set: Path = DEMO_PROMPTS) -> Path:
    """The distilled model's folder (built on first call, then cached)."""
    folder = resolve_model(base)
    target = demo_parent_folder(base, settings)
    if (target / "config.json").is_file():
        return target
    report = on_progress or (lambda stage, done, total: None)
    torch.manual_seed(settings.seed)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    seen, held_out = split_halves(read_prompts(prompt_set, "prompt set"))
    # Generating in bf16 is faster only with native bf16 (docs/benchmarks.md).
    original = AutoModelForCausalLM.from_pretrained(folder, dtype=settings.compute_dtype()).eval()
    cases = teacher_data.training_cases(settings.seed) + seen
    examples = teacher_examples(original, tokenizer, cases, settings, report)
    if len(examples) < MIN_EXAMPLES:
        raise UserError("demo parent", f"only {len(examples)} of {len(cases)} of the base model's answers were usable "
                        "(on topic, loop-free, clean)", "build it from an instruct model such as the bundled SmolLM2")
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    fine_tune(model, tokenizer, examples, settings, report)
    student = model.to(settings.compute_dtype()).eval()
    figures = {"original": evaluate(original, tokenizer, held_out, report, "report: original"),
               "demo parent": evaluate(student, tokenizer, held_out, report, "report: demo parent")}
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        student.to(torch.bfloat16).save_pretrained(work)
        tokenizer.save_pretrained(work)
        (work / "teacher_answers.json").write_text(json.dumps([{"prompt": c.text, "answer": a} for c, a in examples], indent=1))
        (work / REPORT).write_text(json.dumps({name: asdict(q) for name, q in figures.items()}, indent=1))
        work.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def demo_report(folder: Path) -> dict[str, Quality]:
    """The build's held-out figures, by model ("original", "demo parent")."""
    data = json.loads((folder / REPORT).read_text())
    return {name: Quality(**q) for name, q in data.items()}


def teacher_examples(model, tokenizer, cases: list[PromptCase], settings: DistillSettings,
                     report: Progress) -> list[tuple[PromptCase, str]]:
    plain = batch_replies(model, tokenizer, cases, GenerationSettings(
        temperature=0, repetition_penalty=settings.teacher_repetition_penalty, max_new_tokens=settings.answer_tokens),
        batch_size=80, on_batch=lambda done, total: report("teacher answers", done, total))  # faster than 24, same answers
    rng = random.Random(settings.seed)
    examples = []
    for case, answer in zip(cases, plain, strict=True):
        kept = teacher_data.whole_sentences(answer)
        if len(kept) >= 20 and on_topic(kept, case.topic) and not loops(kept) and not profane(kept):
            examples.append((case, teacher_data.pirate_voice(kept, rng)))
    return examples


def fine_tune(model, tokenizer, examples: list[tuple[PromptCase, str]], settings: DistillSettings,
              report: Progress) -> list[float]:
    """Returns the mean loss per epoch."""
    rows = []
    for case, answer in examples:
        prompt = build_prompt(tokenizer, list(case.messages)).input_ids  # no system prompt: the voice goes in the weights
        reply = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append((prompt + reply, [-100] * len(prompt) + reply))  # learn the answer, not the question
    # The (tied) embedding stays frozen: the vocabulary and the output layer keep the
    # original's knowledge, and the voice is learned in the layers. bf16 autocast only
    # where bf16 is native: emulated, a step took 23x as long as in fp32.
    model.get_input_embeddings().weight.requires_grad_(False)
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=settings.learning_rate, weight_decay=0.0)
    order = random.Random(settings.seed)
    batches = -(-len(rows) // settings.batch_size)
    losses, step, total = [], 0, settings.epochs * batches
    model.train()
    for _ in range(settings.epochs):
        order.shuffle(rows)
        epoch_loss = 0.0
        for start in range(0, len(rows), settings.batch_size):
            ids, labels, mask = _padded(rows[start:start + settings.batch_size], tokenizer.eos_token_id)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=settings.compute_dtype() == torch.bfloat16):
                loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trained, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            epoch_loss += loss.item()
            step += 1
            report("fine-tuning", step, total)
        losses.append(epoch_loss / batches)
    model.eval()
    return losses


def _padded(rows: list[tuple[list[int], list[int]]], pad: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    width = max(len(ids) for ids, _ in rows)
    ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in rows])
    labels = torch.tensor([labels + [-100] * (width - len(labels)) for _, labels in rows])
    mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows])
    return ids, labels, mask


def evaluate(model, tokenizer, cases: list[PromptCase], report: Progress, stage: str) -> Quality:
    """The figures under the app's default sampling, on the first REPORT_TOKENS of each reply."""
    replies = batch_replies(model, tokenizer, cases, GenerationSettings(max_new_tokens=REPORT_TOKENS), batch_size=len(cases),
                            on_batch=lambda done, total: report(stage, done, total))
    return score(replies, cases)
