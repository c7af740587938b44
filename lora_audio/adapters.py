"""LoRA on a family's denoiser: targets, injection, adapter files, strengths, fusing, merging.

An adapter is a folder::

    pytorch_lora_weights.safetensors   diffusers-standard LoRA file: keys
                                       "<denoiser>.<module>.lora_A.weight" / "...lora_B.weight"
                                       (<denoiser> = transformer | unet), header metadata
                                       {"format": "pt", "lora_adapter_metadata": <LoraConfig JSON,
                                       keys prefixed "<denoiser>.">}, as diffusers'
                                       save_lora_weights writes it
    adapter.json                       family, base model id + fingerprint, rank, alpha,
                                       targets, sha256 of the weights file, training config

The LoRA scale (alpha / rank, or alpha / sqrt(rank) with rsLoRA) is baked into ``lora_B``
and the file's metadata says ``lora_alpha = r``: strength 1.0 means what was trained, in
lora-audio and in any diffusers/PEFT loader. Only safetensors and JSON are ever read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import re
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn

from lora_audio import __version__
from lora_audio.config import LoraSection
from lora_audio.files import sha256_file, write_json_atomic, write_safetensors
from lora_audio.models.base import AudioModel

log = logging.getLogger(__name__)

WEIGHTS_NAME = "pytorch_lora_weights.safetensors"
INFO_NAME = "adapter.json"
METADATA_KEY = "lora_adapter_metadata"  # diffusers.loaders.lora_base.LORA_ADAPTER_METADATA_KEY
FORMAT_VERSION = 1
#: module types LoRA is put on (kept to Linear so every loader handles the files)
ADAPTABLE = (nn.Linear,)


class AdapterError(ValueError):
    """An adapter cannot be used as asked; the message names the folder and the fix."""


# --------------------------------------------------------------------------- targets
def target_modules(model: AudioModel, lora: LoraSection) -> list[str]:
    """Names of ``model``'s denoiser Linear modules chosen by the ``lora`` section."""
    return select_modules(model.denoiser, model.target_groups, lora, model.family)


def select_modules(
    denoiser: nn.Module, groups: dict[str, str], lora: LoraSection, family: str = "this"
) -> list[str]:
    """Linear module names chosen by ``lora.targets``/``include``/``exclude``.

    A group matches with ``re.fullmatch`` of the family's pattern (``groups``); ``include``
    adds regexes, ``exclude`` removes any name it matches. Raises :class:`AdapterError` if
    nothing matches or a chosen group matches nothing.
    """
    patterns = []
    for group in lora.targets:
        if group not in groups:
            raise AdapterError(
                f"lora.targets: group {group!r} unknown for {family}; have {', '.join(groups)}"
            )
        patterns.append(groups[group])
    patterns += list(lora.include)
    names = [n for n, m in _base_modules(denoiser) if isinstance(m, ADAPTABLE)]
    chosen = [n for n in names if any(re.fullmatch(p, n) for p in patterns)]
    chosen = [n for n in chosen if not any(re.fullmatch(p, n) for p in lora.exclude)]
    for group in lora.targets:
        if not any(re.fullmatch(groups[group], n) for n in chosen):
            raise AdapterError(f"LoRA group {group!r} matches no module of the {family} denoiser")
    if not chosen:
        raise AdapterError("the LoRA targets/include/exclude settings leave no module to adapt")
    return chosen


def _base_modules(module: nn.Module) -> Iterable[tuple[str, nn.Module]]:
    """Named modules with PEFT wrappers looked through (``x.base_layer`` reported as ``x``)."""
    for name, m in module.named_modules():
        if ".lora_" in name or name.endswith(".base_layer") or ".base_layer." in name:
            continue
        yield name, getattr(m, "base_layer", m)


# ------------------------------------------------------------------------- injection
def lora_scale(rank: int, alpha: float, use_rslora: bool = False) -> float:
    """The factor PEFT multiplies ``B @ A`` by."""
    return alpha / math.sqrt(rank) if use_rslora else alpha / rank


def inject_lora(model: AudioModel, lora: LoraSection, adapter_name: str = "default") -> list[str]:
    """Add a fresh trainable LoRA adapter to ``model``'s denoiser; returns the adapted names."""
    return add_lora(model.denoiser, target_modules(model, lora), lora, adapter_name)


