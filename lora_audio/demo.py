"""`lora-audio demo`: the whole path on the built-in default, offline, on music made here.

Each step prints the ``lora-audio`` command it stands for, then runs that command's code
in-process, so the demo is exactly what a user would type:

1. build the target corpus: public-domain tunes from music21's corpus rendered with a General
   MIDI soundfont on an instrument the demo base model never heard (default: reels and
   hornpipes on fiddle, :mod:`preprocessing.corpus`);
2. ``cut-music`` it into segments with captions and per-recording train/val/test splits;
3. ``lora-audio preprocess``: encode the segments into the latent cache once;
4. ``lora-audio train``: LoRA on the attention and time-MLP layers of the demo base model
   (``demo:base``, pretrained here on Bach chorales and folk airs; ``configs/demo.yaml``);
5. ``lora-audio infer --compare``: base and adapter, same prompt, same seeds;
6. ``lora-audio eval``: both against the held-out recordings (the test split, never trained on).

Re-running is cheap: every step reuses what is already there.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lora_audio.files import atomic_path

log = logging.getLogger(__name__)

#: the demo's run config (the shipped demo base model and its LoRA recipe)
CONFIG = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"
#: what the demo says wherever it shows the demo base model's output
MODEL_NOTE = (
    "demo:base is a 4 M-parameter model pretrained on this machine on 45 min of rendered MIDI "
    "(Bach chorales, folk airs): its audio is music-like (pitched, rhythmic) but low fidelity "
    "(a 128-band mel spectrogram turned back into sound by Griffin-Lim)."
)


class DemoError(RuntimeError):
    """A demo step failed; the message says which and what to do."""


@dataclass
class DemoSettings:
    """What the demo does; the defaults are the README's main command."""

    out: Path = Path("demo-output")
    recipe: str = "fiddle"
    #: training steps (``train.max_steps``); early stopping may end sooner
    steps: int = 400
    #: generated clips per system (seeds 0 .. clips-1)
    clips: int = 8
    #: length of the cut segments and of the generated clips
    seconds: float = 5.0
    #: denoising steps per generated clip
    denoise_steps: int = 25
    #: classifier-free guidance. 1 = none: the adapter is trained with the caption always
    #: present, so guidance extrapolates away from an unconditional branch that is still the
    #: base style and overshoots the target (measured: held-out mel distance −65 % vs the base
    #: at 1.0, +12 % at 3.0); training with train.caption_dropout=0.1 does not make guidance
    #: pay off on this small model either (README, "What the adapter learns")
    guidance: float = 1.0
    jobs: int = 2
    config: Path = CONFIG


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = DemoSettings()
    p.add_argument("-o", "--out", default=str(d.out), help="folder for everything the demo writes")
    p.add_argument(
        "--recipe",
        default=d.recipe,
        help=f"corpus recipe to adapt to (see `lora-audio corpus list`); default: {d.recipe}",
    )
    p.add_argument("--steps", type=int, default=d.steps, help=f"training steps (default {d.steps})")
    p.add_argument(
        "--clips", type=int, default=d.clips, help=f"clips per system (default {d.clips})"
    )
    p.add_argument(
        "--denoise-steps",
        type=int,
        default=d.denoise_steps,
        help=f"denoising steps per clip (default {d.denoise_steps})",
    )
    p.add_argument("--jobs", type=int, default=d.jobs, help=f"parallel workers (default {d.jobs})")


def run(args: argparse.Namespace) -> int:
    settings = DemoSettings(
        out=Path(args.out),
        recipe=args.recipe,
        steps=args.steps,
        clips=args.clips,
        denoise_steps=args.denoise_steps,
        jobs=args.jobs,
    )
    try:
        run_demo(settings)
    except DemoError as exc:
        log.error("%s", exc)
        return 1
    return 0


