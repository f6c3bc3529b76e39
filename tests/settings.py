"""Job settings as the tests build them: one dict of values serves every job kind of a track, each
kind taking the fields it declares (built, so missing or mistyped ones still fail)."""

from dataclasses import fields


def settings(kind, values: dict, **changes):
    names = {f.name for f in fields(kind)}
    return kind.build({k: v for k, v in {**values, **changes}.items() if k in names})


# The modules a LoRA adapts, by architecture: GPT-2 names its attention and MLP matrices its own way.
LORA_TARGETS = {"gpt2": ["c_attn", "c_proj", "c_fc"]}
ROTARY_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def lora_targets(arch: str) -> list[str]:
    return LORA_TARGETS.get(arch, ROTARY_LORA_TARGETS)