def add_lora(
    denoiser: nn.Module, names: list[str], lora: LoraSection, adapter_name: str = "default"
) -> list[str]:
    """Put a trainable LoRA adapter on the named modules of ``denoiser``; freeze the rest.

    ``denoiser`` must carry ``PeftAdapterMixin`` (see ``with_peft_mixin``). This is the single
    place adapters are created. The layers add their update in one GEMM
    (:func:`add_update_in_one_gemm`) and, with ``dropout_placement: rank``, drop out the rank-r
    activation (:func:`move_dropout_to_rank`); both keep LoRA steps close to the frozen base's
    cost. Logs the trainable-parameter count and percentage.
    """
    from peft import LoraConfig

    config = LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=names,
        init_lora_weights=True if lora.init == "default" else "gaussian",
        use_rslora=lora.use_rslora,
        use_dora=lora.use_dora,
    )
    denoiser.requires_grad_(False)
    denoiser.add_adapter(config, adapter_name=adapter_name)
    add_update_in_one_gemm(denoiser, adapter_name)
    if lora.dropout > 0 and getattr(lora, "dropout_placement", "input") == "rank":
        move_dropout_to_rank(denoiser, adapter_name, lora.dropout)
    for pname, p in denoiser.named_parameters():
        p.requires_grad_(_is_lora_param(pname, adapter_name))
    trainable, total = count_parameters(denoiser)
    log.info(
        "LoRA r=%d alpha=%g on %d modules: %s trainable of %s parameters (%.3f %%)",
        lora.rank,
        lora.alpha,
        len(names),
        f"{trainable:,}",
        f"{total:,}",
        100.0 * trainable / max(total, 1),
    )
    return names


