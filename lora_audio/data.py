"""The dataset training reads: entries of the latent cache, memory-mapped, no VAE, no text encoder.

    info = ensure_cache(cfg, model)                  # preprocessing.latent_cache
    loader = make_loader(info, "train", batch_size=4, shuffle=True, seed=0)
    for batch in loader:
        loss = model.training_loss(batch["latents"], batch["cond"], mask=batch["mask"])

An item is ``{"latents": [*latent_shape], "mask": [L], "cond": {name: [...]}, "key", "segment",
"variant"}``; :func:`collate` stacks items into ``latents [B, *latent_shape]``, ``mask [B, L]``
and batch-first ``cond`` tensors. Entries are safetensors files opened with ``safe_open``
(memory-mapped: only the item's bytes are read). The cache is trusted: nothing is re-checked
here beyond what ``cache.json`` lists.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch.utils.data import DataLoader, Dataset

from preprocessing.latent_cache import COND_PREFIX, CacheInfo, read_cache

Item = dict[str, Any]


class LatentDataset(Dataset):
    """Cached entries of one split.

    ``cache``: a :class:`CacheInfo` or a cache folder (with ``cache.json``). ``split``: train,
    val or test (``None``: every split). ``augmented``: include the augmented variants
    (pitch/gain) besides ``clean``; they only exist in the augmented splits anyway.
    """

    def __init__(
        self, cache: CacheInfo | str | Path, split: str | None = "train", augmented: bool = True
    ) -> None:
        self.info = cache if isinstance(cache, CacheInfo) else read_cache(cache)
        self.split = split
        self.keys = self.info.keys(split, augmented)

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> Item:
        key = self.keys[index]
        entry = self.info.entries[key]
        cond: dict[str, torch.Tensor] = {}
        with safe_open(str(self.info.path(key)), framework="pt") as f:
            latents = f.get_tensor("latents")
            mask = f.get_tensor("mask")
            for name in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                if name.startswith(COND_PREFIX):
                    cond[name[len(COND_PREFIX) :]] = f.get_tensor(name)
        return {
            "latents": latents,
            "mask": mask,
            "cond": cond,
            "key": key,
            "segment": entry["segment"],
            "variant": entry["variant"],
            "valid_seconds": float(entry["valid_seconds"]),
        }


def collate(items: list[Item]) -> Item:
    """Stack items: ``latents [B, *latent_shape]``, ``mask [B, L]``, ``cond`` batch-first.

    Conditioning tensors whose first (sequence) axis differs between items are right-padded
    with zeros to the longest (hidden states and attention masks alike: a zero mask marks
    padding), for families whose prompt encoder pads per batch.
    """
    if not items:
        raise ValueError("collate: empty batch")
    names = items[0]["cond"].keys()
    cond = {name: _stack_padded([it["cond"][name] for it in items]) for name in names}
    return {
        "latents": torch.stack([it["latents"] for it in items]),
        "mask": torch.stack([it["mask"] for it in items]),
        "cond": cond,
        "keys": [it["key"] for it in items],
        "segments": [it["segment"] for it in items],
        "variants": [it["variant"] for it in items],
        "valid_seconds": [it["valid_seconds"] for it in items],
    }


def _stack_padded(tensors: list[torch.Tensor]) -> torch.Tensor:
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) == 1:
        return torch.stack(tensors)
    if tensors[0].ndim == 0 or len({s[1:] for s in shapes}) != 1:
        raise ValueError(f"collate: conditioning shapes {sorted(shapes)} cannot be stacked")
    longest = max(t.shape[0] for t in tensors)
    out = tensors[0].new_zeros((len(tensors), longest, *tensors[0].shape[1:]))
    for i, t in enumerate(tensors):
        out[i, : t.shape[0]] = t
    return out


def make_loader(
    cache: CacheInfo | str | Path,
    split: str | None = "train",
    batch_size: int = 4,
    shuffle: bool = True,
    seed: int = 0,
    augmented: bool = True,
    num_workers: int = 0,
    drop_last: bool = False,
) -> DataLoader:
    """A :class:`DataLoader` over :class:`LatentDataset` with :func:`collate`; the shuffle
    order comes from ``seed`` alone."""
    dataset = LatentDataset(cache, split, augmented)
    if len(dataset) == 0:
        raise ValueError(f"{dataset.info.folder}: no cached entries in split {split!r}")
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        collate_fn=collate,
        num_workers=num_workers,
        drop_last=drop_last,
        persistent_workers=num_workers > 0,
    )
