"""Prompt templates (methods.md §1.3). A preset name or a literal with one `<image>` and one `{prompt}`."""

from __future__ import annotations

from vh_bench.errors import ConfigError

_SYSTEM_USER = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
_SYSTEM_HUMAN = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)

PRESETS: dict[str, str] = {
    "hf": "USER: <image>\n{prompt} ASSISTANT:",
    "vicuna_v1": _SYSTEM_USER + " USER: <image>\n{prompt} ASSISTANT:",
    "llava_v1": _SYSTEM_HUMAN + " USER: <image>\n{prompt} ASSISTANT:",
    # HALC's and VASparse's caption drivers: no separator after the system message, a space after
    # the image placeholder.
    "halc": _SYSTEM_USER + "USER: <image> {prompt} ASSISTANT:",
    # InstructBLIP has no chat template: the instruction is the whole prompt, after the 32 query
    # tokens (LAVIS's `prompt`; the processor places the queries, vh_bench/models/instructblip.py).
    "instructblip": "<image>{prompt}",
    # Qwen2.5-VL-Instruct's chat format with its default system message; the Qwen adapter writes
    # its vision block (<|vision_start|><|image_pad|><|vision_end|>) where `<image>` stands.
    "qwen": "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<image>{prompt}<|im_end|>\n"
    "<|im_start|>assistant\n",
}


def resolve_template(template: str) -> str:
    """The literal template string for a preset name or a literal; validated."""
    text = PRESETS.get(template, template)
    if text.count("<image>") != 1 or text.count("{prompt}") != 1:
        raise ConfigError(
            "model.prompt_template",
            f"{template!r} is neither a preset ({', '.join(PRESETS)}) nor a string with exactly one "
            "<image> and one {prompt}",
        )
    return text


def render(template: str, prompt: str) -> str:
    # str.replace, not str.format: prompts may contain braces.
    return resolve_template(template).replace("{prompt}", prompt)
