"""Small file helpers shared by every step: atomic writes and content hashes.

Nothing the user had is ever overwritten half-way: every writer goes through
:func:`atomic_path`, which writes to a temporary file beside the target and renames it
into place only when the write finished.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(target: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; rename it onto ``target`` on success.

    The temporary file keeps ``target``'s suffix (or ``suffix``) so that libraries that pick
    the format from the extension (soundfile, safetensors) behave. On an exception the
    temporary file is removed and ``target`` is untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=f".tmp{suffix or target.suffix}", dir=target.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600; give the file the mode a plain open() would have.
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(target: str | Path, text: str) -> None:
    """Write ``text`` to ``target`` atomically (UTF-8)."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(target: str | Path, obj: Any, indent: int | None = 2) -> None:
    """Write ``obj`` as JSON to ``target`` atomically."""
    write_text_atomic(target, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


def sha256_file(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks (constant memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def stable_hash(obj: Any, length: int = 16) -> str:
    """Short hex hash of a JSON-serialisable object (sorted keys), for cache keys."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def safetensors_bytes(tensors: dict[str, Any], metadata: dict[str, str] | None = None) -> bytes:
    """Serialise torch ``tensors`` (+ string ``metadata``) to safetensors bytes, reproducibly.

    safetensors writes its JSON header from a hash map, so the same tensors can give different
    bytes (and sha256) from one call to the next. This rewrites the header with sorted keys;
    the data section is unchanged and any safetensors reader loads the result.
    """
    from safetensors.torch import save

    raw = save({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata)
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # keep the data section 8-byte aligned
    return struct.pack("<Q", len(text)) + text + raw[8 + n :]


def write_safetensors(
    target: str | Path, tensors: dict[str, Any], metadata: dict[str, str] | None = None
) -> Path:
    """Write ``tensors`` to ``target`` atomically with a reproducible header (see above)."""
    data = safetensors_bytes(tensors, metadata)
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)
