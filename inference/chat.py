"""Turn a conversation into one model's prompt through that model's own chat template.

- Models without a chat template get FALLBACK_TEMPLATE, a plain "User:/Assistant:"
  transcript that base models continue sensibly.
- A system prompt is sent as a system message; templates that reject the system role
  (Gemma's raise an exception) get it folded into the first user turn instead.
- When the prompt plus the reply budget exceed the model's context, the oldest turns
  are dropped (and a notice says so); a single message too long on its own is an error.
  The reply is then limited to what is left of the context.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from core.errors import UserError

Message = dict[str, str]  # {"role": "user" | "assistant" | "system", "content": str}

FALLBACK_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] + '\\n\\n' }}"
    "{% elif message['role'] == 'user' %}{{ 'User: ' + message['content'] + '\\n' }}"
    "{% else %}{{ 'Assistant: ' + message['content'] + '\\n' }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


@dataclass(frozen=True)
class Prompt:
    text: str
    input_ids: list[int]
    notice: str = ""  # e.g. which turns were dropped, or that the fallback template was used


def build_prompt(tokenizer: PreTrainedTokenizerBase, history: list[Message], system_prompt: str = "",
                 context_length: int = 2048, max_new_tokens: int = 256) -> Prompt:
    if not history or history[-1]["role"] != "user" or not history[-1]["content"].strip():
        raise UserError("prompt", "empty message", "type a message before sending")
    notices = []
    template = tokenizer.chat_template
    if template is None:
        template = FALLBACK_TEMPLATE
        notices.append("no chat template: plain User/Assistant format used")
    # Keep room for the reply, but never more than half the context: a small-context
    # model with a large max_new_tokens still answers (with a shorter reply).
    budget = context_length - min(max_new_tokens, context_length // 2)
    dropped = 0
    turns = list(history)
    while True:
        text = _render(tokenizer, template, turns, system_prompt)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) <= budget:
            break
        if len(turns) <= 1:
            raise UserError("prompt", f"the message is {len(ids)} tokens; this model reads {context_length} "
                                 f"including the reply", "shorten the message or lower max new tokens")
        turns = turns[2:] if len(turns) > 2 else turns[-1:]  # drop the oldest user/assistant pair
        dropped += 1
    if dropped:
        notices.append(f"dropped the {dropped} oldest turn(s) to fit the {context_length}-token context")
    return Prompt(text, ids, "; ".join(notices))


def message_tokens(tokenizer: PreTrainedTokenizerBase, message: str, system_prompt: str = "") -> int:
    """The tokens of a prompt that holds only this message (and the system prompt), in the
    model's chat template: what no dropping of older turns can shorten."""
    template = tokenizer.chat_template or FALLBACK_TEMPLATE
    text = _render(tokenizer, template, [{"role": "user", "content": message}], system_prompt)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _render(tokenizer: PreTrainedTokenizerBase, template: str, turns: list[Message], system_prompt: str) -> str:
    messages = [{"role": m["role"], "content": m["content"]} for m in turns]
    if not system_prompt:
        return tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False, add_generation_prompt=True)
    try:
        return tokenizer.apply_chat_template([{"role": "system", "content": system_prompt}, *messages],
                                             chat_template=template, tokenize=False, add_generation_prompt=True)
    except Exception:  # noqa: BLE001 -- jinja's raise_exception() raises a plain TemplateError
        first = next(i for i, m in enumerate(messages) if m["role"] == "user")
        messages[first] = {"role": "user", "content": f"{system_prompt}\n\n{messages[first]['content']}"}
        return tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False, add_generation_prompt=True)
