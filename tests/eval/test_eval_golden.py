"""Golden values on deterministic synthetic clips (tests/eval/golden/metrics.json).

Regenerate after an intended change with ``python tests/eval/test_eval_golden.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from eval import distances as D
from eval.embeddings import LogMelEmbedding
from eval.features import clip_feature_vectors, log_mel_batch

GOLDEN = Path(__file__).parent / "golden" / "metrics.json"


def compute(synth) -> dict:
    ref = [
        synth("tone", seconds=1.5),
        synth("clicks", seconds=1.5, seed=1),
        synth("chirp", seconds=1.5),
    ]
    gen = [
        synth("chirp", seconds=1.5),
        synth("clicks", seconds=1.5, seed=2),
        synth("noise", seconds=1.5, seed=4),
    ]
    fr, fg = clip_feature_vectors(ref), clip_feature_vectors(gen)
    mu, sd = D.zscore_stats(fr)
    mr, mg = log_mel_batch(ref), log_mel_batch(gen)
    emb = LogMelEmbedding()
    er = np.concatenate(emb.embed_batch([to_16k(x) for x in ref])).astype(np.float64)
    eg = np.concatenate(emb.embed_batch([to_16k(x) for x in gen])).astype(np.float64)
    return {
        "features_ref_tone_first8": fr[0, :8].tolist(),
        "tempo_clicks": float(fr[1, -1]),
        "afd_paired": D.afd_paired(fg, fr, mu, sd).tolist(),
        "afd_set": D.afd_set(fg, fr, mu, sd),
        "mel_mse_paired": [D.mel_mse_paired(a, b) for a, b in zip(mg, mr, strict=True)],
        "mel_mse_set": D.mel_mse_set(
            np.stack([D.mean_spectrum(m) for m in mg]), np.stack([D.mean_spectrum(m) for m in mr])
        ),
        "mrstft_sc": D.mrstft_distance(gen[1], ref[1]).spectral_convergence,
        "fad_logmel": D.fad(eg, er),
        "kad_logmel": D.kad(eg, er),
    }


def to_16k(x: np.ndarray) -> np.ndarray:
    from lora_audio.audio import resample

    return resample(x[None], 22050, 16000)


def test_golden_values(synth):
    golden = json.loads(GOLDEN.read_text())
    got = compute(synth)
    assert set(got) == set(golden)
    for k, v in golden.items():
        np.testing.assert_allclose(
            np.asarray(got[k]), np.asarray(v), rtol=2e-3, atol=1e-4, err_msg=k
        )


if __name__ == "__main__":  # regenerate the golden file
    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import synth_clip

    from lora_audio.files import write_json_atomic

    write_json_atomic(GOLDEN, compute(synth_clip))
    print(f"wrote {GOLDEN}")
