"""Does the adapter learn the target style? Base vs adapter against held-out target recordings.

The target is a corpus recipe (``lora-audio corpus list``: tunes + General MIDI program) or any
folder of recordings. It is cut once with ``cut-music`` (5 s segments, splits per recording:
60 % train, 15 % val, 25 % test); the test recordings are never trained on. For each seed:

1. ``lora-audio train`` (``configs/demo.yaml`` unless ``--config``; ``train.seed`` = seed);
2. ``lora-audio infer --compare`` for the target caption (``--clips`` clips, seeds offset by
   1000 x seed so every run draws new noise) and for the base-style prompts;
3. ``lora-audio eval`` of base and adapter against the held-out target recordings, and of the
   base-style outputs against the base corpus (the style the base model was pretrained on).

Reported per seed and as mean ± standard deviation over seeds: set-level audio-feature
distance (AFD), mel-spectrogram distance, FAD and KAD, and the adapter's change relative to
the base in percent. Goal: ≥ 50 % lower AFD and ≥ 25 % lower mel distance than the base with
≤ 1 % trainable parameters; the base-style outputs should move little.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/adaptation.py                 # fiddle, seeds 0 1 2
    .venv/bin/python benchmarks/adaptation.py --target koto --seeds 0 1
    .venv/bin/python benchmarks/adaptation.py --target ~/recordings --caption "my band, live"

Everything goes to ``--out`` (default ``benchmark-output/adaptation/<target>``); finished
steps are reused when the script is run again.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder would shadow the `eval` package with benchmarks/eval.py.
_here = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if str(Path(p or ".").resolve()) != _here]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

from lora_audio.config import load_config  # noqa: E402
from lora_audio.demo import (  # noqa: E402
    CONFIG,
    cut_recordings,
    evaluate_runs,
    generate_pair,
    link_split,
    run_lora_audio,
    train_lora,
)
from lora_audio.files import write_json_atomic  # noqa: E402

#: metric key in metrics.json -> label
METRICS = {
    "afd_set": "AFD",
    "mel_mse_set": "mel distance",
    "fad": "FAD",
    "kad": "KAD",
}
GOALS = {"afd_set": -50.0, "mel_mse_set": -25.0}
#: base-corpus captions the base-style check generates; configs/demo.yaml's prior preservation
#: uses the other three, so this measures whether it carries over to styles it was not shown
BASE_PROMPTS = ["bach chorale, church organ", "scottish air, flute"]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--target", default="fiddle", help="corpus recipe name or a folder of recordings"
    )
    p.add_argument(
        "--caption",
        default="",
        help="caption of a folder target (default: the folder name); recipes bring their own",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=400, help="training steps per seed")
    p.add_argument("--clips", type=int, default=16, help="generated clips per system and prompt")
    p.add_argument("--seconds", type=float, default=5.0, help="segment and clip length")
    p.add_argument("--denoise-steps", type=int, default=25)
    p.add_argument(
        "--guidance", type=float, default=1.0, help="CFG scale (default 1: see lora_audio/demo.py)"
    )
    p.add_argument("--config", type=Path, default=CONFIG)
    p.add_argument(
        "--base-recipe",
        default="base",
        help="corpus the base-style outputs are scored against ('' to skip that check)",
    )
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--out", type=Path, default=None)
    return p.parse_args()


def target_audio(args: argparse.Namespace) -> tuple[Path, dict[str, str], str]:
    """(audio folder, file name -> caption, name) of the target."""
    from lora_audio.audio import find_audio_files
    from preprocessing.corpus import build_corpus

    folder = Path(args.target).expanduser()
    if folder.is_dir():
        caption = args.caption or folder.name
        files = find_audio_files([folder])
        if not files:
            raise SystemExit(f"{folder}: no audio files; point --target at recordings")
        return folder, {f.name: caption for f in files}, folder.name
    corpus = build_corpus(args.target, jobs=args.jobs, progress=True)
    return (
        Path(corpus.dir) / "audio",
        {Path(p["path"]).name: p["caption"] for p in corpus.pieces},
        args.target,
    )


def base_reference(args: argparse.Namespace, out: Path) -> Path | None:
    """The base corpus cut into clips of the generated length (all of it, no split)."""
    if not args.base_recipe:
        return None
    from preprocessing.corpus import build_corpus

    corpus = build_corpus(args.base_recipe, jobs=args.jobs, progress=True)
    captions = {Path(p["path"]).name: p["caption"] for p in corpus.pieces}
    manifest, rows = cut_recordings(
        Path(corpus.dir) / "audio",
        captions,
        out / "base-segments",
        args.seconds,
        split=(1.0, 0.0, 0.0),
        jobs=args.jobs,
    )
    return link_split(rows, manifest.parent, "train", out / "base-reference")


def ceiling_sets(args: argparse.Namespace, rows: list, segments: Path, out: Path) -> dict:
    """What the metrics say for target audio itself: ``--clips`` training segments as they
    are (``real``: other recordings of the target style) and after the base model's own
    autoencoder (``decoded``: what a generator with perfect latents would give — the
    posterior mean, as the latent cache encodes, cut to the segment's length as generated
    clips are)."""
    import numpy as np
    import torch

    from lora_audio.audio import load_audio, write_audio
    from lora_audio.config import load_config
    from lora_audio.generation import load_model_section

    train = [r for r in rows if r.split == "train"]
    pick = np.random.default_rng(0).choice(len(train), min(args.clips, len(train)), replace=False)
    real, decoded = out / "ceiling" / "real", out / "ceiling" / "decoded"
    model = load_model_section(load_config(args.config).model)
    for i in pick:
        x, sr = load_audio(segments / train[i].path)
        write_audio(real / f"{i:04d}.wav", x, sr)
        with torch.no_grad():
            latents = model.encode_audio(torch.from_numpy(x)[None])
            y = model.decode_latents(latents)[0].float().numpy()[:, : x.shape[-1]]
        write_audio(decoded / f"{i:04d}.wav", y, model.sample_rate)
    return {"real": real, "decoded": decoded}


def values(metrics: dict, key: str) -> dict[str, float]:
    return {name: s["metrics"][key]["value"] for name, s in metrics["systems"].items()}


def mean_sd(xs: list[float]) -> str:
    if len(xs) == 1:
        return f"{xs[0]:+.1f} %"
    return f"{statistics.mean(xs):+.1f} ± {statistics.stdev(xs):.1f} %"


def main() -> int:
    args = parse_args()
    t0 = time.perf_counter()
    audio_dir, captions, name = target_audio(args)
    out = args.out or Path("benchmark-output") / "adaptation" / name
    out.mkdir(parents=True, exist_ok=True)
    manifest, rows = cut_recordings(audio_dir, captions, out / "segments", args.seconds)
    heldout = link_split(rows, manifest.parent, "test", out / "heldout")
    counts = {k: len({r.source for r in rows if r.split == k}) for k in ("train", "val", "test")}
    prompt = sorted({r.caption for r in rows if r.split == "train"})[0]
    base_ref = base_reference(args, out)
    sets = ceiling_sets(args, rows, manifest.parent, out)
    ceiling = evaluate_runs(sets, heldout, out / "report-ceiling")
    run_lora_audio(
        ["preprocess", "--config", str(args.config), f"data.manifest={manifest}"],
        "encoding failed",
    )

    per_seed = []
    for seed in args.seeds:
        run = out / f"seed-{seed}"
        adapter = train_lora(args.config, manifest, run / "train", args.steps, seed, prompt)
        summary = json.loads((run / "train" / "summary.json").read_text())
        first = 1000 * seed
        generate_pair(
            args.config, adapter, [prompt], run / "target", args.clips, args.seconds,
            args.denoise_steps, guidance=args.guidance, first_seed=first,
        )  # fmt: skip
        target = evaluate_runs(
            {"base": run / "target" / "base", "adapter": run / "target" / adapter.name},
            heldout,
            run / "report-target",
        )
        row = {
            "seed": seed,
            "trainable_percent": 100.0 * summary["trainable_params"] / summary["total_params"],
            "steps": summary["steps"],
            "best_step": summary["best_step"],
            "target": {k: values(target, k) for k in METRICS},
        }
        if base_ref is not None:
            generate_pair(
                args.config, adapter, BASE_PROMPTS, run / "base-style", args.clips // 2,
                args.seconds, args.denoise_steps, guidance=args.guidance, first_seed=first,
            )  # fmt: skip
            style = evaluate_runs(
                {"base": run / "base-style" / "base", "adapter": run / "base-style" / adapter.name},
                base_ref,
                run / "report-base-style",
            )
            row["base_style"] = {k: values(style, k) for k in METRICS}
        per_seed.append(row)

    def rel(row: dict, part: str, key: str) -> float:
        v = row[part][key]
        return 100.0 * (v["adapter"] - v["base"]) / v["base"]

    lines = [
        f"target: {name} ('{prompt}'); recordings train {counts['train']}, val {counts['val']}, "
        f"held-out {counts['test']}; {args.clips} clips per system; seeds {args.seeds}; "
        f"{args.steps} steps",
        f"trainable parameters: {per_seed[0]['trainable_percent']:.3f} % (goal ≤ 1 %)",
        "",
        "vs held-out target recordings (lower = closer); adapter change vs base:",
        f"  {'metric':<14s}"
        + "".join(f"  seed {r['seed']:<22d}" for r in per_seed)
        + "  mean ± sd",
    ]
    for key, label in METRICS.items():
        cells = "".join(
            f"  {r['target'][key]['base']:8.4g} -> {r['target'][key]['adapter']:8.4g} "
            f"{rel(r, 'target', key):+5.0f}%"
            for r in per_seed
        )
        summary = mean_sd([rel(r, "target", key) for r in per_seed])
        goal = ""
        if key in GOALS:
            mean = statistics.mean(rel(r, "target", key) for r in per_seed)
            ok = "met" if mean <= GOALS[key] else "NOT met"
            goal = f"  (goal ≤ {GOALS[key]:+.0f} %: {ok})"
        lines.append(f"  {label:<14s}{cells}  {summary}{goal}")
    base_mean = {k: statistics.mean(r["target"][k]["base"] for r in per_seed) for k in METRICS}
    lines += ["", "the same metrics for target-style audio itself (what is reachable):"]
    for key, label in METRICS.items():
        v = values(ceiling, key)
        lines.append(
            f"  {label:<14s}  other recordings {v['real']:8.4g} "
            f"({100 * (v['real'] / base_mean[key] - 1):+.0f} % vs base);  through the base's "
            f"autoencoder {v['decoded']:8.4g} ({100 * (v['decoded'] / base_mean[key] - 1):+.0f} %)"
        )
    if base_ref is not None:
        lines += ["", f"base-style prompts {BASE_PROMPTS} vs the base corpus (should move little):"]
        prior = list(load_config(args.config).train.prior_prompts)
        if prior:
            shown = [p for p in BASE_PROMPTS if p in prior]
            lines.append(
                f"  (trained with prior preservation on {prior}; "
                + (f"{shown} among them)" if shown else "these prompts are not among them)")
            )
        for key, label in METRICS.items():
            cells = "".join(
                f"  {r['base_style'][key]['base']:8.4g} -> {r['base_style'][key]['adapter']:8.4g} "
                f"{rel(r, 'base_style', key):+5.0f}%"
                for r in per_seed
            )
            lines.append(
                f"  {label:<14s}{cells}  {mean_sd([rel(r, 'base_style', key) for r in per_seed])}"
            )
    lines.append(f"\n{(time.perf_counter() - t0) / 60:.1f} min; results: {out / 'results.json'}")
    text = "\n".join(lines)
    write_json_atomic(
        out / "results.json",
        {
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "out": str(out),
            "per_seed": per_seed,
            "ceiling": {k: values(ceiling, k) for k in METRICS},
        },
    )
    print("\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
