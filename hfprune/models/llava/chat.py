"""TinyLLaVA Factory's Phi conversation template: the system prompt and the Jinja chat template.

The text is ``"{system} "`` + per turn ``"USER: {q} "`` and ``"ASSISTANT: {a}<|endoftext|>"``, the image as
``"<image>\\n"`` before the question; the generation prompt is ``"ASSISTANT:"``. Message content is a string or a
list of ``{"type": "image"}`` / ``{"type": "text", "text": ...}`` parts.
"""

PHI_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
              "detailed, and polite answers to the user's questions.")

PHI_CHAT_TEMPLATE = (
    '{{ "' + PHI_SYSTEM + ' " }}'
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ 'USER: ' }}{% else %}{{ 'ASSISTANT: ' }}{% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}"
    "{% for part in message['content'] if part['type'] == 'image' %}{{ '<image>\\n' }}{% endfor %}"
    "{% for part in message['content'] if part['type'] == 'text' %}{{ part['text'] }}{% endfor %}"
    "{% endif %}"
    "{% if message['role'] == 'user' %}{{ ' ' }}{% else %}{{ '<|endoftext|>' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
