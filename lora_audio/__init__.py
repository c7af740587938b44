"""lora-audio: teach a pretrained music diffusion model a new style from a few recordings."""

__version__ = "0.1.0"
