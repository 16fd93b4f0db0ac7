"""Chat templates for models whose GGUF carries none.

Some GGUF conversions drop `tokenizer.chat_template` (the Gemma 3 270M file llorch uses
as its default model has none). Rendering such a model's chats with a generic template
(ChatML) gives it markers it was never trained on. `builtin_template` returns the
model family's published template for the architectures known here, by the GGUF's
`general.architecture`; None for others (the caller's generic fallback applies).

- `gemma3`: Gemma 3's template, as published in `tokenizer_config.json` of
  google/gemma-3-270m-it (and the other Gemma 3 instruction-tuned models): a system
  message becomes the first user turn's prefix, roles must alternate, the assistant's
  role is `model`.
"""

from __future__ import annotations

__all__ = ["GEMMA3_TEMPLATE", "builtin_template"]

GEMMA3_TEMPLATE = (
    "{{ bos_token }}\n"
    "{%- if messages[0]['role'] == 'system' -%}\n"
    "    {%- if messages[0]['content'] is string -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}\n"
    "    {%- else -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\\n\\n' -%}\n"
    "    {%- endif -%}\n"
    "    {%- set loop_messages = messages[1:] -%}\n"
    "{%- else -%}\n"
    '    {%- set first_user_prefix = "" -%}\n'
    "    {%- set loop_messages = messages -%}\n"
    "{%- endif -%}\n"
    "{%- for message in loop_messages -%}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
    '        {{ raise_exception("Conversation roles must alternate '
    'user/assistant/user/assistant/...") }}\n'
    "    {%- endif -%}\n"
    "    {%- if (message['role'] == 'assistant') -%}\n"
    '        {%- set role = "model" -%}\n'
    "    {%- else -%}\n"
    "        {%- set role = message['role'] -%}\n"
    "    {%- endif -%}\n"
    "    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else \"\") }}\n"
    "    {%- if message['content'] is string -%}\n"
    "        {{ message['content'] | trim }}\n"
    "    {%- elif message['content'] is iterable -%}\n"
    "        {%- for item in message['content'] -%}\n"
    "            {%- if item['type'] == 'image' -%}\n"
    "                {{ '<start_of_image>' }}\n"
    "            {%- elif item['type'] == 'text' -%}\n"
    "                {{ item['text'] | trim }}\n"
    "            {%- endif -%}\n"
    "        {%- endfor -%}\n"
    "    {%- else -%}\n"
    '        {{ raise_exception("Invalid content type") }}\n'
    "    {%- endif -%}\n"
    "    {{ '<end_of_turn>\\n' }}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "    {{'<start_of_turn>model\\n'}}\n"
    "{%- endif -%}\n"
)

_BY_ARCHITECTURE = {"gemma3": GEMMA3_TEMPLATE}


def builtin_template(architecture: str) -> str | None:
    """The published chat template of `architecture`'s models, None when none is known."""
    return _BY_ARCHITECTURE.get(architecture)
