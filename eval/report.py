"""Write an evaluation: ``metrics.json``, ``per_file.csv``, ``report.md`` and a self-contained
``report.html`` (plots inlined as base64 PNG, matplotlib Agg backend).

Every file is written atomically; an existing report's files are never replaced unless
``overwrite=True``.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import logging
import math
import platform
from pathlib import Path

import numpy as np

from eval.pipeline import METRICS, EvalResult, SystemResult
from lora_audio.files import stable_hash, write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)

REPORT_FILES = ("metrics.json", "per_file.csv", "report.md", "report.html")
#: Metrics whose relative change vs the baseline run gets a column in the tables.
REL_METRICS = ("afd_paired", "afd_set", "mel_mse_paired", "fad", "kad")
CSV_COLUMNS = (
    "system", "file", "status", "error", "sha256", "sample_rate", "channels", "duration_s",
    "lufs", "silence_ratio", "clipping_ratio", "frames", "paired_with",
    "afd", "mel_mse", "mrstft_sc", "mrstft_logmag",
)  # fmt: skip


class ReportExistsError(Exception):
    """The output folder already holds report files and ``overwrite`` was not given."""


def versions() -> dict:
    import librosa
    import scipy
    import torch

    from lora_audio import __version__

    return {
        "lora_audio": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "librosa": librosa.__version__,
    }


def baseline_name(result: EvalResult, baseline: str | None) -> str | None:
    """The run relative changes are measured against: ``baseline``, else a run named ``base``."""
    names = [s.name for s in result.systems]
    if baseline is not None:
        if baseline not in names:
            raise ValueError(f"--baseline {baseline!r} is not one of the runs ({', '.join(names)})")
        return baseline
    return "base" if "base" in names else None


def relative_changes(result: EvalResult, base: str | None) -> dict[str, dict[str, float]]:
    """``100 (v − v_base) / |v_base|`` per system and metric (NaN where undefined)."""
    if base is None:
        return {}
    b = next(s for s in result.systems if s.name == base).metrics
    out = {}
    for s in result.systems:
        out[s.name] = {}
        for k in METRICS:
            v, bv = s.metrics.get(k, {}).get("value", math.nan), b.get(k, {}).get("value", math.nan)
            out[s.name][k] = (
                100.0 * (v - bv) / abs(bv)
                if bv and math.isfinite(bv) and math.isfinite(v)
                else math.nan
            )
    return out


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_clean(x) for x in v]
    if isinstance(v, np.floating | np.integer):
        return _clean(v.item())
    return v


def metrics_json(
    result: EvalResult,
    base: str | None,
    train_curves: dict | None,
    listening: dict | None = None,
) -> dict:
    cfg = result.config.to_dict()
    rel = relative_changes(result, base)

    def system(s: SystemResult) -> dict:
        return {
            "folder": s.folder,
            "pairing": s.pairing,
            "counts": s.counts,
            "metrics": s.metrics,
            "relative_change_pct": rel.get(s.name, {}),
            "warnings": s.warnings,
            "fad_inf_fit": s.fad_inf_fit,
            "unpaired_files": [c.rel for c in s.clips if c.used and not c.paired_with]
            if s.pairing == "paired"
            else [],
        }

    return _clean({
        "config": cfg, "config_hash": stable_hash(cfg), "versions": versions(),
        "embedding": result.embedding, "feature_sample_rate": result.config.spectral.sample_rate,
        "reference": {"folder": result.reference.folder, "counts": result.reference.counts, "warnings": result.reference.warnings},
        "baseline": base, "systems": {s.name: system(s) for s in result.systems}, "cache": result.cache,
        "metric_labels": {k: v[0] for k, v in METRICS.items()},
        "training_curves": sorted(train_curves) if train_curves else [],
        "listening": listening,
    })  # fmt: skip


def per_file_rows(result: EvalResult) -> list[dict]:
    rows = []
    for s in [result.reference, *result.systems]:
        for c in s.clips:
            rows.append({
                "system": s.name, "file": c.rel, "status": c.status, "error": c.error, "sha256": c.sha256,
                "sample_rate": c.sample_rate, "channels": c.channels, "duration_s": round(c.duration_s, 4),
                "lufs": c.lufs, "silence_ratio": c.silence_ratio, "clipping_ratio": c.clipping_ratio,
                "frames": c.n_frames, "paired_with": c.paired_with, **{k: c.per_pair.get(k, "") for k in ("afd", "mel_mse", "mrstft_sc", "mrstft_logmag")},
            })  # fmt: skip
    return rows


def _fmt(v: float | None, digits: int = 4) -> str:
    if v is None or not math.isfinite(v):
        return "–"
    return f"{v:.{digits}g}"


def metrics_table(result: EvalResult, base: str | None) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one row per system, value [95 % CI] per metric, then Δ% vs base."""
    keys = [k for k in METRICS if any(k in s.metrics for s in result.systems)]
    rel = relative_changes(result, base)
    header = ["system", "clips", "frames", *[METRICS[k][0] for k in keys]]
    if base:
        header += [f"Δ% {METRICS[k][0]} vs {base}" for k in keys if k in REL_METRICS]
    rows = []
    for s in result.systems:
        row = [s.name, f"{s.counts['used']}/{s.counts['files']}", str(s.counts["frames"])]
        for k in keys:
            m = s.metrics.get(k)
            if m is None:
                row.append("–")
            elif math.isfinite(m["ci_low"]):
                row.append(f"{_fmt(m['value'])} [{_fmt(m['ci_low'], 3)}, {_fmt(m['ci_high'], 3)}]")
            else:
                row.append(_fmt(m["value"]))
        if base:
            row += [
                (f"{rel[s.name][k]:+.1f} %" if math.isfinite(rel[s.name][k]) else "–")
                for k in keys
                if k in REL_METRICS
            ]
        rows.append(row)
    return header, rows