def run_demo(settings: DemoSettings) -> dict:
    """Run every demo step into ``settings.out``; returns the state (paths and results)."""
    out = settings.out
    out.mkdir(parents=True, exist_ok=True)
    state: dict = {"settings": settings}
    steps: list[tuple[str, Callable[[dict], None]]] = [
        ("build the target corpus", build_target_corpus),
        ("cut it into segments", cut_segments),
        ("encode the segments into the latent cache", encode_segments),
        ("train a LoRA adapter on the demo base model", train_adapter),
        ("generate with the base and the adapter, same prompt and seeds", generate_compare),
        ("score both against the held-out recordings", evaluate_compare),
    ]
    t_all = time.perf_counter()
    for i, (title, step) in enumerate(steps, start=1):
        print(f"\n[{i}/{len(steps)}] {title}", flush=True)
        t0 = time.perf_counter()
        step(state)
        print(f"      done in {time.perf_counter() - t0:.1f} s", flush=True)
    print(f"\ndemo finished in {(time.perf_counter() - t_all) / 60:.1f} min")
    _print_outcome(state)
    return state


# --------------------------------------------------------------------------- steps


def build_target_corpus(state: dict) -> None:
    from preprocessing.corpus import build_corpus

    s: DemoSettings = state["settings"]
    print(f"      $ lora-audio corpus build {s.recipe}")
    result = build_corpus(s.recipe, jobs=s.jobs, progress=True)
    state["corpus"] = result
    status = "up to date" if result.up_to_date else f"{result.rendered} rendered"
    print(
        f"      {len(result.pieces)} recordings, {result.seconds / 60:.1f} min of music "
        f"({status}) in {result.dir}"
    )


def cut_segments(state: dict) -> None:
    """Cut the corpus; the test split's segments also go to ``OUT/heldout/`` for eval."""
    s: DemoSettings = state["settings"]
    corpus = state["corpus"]
    captions = {Path(p["path"]).name: p["caption"] for p in corpus.pieces}
    manifest, rows = cut_recordings(
        Path(corpus.dir) / "audio", captions, s.out / "segments", s.seconds, jobs=s.jobs
    )
    state["manifest"] = manifest
    state["heldout"] = link_split(rows, manifest.parent, "test", s.out / "heldout")
    state["captions"] = sorted({r.caption for r in rows if r.split == "train"})


def cut_recordings(
    audio_dir: Path,
    captions: dict[str, str],
    segments: Path,
    seconds: float,
    split: tuple[float, float, float] = (0.6, 0.15, 0.25),
    jobs: int = 2,
) -> tuple[Path, list]:
    """``cut-music`` a folder of recordings into ``seconds``-long segments, half overlapping.

    ``captions`` maps file names to captions (written to ``segments/../captions.csv``).
    Splits are per recording (seed 42). Returns the manifest path and its rows.
    """
    from preprocessing.cut_music import CutParams, cut_music
    from preprocessing.manifest import read_manifest

    captions_csv = segments.parent / f"{segments.name}-captions.csv"
    with atomic_path(captions_csv) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "caption"])
        writer.writerows(sorted(captions.items()))
    split_text = ",".join(f"{v:g}" for v in split)
    print(
        f"      $ cut-music {audio_dir} -o {segments} --length {seconds:g}s "
        f"--hop {seconds / 2:g}s --sr 16000 --channels 1 --loudness -23 "
        f"--captions {captions_csv} --split {split_text} --seed 42"
    )
    params = CutParams(
        length=seconds,
        hop=seconds / 2,
        sample_rate=16000,
        channels=1,
        loudness=-23.0,
        captions_csv=str(captions_csv),
        split=split,
        seed=42,
        jobs=jobs,
    )
    summary = cut_music([audio_dir], segments, params)
    for line in summary.format().splitlines():
        print(f"      {line}")
    manifest = segments / "manifest.jsonl"
    return manifest, read_manifest(manifest)


