"""A synthetic four-piece corpus in the layout `lora-audio corpus build` writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

SR = 16000
#: captions of the synthetic pieces, alternating
CAPTIONS = ["bach chorale, piano", "scottish air, flute"]


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four 1.5 s pieces of harmonic tones; piece 3 is held out (index % 10 == 3)."""
    root = tmp_path_factory.mktemp("corpus")
    (root / "audio").mkdir()
    rows = []
    t = np.arange(int(1.5 * SR)) / SR
    for i in range(4):
        f0 = 220.0 * 2 ** (i / 12)
        x = sum(0.2 / k * np.sin(2 * np.pi * k * f0 * t) for k in (1, 2, 3))
        x = x * (0.5 + 0.5 * np.sign(np.sin(2 * np.pi * 2 * t)))  # two notes per second
        path = f"audio/{i:04d}.wav"
        sf.write(root / path, np.stack([x, x], 1).astype(np.float32), SR)
        rows.append({"id": f"{i:04d}", "path": path, "caption": CAPTIONS[i % 2]})
    (root / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root