def move_dropout_to_rank(denoiser: nn.Module, adapter_name: str, p: float) -> int:
    """Apply LoRA dropout to the rank-r activation, ``B(drop(A x))``, instead of PEFT's ``B(A drop(x))``.

    PEFT draws a dropout mask over the full-width input ``x`` ``[B, L, D]`` of every adapted
    layer, which costs about as much as the layer itself; a mask over ``A x`` ``[B, L, r]`` is
    ``D / r`` times smaller and costs next to nothing. Dropout is training-only (identity in
    ``eval()``), so weights and files are unchanged. Returns the number of layers changed.
    """
    from peft.tuners.lora import LoraLayer

    def drop_rank(module: nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        return nn.functional.dropout(output, p, module.training)

    changed = 0
    for m in denoiser.modules():
        if isinstance(m, LoraLayer) and adapter_name in m.lora_dropout:
            m.lora_dropout[adapter_name] = nn.Identity()
            m.lora_A[adapter_name].register_forward_hook(drop_rank)
            changed += 1
    return changed


class _AddmmLora:
    """PEFT LoRA variant: plain LoRA whose update is added by the GEMM that computes it.

    PEFT computes ``result + B(A(x)) * scaling``: the product ``[..., out]`` lands in a new
    tensor, one pass scales it and another adds it to the base output, and backward scales the
    gradient in a third pass. ``torch.addmm(result, A(x), B^T, alpha=scaling)`` does it in one
    GEMM, so a LoRA training step costs close to the frozen base's forward + backward.
    Parameters, files, merging and results (up to float rounding) are those of plain LoRA.
    """

    @staticmethod
    def init(module: nn.Module, adapter_name: str, **kwargs: Any) -> None:
        pass

    @staticmethod
    def merge_safe(module: Any, active_adapter: str, orig_weight: torch.Tensor) -> torch.Tensor:
        return orig_weight + module.get_delta_weight(active_adapter).to(orig_weight.dtype)

    @staticmethod
    def merge_unsafe(module: Any, active_adapter: str, orig_weight: torch.Tensor) -> None:
        orig_weight.data += module.get_delta_weight(active_adapter).to(orig_weight.dtype)

    @staticmethod
    def unmerge(module: Any, active_adapter: str, orig_weight: torch.Tensor) -> torch.Tensor:
        return orig_weight.data - module.get_delta_weight(active_adapter).to(orig_weight.dtype)

    @staticmethod
    def supports_lora_conversion() -> bool:
        return True

    @staticmethod
    def forward(
        module: Any, active_adapter: str, x: torch.Tensor, result: torch.Tensor, **kwargs: Any
    ) -> torch.Tensor:
        """``result [..., out]`` (the base layer's output) plus the update of ``x [..., in]``."""
        lora_b = module.lora_B[active_adapter]
        h = module.lora_A[active_adapter](module.lora_dropout[active_adapter](x))  # [..., r]
        scaling = module.scaling[active_adapter]
        if h.dtype != result.dtype or lora_b.bias is not None:  # what PEFT itself does
            return result + lora_b(h) * scaling
        out = torch.addmm(
            result.reshape(-1, result.shape[-1]),
            h.reshape(-1, h.shape[-1]),
            lora_b.weight.t(),
            alpha=scaling,
        )
        return out.view(result.shape)


def add_update_in_one_gemm(denoiser: nn.Module, adapter_name: str) -> int:
    """Make the adapter's Linear LoRA layers add their update with one GEMM (:class:`_AddmmLora`).

    Leaves alone layers that already use a PEFT variant (DoRA) and PEFT versions without
    variants. Returns the number of layers changed.
    """
    from peft.tuners.lora import Linear

    changed = 0
    for m in denoiser.modules():
        variants = getattr(m, "lora_variant", None)
        if (
            isinstance(m, Linear)
            and variants is not None
            and adapter_name in m.lora_A
            and adapter_name not in variants
        ):
            variants[adapter_name] = _AddmmLora()
            changed += 1
    return changed


def _is_lora_param(name: str, adapter_name: str) -> bool:
    return (".lora_" in name) and (f".{adapter_name}." in name or name.endswith(f".{adapter_name}"))


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts."""
    total = trainable = 0
    for p in module.parameters():
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return trainable, total


# ---------------------------------------------------------------------- fingerprint
def base_fingerprint(model: AudioModel, sample_bytes: int = 64) -> str:
    """Cheap content-based fingerprint of the denoiser's base weights.

    From the denoiser's safetensors files on disk: sha256 over each file's header (tensor
    names, dtypes, shapes, offsets) and the first and last ``sample_bytes`` bytes of every
    tensor's data. It reads a few KB, not the weights, and does not depend on the dtype the
    model was loaded in. Without files (a model not loaded from a folder) it falls back to
    names, shapes and the first values of each in-memory base tensor (``mem:`` prefix).
    """
    folder = model.denoiser_folder
    files = sorted(folder.glob("*.safetensors")) if folder is not None and folder.is_dir() else []
    h = hashlib.sha256()
    if files:
        for path in files:
            with open(path, "rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                header_bytes = f.read(n)
                h.update(header_bytes)
                header = json.loads(header_bytes)
                for name in sorted(k for k in header if k != "__metadata__"):
                    start, end = header[name]["data_offsets"]
                    for pos in {start, max(start, end - sample_bytes)}:
                        f.seek(8 + n + pos)
                        h.update(f.read(min(sample_bytes, end - pos)))
        return h.hexdigest()
    for name, p in sorted(base_state(model.denoiser).items()):
        h.update(f"{name}{tuple(p.shape)}".encode())
        h.update(p.detach().flatten()[:16].float().cpu().numpy().tobytes())
    return "mem:" + h.hexdigest()


def base_state(denoiser: nn.Module) -> dict[str, torch.Tensor]:
    """The denoiser's base tensors under their original names (LoRA parameters left out)."""
    out = {}
    for name, t in denoiser.state_dict().items():
        if ".lora_" in name or ".lora_magnitude_vector" in name:
            continue
        out[name.replace(".base_layer.", ".")] = t
    return out


# -------------------------------------------------------------------------- files
@dataclass
class AdapterInfo:
    """Contents of ``adapter.json``."""

    family: str
    base_model: str
    base_fingerprint: str
    rank: int
    alpha: float
    use_rslora: bool
    use_dora: bool
    #: alpha / rank (or / sqrt(rank)) already multiplied into lora_B
    scale_baked: float
    target_modules: list[str]
    target_groups: list[str]
    denoiser_prefix: str
    weights_sha256: str
    num_parameters: int
    training_config: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    created_by: str = f"lora-audio {__version__}"


def lora_state_dict(model: AudioModel, adapter_name: str = "default") -> dict[str, torch.Tensor]:
    """Adapter tensors under diffusers/PEFT keys (``<module>.lora_A.weight``), unscaled."""
    from peft.utils import get_peft_model_state_dict

    sd = get_peft_model_state_dict(model.denoiser, adapter_name=adapter_name)
    return {k: v.detach().float().cpu().contiguous() for k, v in sd.items()}


def save_adapter(
    model: AudioModel,
    folder: str | Path,
    lora: LoraSection,
    adapter_name: str = "default",
    training_config: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> AdapterInfo:
    """Write the adapter folder (weights + adapter.json), each file atomically."""
    folder = Path(folder)
    if (folder / INFO_NAME).exists() and not overwrite:
        raise AdapterError(
            f"{folder}: an adapter is already there; choose another folder or delete it"
        )
    config = model.denoiser.peft_config[adapter_name]
    scale = lora_scale(config.r, config.lora_alpha, config.use_rslora)
    tensors = lora_state_dict(model, adapter_name)
    tensors = {k: v * scale if ".lora_B." in k else v for k, v in tensors.items()}
    names = sorted({k.split(".lora_")[0] for k in tensors if ".lora_A." in k})
    groups = [g for g in lora.targets if g in model.target_groups]
    return write_adapter(
        folder,
        tensors,
        family=model.family,
        base_model=model.source,
        fingerprint=base_fingerprint(model),
        denoiser_prefix=model.denoiser_name,
        rank=config.r,
        alpha=float(config.lora_alpha),
        use_rslora=bool(config.use_rslora),
        use_dora=bool(config.use_dora),
        scale_baked=scale,
        target_modules_=names,
        target_groups=groups,
        training_config=training_config or {},
    )


def write_adapter(
    folder: Path,
    tensors: dict[str, torch.Tensor],
    *,
    family: str,
    base_model: str,
    fingerprint: str,
    denoiser_prefix: str,
    rank: int,
    alpha: float,
    use_rslora: bool,
    use_dora: bool,
    scale_baked: float,
    target_modules_: list[str],
    target_groups: list[str],
    training_config: dict[str, Any],
) -> AdapterInfo:
    """Write already-baked ``tensors`` (unprefixed PEFT keys) as an adapter folder."""
    folder.mkdir(parents=True, exist_ok=True)
    peft_meta = {
        "r": rank,
        "lora_alpha": rank,  # scale baked into lora_B: PEFT's scaling must be 1
        "use_rslora": False,
        "use_dora": use_dora,
        "target_modules": target_modules_,
        "lora_dropout": 0.0,
        "bias": "none",
        "init_lora_weights": True,
        "peft_type": "LORA",
    }
    metadata = {
        "format": "pt",
        METADATA_KEY: json.dumps(
            {f"{denoiser_prefix}.{k}": v for k, v in peft_meta.items()}, indent=2, sort_keys=True
        ),
    }
    prefixed = {f"{denoiser_prefix}.{k}": v.contiguous() for k, v in tensors.items()}
    write_safetensors(folder / WEIGHTS_NAME, prefixed, metadata)
    info = AdapterInfo(
        family=family,
        base_model=base_model,
        base_fingerprint=fingerprint,
        rank=rank,
        alpha=alpha,
        use_rslora=use_rslora,
        use_dora=use_dora,
        scale_baked=scale_baked,
        target_modules=target_modules_,
        target_groups=target_groups,
        denoiser_prefix=denoiser_prefix,
        weights_sha256=sha256_file(folder / WEIGHTS_NAME),
        num_parameters=sum(v.numel() for v in tensors.values()),
        training_config=training_config,
    )
    write_json_atomic(folder / INFO_NAME, asdict(info))
    log.info("saved adapter to %s (%s parameters)", folder, f"{info.num_parameters:,}")
    return info


def read_adapter(folder: str | Path) -> tuple[AdapterInfo, dict[str, torch.Tensor], dict[str, str]]:
    """``(info, tensors with unprefixed PEFT keys, safetensors header metadata)``; checks sha256."""
    folder = Path(folder)
    info_path, weights_path = folder / INFO_NAME, folder / WEIGHTS_NAME
    if not info_path.is_file() or not weights_path.is_file():
        raise AdapterError(
            f"{folder}: not an adapter folder (needs {INFO_NAME} and {WEIGHTS_NAME})"
        )
    try:
        raw = json.loads(info_path.read_text(encoding="utf-8"))
        info = AdapterInfo(**raw)
    except (json.JSONDecodeError, TypeError) as exc:
        raise AdapterError(f"{info_path}: unreadable adapter.json ({exc})") from None
    if info.format_version > FORMAT_VERSION:
        raise AdapterError(
            f"{info_path}: format {info.format_version} is newer than this lora-audio; upgrade it"
        )
    digest = sha256_file(weights_path)
    if digest != info.weights_sha256:
        raise AdapterError(
            f"{weights_path}: sha256 differs from adapter.json (file changed or corrupt)"
        )
    prefix = info.denoiser_prefix + "."
    with safe_open(str(weights_path), framework="pt") as f:
        metadata = f.metadata() or {}
        tensors = {k.removeprefix(prefix): f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    return info, tensors, metadata


def load_adapter(
    model: AudioModel,
    folder: str | Path,
    adapter_name: str | None = None,
    allow_base_mismatch: bool = False,
) -> str:
    """Load an adapter folder into the denoiser (inactive strengths untouched); returns its name.

    Refuses another family, or other base weights (fingerprint) unless ``allow_base_mismatch``.
    """
    folder = Path(folder)
    info, tensors, metadata = read_adapter(folder)
    if info.family != model.family:
        raise AdapterError(f"{folder}: adapter is for {info.family}, the model is {model.family}")
    fingerprint = base_fingerprint(model)
    if info.base_fingerprint != fingerprint:
        message = (
            f"{folder}: adapter was trained on {info.base_model} (fingerprint "
            f"{info.base_fingerprint[:16]}), this model {model.source} has {fingerprint[:16]}"
        )
        if not allow_base_mismatch:
            raise AdapterError(message + "; pass --allow-base-mismatch to load it anyway")
        log.warning("%s; loading anyway", message)
    name = adapter_name or _unique_name(model, folder.name)
    prefixed = {f"{info.denoiser_prefix}.{k}": v for k, v in tensors.items()}
    peft_meta = json.loads(metadata[METADATA_KEY]) if METADATA_KEY in metadata else None
    model.denoiser.load_lora_adapter(
        prefixed, prefix=info.denoiser_prefix, adapter_name=name, metadata=peft_meta
    )
    add_update_in_one_gemm(model.denoiser, name)
    loaded = {n for n, m in _lora_layers(model.denoiser) if name in m.lora_A}
    if loaded != set(info.target_modules):
        raise AdapterError(
            f"{folder}: only {len(loaded)} of {len(info.target_modules)} target modules were loaded"
        )
    model.denoiser.requires_grad_(False)
    return name


def _unique_name(model: AudioModel, stem: str) -> str:
    taken = set(getattr(model.denoiser, "peft_config", {}))
    base = re.sub(r"[^A-Za-z0-9_]", "_", stem) or "adapter"
    name, i = base, 1
    while name in taken:
        i += 1
        name = f"{base}_{i}"
    return name


def _lora_layers(denoiser: nn.Module) -> Iterable[tuple[str, nn.Module]]:
    from peft.tuners.lora import LoraLayer

    for name, m in denoiser.named_modules():
        if isinstance(m, LoraLayer):
            yield name, m


# ------------------------------------------------------------------ using adapters
def set_strengths(model: AudioModel, strengths: dict[str, float]) -> None:
    """Activate exactly these adapters with these strengths (1.0 = as trained)."""
    model.denoiser.set_adapters(list(strengths), list(strengths.values()))


def load_adapters(
    model: AudioModel,
    specs: Sequence[tuple[str | Path, float]],
    fuse: bool = False,
    allow_base_mismatch: bool = False,
) -> list[str]:
    """Load several ``(folder, strength)`` adapters, activate them, optionally fuse them."""
    names = [load_adapter(model, f, allow_base_mismatch=allow_base_mismatch) for f, _ in specs]
    set_strengths(model, dict(zip(names, [s for _, s in specs], strict=True)))
    if fuse:
        fuse_adapters(model)
    return names


def fuse_adapters(model: AudioModel) -> None:
    """Merge the active adapters at their strengths into the base weights (zero overhead)."""
    model.denoiser.fuse_lora(adapter_names=list(model.denoiser.active_adapters()))


def unfuse_adapters(model: AudioModel) -> None:
    """Undo :func:`fuse_adapters`."""
    model.denoiser.unfuse_lora()


@contextlib.contextmanager
def fused(model: AudioModel) -> Iterator[None]:
    """Run with the active adapters merged into the base weights and no LoRA layer in the way.

    Inside, the denoiser computes exactly what the base model with merged weights computes:
    :func:`fuse_adapters` merges, then :func:`bypass_lora_layers` takes PEFT's wrappers out of
    the forward path, so generation costs what the base model costs. On exit the wrappers go
    back and the base weights are restored bit-exactly from a copy (subtracting the update
    again, PEFT's unmerge, leaves rounding error that adds up over calls in half precision
    and changes in-memory fingerprints). Costs one copy of the adapted layers' weights.
    """
    saved = {
        name: m.base_layer.weight.detach().to("cpu", copy=True)
        for name, m in _lora_layers(model.denoiser)
    }
    try:
        fuse_adapters(model)
        with bypass_lora_layers(model):
            yield
    finally:
        unfuse_adapters(model)
        with torch.no_grad():
            for name, m in _lora_layers(model.denoiser):
                if name in saved:
                    m.base_layer.weight.copy_(saved[name])


@contextlib.contextmanager
def bypass_lora_layers(model: AudioModel) -> Iterator[None]:
    """Swap every PEFT LoRA wrapper of the denoiser for its base layer; swap them back on exit.

    Only correct when no unmerged adapter should act (adapters fused or disabled): the
    wrapper's per-call Python dispatch and adapter checks then cost time for nothing. The
    same module objects are put back, so parameters, optimizer state and hooks are untouched.
    """
    denoiser = model.denoiser
    swapped = []
    for name, m in list(_lora_layers(denoiser)):
        parent_name, _, child = name.rpartition(".")
        parent = denoiser.get_submodule(parent_name)
        setattr(parent, child, m.base_layer)
        swapped.append((parent, child, m))
    try:
        yield
    finally:
        for parent, child, m in reversed(swapped):
            setattr(parent, child, m)


def unload_adapters(model: AudioModel, names: Sequence[str]) -> None:
    """Remove the named loaded adapters; when none is left, remove the LoRA layers entirely."""
    denoiser = model.denoiser
    loaded = set(getattr(denoiser, "peft_config", None) or {})
    if not loaded:
        return
    if loaded <= set(names):
        denoiser.unload_lora()
    else:
        denoiser.delete_adapters([n for n in names if n in loaded])


def parse_adapter_spec(text: str) -> tuple[str, float]:
    """``"folder:0.7"`` -> ``("folder", 0.7)``; no ``:number`` suffix means strength 1.0."""
    path, sep, scale = text.rpartition(":")
    if sep:
        try:
            return path, float(scale)
        except ValueError:
            pass
    return text, 1.0


# ----------------------------------------------------------------------- merging
def module_deltas(tensors: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``module -> (B [out, r], A [r, in])`` from baked adapter tensors (update = B @ A)."""
    out = {}
    for key, a in tensors.items():
        if ".lora_A." in key:
            module = key.split(".lora_A.")[0]
            out[module] = (tensors[f"{module}.lora_B.weight"].float(), a.float())
    return out


@dataclass
class MergeReport:
    rank: int
    #: ||exact - compressed||_F / ||exact||_F over all modules (0 for an exact merge)
    relative_error: float
    worst_module: str = ""
    worst_module_error: float = 0.0


def merge_adapters(
    specs: Sequence[tuple[str | Path, float]], out: str | Path, rank: int | None = None
) -> MergeReport:
    """Weighted LoRA->LoRA merge into a new adapter folder.

    Exact when ``rank`` is None: each module's factors are concatenated, ``B = [w1 B1, w2 B2]``,
    ``A = [A1; A2]`` (rank = sum of ranks). With ``rank`` the summed update of each module is
    truncated by SVD to that rank and the relative Frobenius error is reported.
    """
    infos, deltas = [], []
    for folder, _ in specs:
        info, tensors, _ = read_adapter(folder)
        if info.use_dora:
            raise AdapterError(f"{folder}: DoRA adapters cannot be merged (magnitudes do not add)")
        infos.append(info)
        deltas.append(module_deltas(tensors))
    first = infos[0]
    for (folder, _), info in zip(specs[1:], infos[1:], strict=True):
        if (info.family, info.base_fingerprint) != (first.family, first.base_fingerprint):
            raise AdapterError(
                f"{folder}: different family or base model than {specs[0][0]}; cannot merge"
            )
    modules = sorted(set().union(*deltas))
    merged: dict[str, torch.Tensor] = {}
    err_sq = total_sq = 0.0
    worst, worst_err = "", 0.0
    for module in modules:
        parts = [(w, d[module]) for (_, w), d in zip(specs, deltas, strict=True) if module in d]
        b = torch.cat([w * bb for w, (bb, _) in parts], dim=1)
        a = torch.cat([aa for _, (_, aa) in parts], dim=0)
        if rank is not None and rank < a.shape[0]:
            full = b @ a
            u, s, vh = torch.linalg.svd(full, full_matrices=False)
            root = s[:rank].sqrt()
            b, a = u[:, :rank] * root, root[:, None] * vh[:rank]
            e = float((full - b @ a).norm() ** 2)
            t = float(full.norm() ** 2)
            err_sq, total_sq = err_sq + e, total_sq + t
            rel = math.sqrt(e / t) if t > 0 else 0.0
            if rel > worst_err:
                worst, worst_err = module, rel
        elif rank is not None and rank > a.shape[0]:  # pad to the asked rank with zeros
            b = torch.cat([b, b.new_zeros(b.shape[0], rank - a.shape[0])], dim=1)
            a = torch.cat([a, a.new_zeros(rank - a.shape[0], a.shape[1])], dim=0)
        merged[f"{module}.lora_A.weight"] = a.contiguous()
        merged[f"{module}.lora_B.weight"] = b.contiguous()
    out_rank = next(iter(merged.values())).shape[0] if merged else 0
    ranks = {merged[f"{m}.lora_A.weight"].shape[0] for m in modules}
    if len(ranks) > 1:  # modules covered by different adapter subsets: pad to one rank
        out_rank = max(ranks)
        for m in modules:
            a, b = merged[f"{m}.lora_A.weight"], merged[f"{m}.lora_B.weight"]
            pad = out_rank - a.shape[0]
            merged[f"{m}.lora_A.weight"] = torch.cat([a, a.new_zeros(pad, a.shape[1])])
            merged[f"{m}.lora_B.weight"] = torch.cat([b, b.new_zeros(b.shape[0], pad)], dim=1)
    sources = [
        {"adapter": str(f), "weight": w, "base_model": i.base_model}
        for (f, w), i in zip(specs, infos, strict=True)
    ]
    write_adapter(
        Path(out),
        merged,
        family=first.family,
        base_model=first.base_model,
        fingerprint=first.base_fingerprint,
        denoiser_prefix=first.denoiser_prefix,
        rank=out_rank,
        alpha=float(out_rank),
        use_rslora=False,
        use_dora=False,
        scale_baked=1.0,
        target_modules_=modules,
        target_groups=sorted(set().union(*(i.target_groups for i in infos))),
        training_config={"merged_from": sources},
    )
    return MergeReport(
        rank=out_rank,
        relative_error=math.sqrt(err_sq / total_sq) if total_sq > 0 else 0.0,
        worst_module=worst,
        worst_module_error=worst_err,
    )


def merge_into_base(
    model: AudioModel,
    specs: Sequence[tuple[str | Path, float]],
    out: str | Path,
    allow_base_mismatch: bool = False,
) -> None:
    """Add ``sum_i w_i B_i A_i`` to the base weights and save the whole pipeline to ``out``.

    ``model`` must have no adapters loaded. The result is an ordinary diffusers folder.
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise AdapterError(f"{out}: folder exists and is not empty; choose a new output folder")
    fingerprint = base_fingerprint(model)
    modules = dict(model.denoiser.named_modules())
    for folder, weight in specs:
        info, tensors, _ = read_adapter(folder)
        if info.family != model.family:
            raise AdapterError(
                f"{folder}: adapter is for {info.family}, the model is {model.family}"
            )
        if info.base_fingerprint != fingerprint and not allow_base_mismatch:
            raise AdapterError(
                f"{folder}: trained on another base model; pass --allow-base-mismatch to force"
            )
        if info.use_dora:
            raise AdapterError(
                f"{folder}: DoRA adapters cannot be merged into the base by addition"
            )
        with torch.no_grad():
            for name, (b, a) in module_deltas(tensors).items():
                layer = modules[name]
                layer.weight += (weight * (b @ a)).to(layer.weight.dtype)
    model.pipe.save_pretrained(str(out))
    log.info("wrote fused base model to %s", out)


# ------------------------------------------------------------------------ inspect
def describe_adapter(folder: str | Path) -> dict[str, Any]:
    """Metadata, sizes and per-module update norms ``||B A||_F`` of an adapter folder."""
    folder = Path(folder)
    info, tensors, _ = read_adapter(folder)
    norms = {m: float((b @ a).norm()) for m, (b, a) in module_deltas(tensors).items()}
    return {
        "info": asdict(info),
        "weights_bytes": (folder / WEIGHTS_NAME).stat().st_size,
        "update_norms": norms,
    }