def link_split(rows: list, segments: Path, split: str, dest: Path) -> Path:
    """Hard-link (or copy) the segment files of one split into ``dest``; returns ``dest``.

    ``dest`` ends up holding exactly that split's files, so ``lora-audio eval --ref dest``
    scores against recordings that training never saw.
    """
    wanted = {Path(r.path).name: segments / r.path for r in rows if r.split == split}
    if not wanted:
        raise DemoError(f"{segments}: no '{split}' segments; use a corpus with more recordings")
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.iterdir():
        if old.name not in wanted:
            old.unlink()
    for name, src in wanted.items():
        target = dest / name
        if target.exists():
            continue
        try:
            os.link(src, target)
        except OSError:
            shutil.copy2(src, target)
    return dest


def encode_segments(state: dict) -> None:
    s: DemoSettings = state["settings"]
    run_lora_audio(
        ["preprocess", "--config", str(s.config), f"data.manifest={state['manifest']}"],
        "encoding the segments failed",
    )


def train_adapter(state: dict) -> None:
    s: DemoSettings = state["settings"]
    state["run_dir"] = s.out / "train"
    state["adapter"] = train_lora(
        s.config, state["manifest"], state["run_dir"], s.steps, prompt=state["captions"][0]
    )


def generate_compare(state: dict) -> None:
    s: DemoSettings = state["settings"]
    state["generated"] = s.out / "generated"
    generate_pair(
        s.config,
        state["adapter"],
        [state["captions"][0]],
        state["generated"],
        clips=s.clips,
        seconds=s.seconds,
        denoise_steps=s.denoise_steps,
        guidance=s.guidance,
    )


def evaluate_compare(state: dict) -> None:
    s: DemoSettings = state["settings"]
    state["report"] = s.out / "report"
    gen: Path = state["generated"]
    name = Path(state["adapter"]).name
    state["metrics"] = evaluate_runs(
        {"base": gen / "base", name: gen / name},
        state["heldout"],
        state["report"],
        train_run=state["run_dir"],
    )


# --------------------------------------------------------------------------- reusable steps


def train_lora(
    config: Path, manifest: Path, run_dir: Path, steps: int, seed: int = 0, prompt: str = ""
) -> Path:
    """``lora-audio train`` on ``manifest`` into ``run_dir``; returns the adapter folder.

    A finished run of the same resolved configuration is reused.
    """
    from omegaconf import OmegaConf

    from lora_audio.config import load_config, to_dict

    overrides = [
        f"data.manifest={manifest}",
        f"train.output_dir={run_dir}",
        f"train.max_steps={steps}",
        f"train.seed={seed}",
    ]
    if prompt:
        overrides.append(f"train.sample_prompts=[{_quote(prompt)}]")
    if OmegaConf.load(config).train.warmup_steps >= steps:  # a short trial run
        overrides.append(f"train.warmup_steps={steps // 4}")
    adapter = run_dir / "adapter"
    if (run_dir / "summary.json").exists() and adapter.is_dir():
        done = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"))
        if done == to_dict(load_config(config, overrides)):
            print(f"      {adapter} is already trained; delete {run_dir} to train again")
            return adapter
    run_lora_audio(["train", "--config", str(config), *overrides, "--overwrite"], "training failed")
    return adapter


