"""Typed run configuration: dataclass sections, YAML files, ``key=value`` overrides.

The schema is the :class:`RunConfig` dataclass tree, turned into an OmegaConf structured
config. A YAML file and command-line overrides (``lora.rank=16``) are merged onto it in that
order; an unknown or misspelt key, or a value of the wrong type, stops at once with a
:class:`ConfigError` naming the key path and the allowed keys. :func:`load_config` returns
plain dataclass objects, validated.

To add a section (``data``, ``train``): write its dataclass, add a field to :class:`RunConfig`
and, if needed, checks to :func:`validate`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

#: LoRA target groups every family maps to its own module names
TARGET_GROUPS = ("attention", "time_mlp", "output")
LORA_INITS = ("default", "gaussian")
DTYPES = ("float32", "bfloat16", "float16")


class ConfigError(ValueError):
    """A configuration problem, one line, naming the key and what is allowed."""


@dataclass
class ModelSection:
    """Which pretrained model to adapt."""

    #: stable-audio | ace-step | stable-audio-3 | audioldm2
    family: str = "stable-audio"
    #: local diffusers pipeline folder, hub id (online), or tiny:<family> (tests, offline demo)
    path: str = "stabilityai/stable-audio-open-1.0"
    #: weights dtype: float32 | bfloat16 | float16
    dtype: str = "float32"


@dataclass
class LoraSection:
    """LoRA shape and where it goes. Defaults: the reference recipe for music generation."""

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.25
    #: groups among attention | time_mlp | output
    targets: list[str] = field(default_factory=lambda: ["attention", "time_mlp"])
    #: extra regexes (re.fullmatch over the denoiser's module names) to adapt
    include: list[str] = field(default_factory=list)
    #: regexes of module names never to adapt (applied last)
    exclude: list[str] = field(default_factory=list)
    #: default (A Kaiming-uniform, B zero) | gaussian (A normal / rank, B zero)
    init: str = "default"
    #: rank-stabilised scaling alpha / sqrt(rank) instead of alpha / rank
    use_rslora: bool = False
    #: weight-decomposed LoRA (DoRA)
    use_dora: bool = False


@dataclass
class RunConfig:
    """The whole run configuration; later steps add their own sections here."""

    model: ModelSection = field(default_factory=ModelSection)
    lora: LoraSection = field(default_factory=LoraSection)


def load_config(
    path: str | os.PathLike | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> RunConfig:
    """Defaults <- YAML file at ``path`` <- ``key=value`` overrides; validated."""
    schema = OmegaConf.structured(RunConfig)
    layers = []
    where = "defaults"
    try:
        if path is not None:
            where = str(path)
            if not Path(path).is_file():
                raise ConfigError(f"{path}: config file not found")
            loaded = OmegaConf.load(path)
            if not isinstance(loaded, type(schema)) and loaded is not None:
                raise ConfigError(f"{path}: the top level must be a mapping of sections")
            layers.append(loaded or {})
        for item in overrides:
            where = f"override {item!r}"
            if "=" not in item:
                raise ConfigError(f"override {item!r}: expected key=value, e.g. lora.rank=16")
            layers.append(OmegaConf.from_dotlist([item]))
        merged = OmegaConf.merge(schema, *layers)
        cfg: RunConfig = OmegaConf.to_object(merged)  # type: ignore[assignment]
    except ConfigKeyError as exc:
        raise ConfigError(f"{where}: {_unknown_key_message(exc)}") from None
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", "") or "?"
        first = str(exc).splitlines()[0]
        raise ConfigError(f"{where}: {key}: {first}") from None
    validate(cfg)
    return cfg


def _unknown_key_message(exc: ConfigKeyError) -> str:
    full_key = exc.full_key or str(exc.key)
    parent = full_key.rsplit(".", 1)[0] if "." in full_key else ""
    node: Any = RunConfig
    for part in parent.split(".") if parent else []:
        node = typing.get_type_hints(node).get(part) if dataclasses.is_dataclass(node) else None
    allowed = [f.name for f in dataclasses.fields(node)] if dataclasses.is_dataclass(node) else []
    scope = f" in {parent}" if parent else ""
    return f"unknown key {full_key!r}; allowed keys{scope}: {', '.join(allowed)}"


def validate(cfg: RunConfig) -> None:
    """Value checks the types alone cannot express."""
    from lora_audio.models import FAMILIES

    if cfg.model.family not in FAMILIES:
        raise ConfigError(f"model.family: {cfg.model.family!r} is not one of {', '.join(FAMILIES)}")
    if not cfg.model.path:
        raise ConfigError("model.path: empty; give a pipeline folder, hub id or tiny:<family>")
    if cfg.model.dtype not in DTYPES:
        raise ConfigError(f"model.dtype: {cfg.model.dtype!r} is not one of {', '.join(DTYPES)}")
    lora = cfg.lora
    if lora.rank < 1:
        raise ConfigError(f"lora.rank: must be >= 1, got {lora.rank}")
    if lora.alpha <= 0:
        raise ConfigError(f"lora.alpha: must be > 0, got {lora.alpha}")
    if not 0.0 <= lora.dropout < 1.0:
        raise ConfigError(f"lora.dropout: must be in [0, 1), got {lora.dropout}")
    bad = [t for t in lora.targets if t not in TARGET_GROUPS]
    if bad:
        raise ConfigError(
            f"lora.targets: unknown group(s) {bad}; allowed: {', '.join(TARGET_GROUPS)}"
        )
    if not lora.targets and not lora.include:
        raise ConfigError("lora.targets and lora.include are both empty: nothing to adapt")
    if lora.init not in LORA_INITS:
        raise ConfigError(f"lora.init: {lora.init!r} is not one of {', '.join(LORA_INITS)}")
    for key in ("include", "exclude"):
        for pattern in getattr(lora, key):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigError(f"lora.{key}: bad regex {pattern!r} ({exc})") from None


def to_dict(cfg: RunConfig) -> dict[str, Any]:
    """Plain JSON-serialisable dict of a config (for adapter.json, logs)."""
    return dataclasses.asdict(cfg)