# --------------------------------------------------------------------------- plots


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def plot_metric_bars(result: EvalResult) -> str | None:
    """Bar chart per metric (one panel each) with 95 % bootstrap intervals as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in METRICS if any(k in s.metrics for s in result.systems)]
    if not keys:
        return None
    cols = 4
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    names = [s.name for s in result.systems]
    for ax, k in zip(axes.flat, keys, strict=False):
        vals = [s.metrics.get(k, {}).get("value", math.nan) for s in result.systems]
        lo = [s.metrics.get(k, {}).get("ci_low", math.nan) for s in result.systems]
        hi = [s.metrics.get(k, {}).get("ci_high", math.nan) for s in result.systems]
        err = np.array(
            [
                [v - lw if math.isfinite(lw) else 0 for v, lw in zip(vals, lo, strict=True)],
                [h - v if math.isfinite(h) else 0 for v, h in zip(vals, hi, strict=True)],
            ]
        )
        err = np.where(np.isfinite(err), np.maximum(err, 0), 0)
        ax.bar(range(len(names)), np.nan_to_num(vals), yerr=err, capsize=3, color="C0")
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_title(METRICS[k][0] + " ↓", fontsize=9)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    fig.tight_layout()
    return _png(fig)


def plot_spectrogram_grid(result: EvalResult, max_cols: int = 4) -> str | None:
    """Log-mel spectrograms: rows = reference + systems, columns = file names found in several rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [result.reference, *result.systems]
    maps = [{c.key: c for c in s.clips if c.logmel is not None} for s in rows]
    counts: dict[str, int] = {}
    for mp in maps:
        for k in mp:
            counts[k] = counts.get(k, 0) + 1
    keys = sorted(counts, key=lambda k: (-counts[k], k))[:max_cols]
    if not keys:
        return None
    fig, axes = plt.subplots(
        len(rows), len(keys), figsize=(2.8 * len(keys), 1.9 * len(rows)), squeeze=False
    )
    for i, (s, mp) in enumerate(zip(rows, maps, strict=True)):
        for j, k in enumerate(keys):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if k in mp:
                ax.imshow(
                    mp[k].logmel, origin="lower", aspect="auto", cmap="magma", vmin=-100, vmax=0
                )
            else:
                ax.text(0.5, 0.5, "missing", ha="center", va="center", transform=ax.transAxes)
            if i == 0:
                ax.set_title(k, fontsize=8)
            if j == 0:
                ax.set_ylabel(s.name, fontsize=8)
    fig.tight_layout()
    return _png(fig)


