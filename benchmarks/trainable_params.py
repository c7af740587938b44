"""Trainable-parameter share of LoRA on the real Stable Audio Open 1.0 DiT (no download).

Instantiates ``StableAudioDiTModel`` with stabilityai/stable-audio-open-1.0's public
transformer config on the meta device (no memory, no weights), injects LoRA through the same
code as training, and prints trainable counts for a few settings.

    .venv/bin/python benchmarks/trainable_params.py
"""

from __future__ import annotations

import torch
from diffusers import StableAudioDiTModel

from lora_audio.adapters import add_lora, count_parameters, select_modules
from lora_audio.config import LoraSection
from lora_audio.models.base import with_peft_mixin
from lora_audio.models.stable_audio import StableAudioModel

#: transformer/config.json of stabilityai/stable-audio-open-1.0
SAO_1_0_TRANSFORMER = {
    "sample_size": 1024,
    "in_channels": 64,
    "num_layers": 24,
    "attention_head_dim": 64,
    "num_attention_heads": 24,
    "num_key_value_attention_heads": 12,
    "out_channels": 64,
    "cross_attention_dim": 768,
    "time_proj_dim": 256,
    "global_states_input_dim": 1536,
    "cross_attention_input_dim": 768,
}

SETTINGS = [
    ("r=8 attention+time_mlp (default)", LoraSection(rank=8, targets=["attention", "time_mlp"])),
    ("r=8 attention", LoraSection(rank=8, targets=["attention"])),
    ("r=16 attention+time_mlp", LoraSection(rank=16, targets=["attention", "time_mlp"])),
    (
        "r=8 attention+time_mlp+output",
        LoraSection(rank=8, targets=["attention", "time_mlp", "output"]),
    ),
]


def main() -> None:
    print("Stable Audio Open 1.0 DiT (meta device, no weights)")
    for label, lora in SETTINGS:
        with torch.device("meta"):
            dit = with_peft_mixin(StableAudioDiTModel(**SAO_1_0_TRANSFORMER))
            base = sum(p.numel() for p in dit.parameters())
            names = select_modules(dit, StableAudioModel.target_groups, lora)
            add_lora(dit, names, lora)
        trainable, _ = count_parameters(dit)
        print(
            f"{label:36s} modules {len(names):4d}  trainable {trainable:>11,}  "
            f"base {base:>13,}  {100 * trainable / base:.3f} % of base"
        )


if __name__ == "__main__":
    main()
