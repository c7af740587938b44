"""Listen to and look at the demo model: base samples next to corpus clips.

    python -m lora_audio.demo_model.samples --model demo:base --corpus DIR --out samples/

Writes, per base-corpus caption, one generated clip (``gen-<caption>.wav``) and one held-out
corpus clip with that caption (``ref-<caption>.wav``) and its reconstruction through the
autoencoder and Griffin-Lim (``rec-<caption>.wav``); ``spectrograms.png`` (rows: corpus clip,
reconstruction, generated; 128-band log-mel dB) and ``samples.json`` (mel dB MSE of the
reconstructions, and spectral-flatness / pitch-salience figures that tell music from noise).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from pathlib import Path

import numpy as np

from lora_audio.audio import write_audio

log = logging.getLogger(__name__)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def spectral_flatness(x: np.ndarray, n_fft: int = 1024, hop: int = 256) -> float:
    """Median spectral flatness (geometric / arithmetic mean power; 1 = white noise, ~0 = tones)."""
    import librosa

    return float(np.median(librosa.feature.spectral_flatness(y=x, n_fft=n_fft, hop_length=hop)))


def log_mel_db(x: np.ndarray, sr: int) -> np.ndarray:
    """``[128, frames]`` log-mel dB (eval's analysis)."""
    from eval.features import SpectralConfig, log_mel_batch

    return log_mel_batch([x], SpectralConfig(sample_rate=sr))[0]


def render(
    model_path: str,
    corpus_dir: str | Path,
    out_dir: str | Path,
    seconds: float = 5.0,
    steps: int = 25,
    guidance: float = 3.0,
    seed: int = 0,
) -> dict:
    """Generate, reconstruct and plot (see the module docstring); returns ``samples.json``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lora_audio.demo_model.pretrain import load_corpus, mel_db_mse, reconstruct
    from lora_audio.models import load_model

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = load_model("demo", model_path)
    sr = model.sample_rate
    n = round(seconds * sr)
    pieces = load_corpus(corpus_dir)
    captions = list(dict.fromkeys(p.caption for p in pieces))
    rows: dict[str, list[np.ndarray]] = {
        "corpus (held out)": [],
        "reconstruction": [],
        "generated": [],
    }
    report: dict = {"model": model_path, "seconds": seconds, "steps": steps, "guidance": guidance}
    report["clips"] = []
    for i, caption in enumerate(captions):
        held = [p for p in pieces if p.caption == caption and p.val and len(p.audio) >= n]
        piece = (held or [p for p in pieces if p.caption == caption])[0]
        start = max(0, (len(piece.audio) - n) // 3)
        ref = piece.audio[start : start + n]
        rec = reconstruct(model.pipe, [ref])[0]
        gen = model.generate(
            caption, seconds=seconds, steps=steps, guidance=guidance, seed=seed + i
        )
        gen = gen[0, 0].numpy()
        slug = _slug(caption)
        for kind, x in (("ref", ref), ("rec", rec), ("gen", gen)):
            write_audio(out / f"{kind}-{slug}.wav", x[None], sr)
        rows["corpus (held out)"].append(ref)
        rows["reconstruction"].append(rec)
        rows["generated"].append(gen)
        report["clips"].append(
            {
                "caption": caption,
                "piece": piece.id,
                "held_out": piece.val,
                "reconstruction_mel_db_mse": mel_db_mse([ref], [rec]),
                "flatness": {
                    "corpus": spectral_flatness(ref),
                    "reconstruction": spectral_flatness(rec),
                    "generated": spectral_flatness(gen),
                },
            }
        )
        log.info("%s", json.dumps(report["clips"][-1]))
    noise = np.random.default_rng(0).standard_normal(n).astype(np.float32) * 0.1
    report["flatness_white_noise"] = spectral_flatness(noise)

    fig, axes = plt.subplots(3, len(captions), figsize=(3.2 * len(captions), 7.5), squeeze=False)
    for r, (name, clips) in enumerate(rows.items()):
        for c, x in enumerate(clips):
            ax = axes[r][c]
            ax.imshow(log_mel_db(x, sr), origin="lower", aspect="auto", cmap="magma")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(captions[c], fontsize=9)
            if c == 0:
                ax.set_ylabel(name, fontsize=9)
    fig.suptitle(f"{model_path}: 128-band log-mel, {seconds:g} s, {steps} steps, cfg {guidance:g}")
    fig.tight_layout()
    fig.savefig(out / "spectrograms.png", dpi=80)
    plt.close(fig)
    (out / "samples.json").write_text(json.dumps(report, indent=2))
    return report


def main(argv: list[str] | None = None) -> int:
    from lora_audio.logs import setup_logging

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="demo:base", help="demo:base or a pipeline folder")
    p.add_argument("--corpus", required=True, help="the base corpus folder (16 kHz)")
    p.add_argument("--out", required=True)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    setup_logging()
    report = render(
        args.model, args.corpus, args.out, args.seconds, args.steps, args.guidance, args.seed
    )
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