def read_training_curves(run_dir: str | Path) -> dict[str, tuple[list[int], list[float]]]:
    """Loss curves of a training run folder: ``{name: (steps, values)}``.

    Reads ``metrics.jsonl`` / ``log.jsonl`` (rows ``{"step": .., "loss": .., "val_loss": ..}``;
    any other numeric key becomes a curve too) anywhere under the folder, and TensorBoard event
    files when the ``tensorboard`` package is installed. Unreadable lines are skipped.
    """
    run_dir = Path(run_dir)
    curves: dict[str, tuple[list[int], list[float]]] = {}
    for f in sorted([*run_dir.rglob("metrics.jsonl"), *run_dir.rglob("log.jsonl")]):
        for line in f.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                row = json.loads(line)
                step = int(row["step"])
            except (ValueError, KeyError, TypeError):
                continue
            for k, v in row.items():
                if (
                    k != "step"
                    and isinstance(v, int | float)
                    and not isinstance(v, bool)
                    and math.isfinite(v)
                ):
                    s, vals = curves.setdefault(k, ([], []))
                    s.append(step)
                    vals.append(float(v))
    events = list(run_dir.rglob("events.out.tfevents.*"))
    if events:
        try:
            from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
        except ImportError:
            log.warning(
                "%s: TensorBoard event files found but the tensorboard package is not installed; "
                "reading metrics.jsonl only",
                run_dir,
            )
        else:
            for d in sorted({e.parent for e in events}):
                acc = EventAccumulator(str(d))
                acc.Reload()
                for tag in acc.Tags().get("scalars", []):
                    ev = acc.Scalars(tag)
                    curves[tag] = ([e.step for e in ev], [float(e.value) for e in ev])
    if not curves:
        log.warning("%s: no metrics.jsonl, log.jsonl or TensorBoard scalars found", run_dir)
    return curves


def plot_training_curves(curves: dict[str, tuple[list[int], list[float]]]) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for name, (steps, vals) in sorted(curves.items()):
        order = np.argsort(steps, kind="stable")
        ax.plot(
            np.asarray(steps)[order],
            np.asarray(vals)[order],
            label=name,
            marker="." if len(steps) < 30 else None,
        )
    ax.set_xlabel("step")
    ax.set_ylabel("value")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)


# --------------------------------------------------------------------------- documents


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _notes(result: EvalResult) -> list[str]:
    e = result.embedding
    notes = [
        f"Reference: `{result.reference.folder}` — {result.reference.counts['used']} of {result.reference.counts['files']} files used, {result.reference.counts['frames']} embedding frames.",
        f"Embedding: `{e['id']}` ({e['sample_rate']} Hz, D = {e['dim']}); KAD bandwidth σ = {e.get('kad_bandwidth', float('nan')):.4g} (median pairwise distance of reference frames).",
        f"AFD / log-mel features at {result.config.spectral.sample_rate} Hz, n_fft {result.config.spectral.n_fft}, hop {result.config.spectral.hop}, {result.config.spectral.n_mels} mels, mono.",
    ]
    for s in result.systems:
        c = s.counts
        how = (
            f"paired by file name ({c['paired']} pairs)"
            if s.pairing == "paired"
            else "unpaired: no file names in common with the reference, set-level metrics only"
        )
        notes.append(
            f"`{s.name}` (`{s.folder}`): {c['files']} files, {c['ok']} ok, {c['silent']} silent, {c['bad']} unreadable; {how}."
        )
    for s in [result.reference, *result.systems]:
        notes += [f"⚠ {w}" for w in s.warnings]
    return notes