def generate_pair(
    config: Path,
    adapter: Path,
    prompts: list[str],
    out: Path,
    clips: int,
    seconds: float,
    denoise_steps: int,
    guidance: float = 1.0,
    first_seed: int = 0,
) -> None:
    """``lora-audio infer --compare``: ``out/base/`` and ``out/<adapter>/``, same seeds.

    A complete earlier result for the same adapter file, prompts, seeds and settings is reused.
    """
    from lora_audio.files import sha256_file

    seeds = list(range(first_seed, first_seed + clips))
    settings = {"seconds": seconds, "steps": denoise_steps, "guidance": guidance}
    try:
        done = json.loads((out / "index.json").read_text())
        weights = sha256_file(adapter / "pytorch_lora_weights.safetensors")
        if (
            done.get("complete")
            and (done["prompts"], done["seeds"]) == (prompts, seeds)
            and all(done["settings"][k] == v for k, v in settings.items())
            and [a["sha256"] for x in done["systems"] for a in x["adapters"]] == [weights]
        ):
            print(f"      {out} already holds these clips; delete it to generate again")
            return
    except (OSError, ValueError, KeyError, TypeError):
        pass
    argv = ["infer", "--config", str(config), "--lora", str(adapter), "--compare"]
    for prompt in prompts:
        argv += ["--prompt", prompt]
    argv += [
        "--seed",
        str(first_seed),
        "-n",
        str(clips),
        "--seconds",
        f"{seconds:g}",
        "--steps",
        str(denoise_steps),
        "--guidance",
        f"{guidance:g}",
        "-o",
        str(out),
        "--overwrite",
    ]
    run_lora_audio(argv, "generation failed")


def evaluate_runs(
    runs: dict[str, Path], ref: Path, out: Path, train_run: Path | None = None
) -> dict:
    """``lora-audio eval`` of ``runs`` (name -> folder) against ``ref``; returns metrics.json."""
    argv = ["eval", "--runs", *(f"{k}={v}" for k, v in runs.items()), "--ref", str(ref)]
    argv += ["--pairs", "none", "-o", str(out), "--overwrite"]
    if train_run is not None:
        argv += ["--train-run", str(train_run)]
    run_lora_audio(argv, "evaluation failed")
    return json.loads((out / "metrics.json").read_text())


# --------------------------------------------------------------------------- helpers


def _quote(text: str) -> str:
    return '"' + text.replace('"', "'") + '"'


def run_lora_audio(argv: list[str], what: str) -> None:
    """Run one ``lora-audio`` command in-process; raise :class:`DemoError` when it fails."""
    from lora_audio.cli import main

    print("      $ lora-audio " + " ".join(_shell_word(_short(a)) for a in argv), flush=True)
    code = main(argv)
    if code != 0:
        raise DemoError(f"{what} (`lora-audio {argv[0]}` exited with {code}); see the log above")


def _short(word: str) -> str:
    """An absolute path inside the working folder, shown relative to it."""
    cwd = os.getcwd() + os.sep
    return word.replace(cwd, "") if cwd in word else word


def _shell_word(word: str) -> str:
    return word if word and all(c.isalnum() or c in "-_./=:+,[]" for c in word) else repr(word)


def relative_change(metrics: dict, key: str, system: str, base: str = "base") -> float:
    """``(system − base) / base`` of one metric in a ``metrics.json``, in percent."""
    values = {name: x["metrics"][key]["value"] for name, x in metrics["systems"].items()}
    return 100.0 * (values[system] - values[base]) / values[base]


def _print_outcome(state: dict) -> None:
    s: DemoSettings = state["settings"]
    report: Path = state["report"]
    gen: Path = state["generated"]
    adapter_name = Path(state["adapter"]).name
    metrics = state["metrics"]
    print(f"\nheld-out {s.recipe} recordings vs generated clips (lower is closer to the target):")
    for key, label in (("afd_set", "audio-feature distance"), ("mel_mse_set", "mel distance")):
        values = {name: x["metrics"][key]["value"] for name, x in metrics["systems"].items()}
        change = relative_change(metrics, key, adapter_name)
        print(
            f"  {label:<24s} base {values['base']:.4g}  adapter {values[adapter_name]:.4g}  "
            f"({change:+.1f} %)"
        )
    print(f"\nreport:  {report / 'report.html'}  (and report.md)")
    print(f"audio:   {gen / 'base'}/  vs  {gen / adapter_name}/")
    print(f"adapter: {state['adapter']}")
    print(f"NOTE: {MODEL_NOTE}")
