"""Named chat templates for the `chat_template:` config key (as in mergekit).
Anything else containing Jinja markup is taken as a template literally."""

from core.errors import UserError

NAMED_TEMPLATES = {
    "chatml": (
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    ),
    "llama3": (
        "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
        " + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
    ),
    "alpaca": (
        "{% for message in messages %}{% if message['role'] == 'system' %}{{ message['content'] + '\\n\\n' }}"
        "{% elif message['role'] == 'user' %}{{ '### Instruction:\\n' + message['content'] + '\\n\\n' }}"
        "{% else %}{{ '### Response:\\n' + message['content'] + eos_token + '\\n\\n' }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ '### Response:\\n' }}{% endif %}"
    ),
    "mistral": (
        "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
        "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
        "{{ message['content'] + eos_token }}{% else %}{{ message['content'] + '\\n\\n' }}{% endif %}{% endfor %}"
    ),
}


def resolve_template(value: str) -> str | None:
    """The template text for a `chat_template:` value; None keeps the tokenizer's own."""
    if value == "auto":
        return None
    if value in NAMED_TEMPLATES:
        return NAMED_TEMPLATES[value]
    if "{{" in value or "{%" in value:
        return value
    raise UserError("chat_template", f"'{value}' is neither a known template nor Jinja",
                     f"use auto, {', '.join(NAMED_TEMPLATES)}, or a Jinja template string")