def listening_table(summary: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the listening-test table from ``listen.score.report_summary``."""
    header, keys = ["system"], []
    for col in summary["columns"][1:]:
        if col.endswith("_ci95"):
            continue
        keys.append(col)
        if col.endswith("_mos"):
            header.append(f"{col[:-4]} MOS [95 % CI]")
        elif col.endswith("_vs_base_pct"):
            header.append(f"{col[:-12]} Δ% vs {summary['base']}")
        else:
            header.append(f"preferred over {summary['base']}")
    rows = []
    for r in summary["rows"]:
        row = [r["system"]]
        for k in keys:
            v = r[k]
            if v is None:
                row.append("–")
            elif k.endswith("_mos"):
                lo, hi = r[k[:-4] + "_ci95"] or (None, None)
                ci = f" [{lo:.2f}, {hi:.2f}]" if lo is not None and hi is not None else ""
                row.append(f"{v:.2f}{ci}")
            elif k.endswith("_vs_base_pct"):
                row.append(f"{v:+.1f} %")
            else:
                row.append(f"{100 * v:.0f} %")
        rows.append(row)
    return header, rows


def _listening_lines(summary: dict) -> list[str]:
    agreement = ", ".join(
        f"{q} {a:.3f}" if a is not None else f"{q} –" for q, a in summary["agreement"].items()
    )
    return [
        f"Test `{summary['test_id']}`: {summary['raters']} rater(s); higher is better (1–5).",
        f"Rater agreement (Krippendorff's alpha, interval): {agreement}.",
    ]


def render_markdown(
    result: EvalResult, base: str | None, has_curves: bool, listening: dict | None = None
) -> str:
    header, rows = metrics_table(result, base)
    parts = [
        "# Evaluation report",
        "",
        "Lower is better for every metric; brackets are 95 % bootstrap intervals over generated clips (per-clip metrics only: set metrics such as FAD are biased under resampling).",
        "",
        _md_table(header, rows),
        "",
    ]
    if listening:
        parts += [f"## {listening['title']}", "", *_listening_lines(listening), ""]
        parts += [_md_table(*listening_table(listening)), ""]
    parts += ["## Notes", ""]
    parts += [f"- {n}" for n in _notes(result)]
    parts += [
        "",
        "Plots: see `report.html` (metric bars, spectrogram grid"
        + (", training curves" if has_curves else "")
        + ").",
    ]
    return "\n".join(parts) + "\n"


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    esc = html.escape
    table = "<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>"
    return (
        table
        + "".join("<tr>" + "".join(f"<td>{esc(v)}</td>" for v in r) + "</tr>" for r in rows)
        + "</table>"
    )


def render_html(
    result: EvalResult,
    base: str | None,
    images: dict[str, str | None],
    listening: dict | None = None,
) -> str:
    esc = html.escape
    table = _html_table(*metrics_table(result, base))
    if listening:
        table += f"<h2>{esc(listening['title'])}</h2>"
        table += "".join(
            f"<p>{esc(line).replace('`', '')}</p>" for line in _listening_lines(listening)
        )
        table += _html_table(*listening_table(listening))
    notes = (
        "<ul>" + "".join(f"<li>{esc(n).replace('`', '')}</li>" for n in _notes(result)) + "</ul>"
    )
    figs = "".join(
        f"<h2>{esc(title)}</h2><img alt='{esc(title)}' src='data:image/png;base64,{b64}'/>"
        for title, b64 in images.items()
        if b64
    )
    style = (
        "body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}th{background:#eee}img{max-width:100%}"
    )
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>lora-audio evaluation</title><style>{style}</style></head><body>"
        f"<h1>Evaluation report</h1><p>Lower is better for every metric; brackets are 95 % bootstrap intervals.</p>{table}"
        f"<h2>Notes</h2>{notes}{figs}</body></html>\n"
    )


def write_report(
    result: EvalResult,
    out_dir: str | Path,
    overwrite: bool = False,
    baseline: str | None = None,
    train_run: str | Path | None = None,
    listening: dict | None = None,
) -> dict[str, Path]:
    """Write the four report files into ``out_dir`` and return their paths.

    ``listening``: a blind listening test's MOS table (``listen.score.report_summary``),
    shown next to the objective metrics.

    Raises :class:`ReportExistsError` if any of them exists and ``overwrite`` is False.
    """
    out = Path(out_dir)
    existing = [f for f in REPORT_FILES if (out / f).exists()]
    if existing and not overwrite:
        raise ReportExistsError(
            f"{out}: already holds {', '.join(existing)}; choose another -o folder or pass --overwrite"
        )
    base = baseline_name(result, baseline)
    curves = read_training_curves(train_run) if train_run else {}
    images = {
        "Metrics": plot_metric_bars(result),
        "Spectrograms (log-mel dB, same file name per column)": plot_spectrogram_grid(result),
        "Training curves": plot_training_curves(curves),
    }
    paths = {f: out / f for f in REPORT_FILES}
    write_json_atomic(paths["metrics.json"], metrics_json(result, base, curves, listening))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in per_file_rows(result):
        w.writerow(
            {k: ("" if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()}
        )
    write_text_atomic(paths["per_file.csv"], buf.getvalue())
    write_text_atomic(paths["report.md"], render_markdown(result, base, bool(curves), listening))
    write_text_atomic(paths["report.html"], render_html(result, base, images, listening))
    return paths
