"""Score a blind listening test: MOS per system, change vs base, A/B preference, agreement.

Ratings files (JSON saved by the page, or its CSV export) are resolved through ``key.json``;
every file must carry the key's test id. Statistics, all pure functions:

* MOS: mean of the 1-5 ratings per system and question, with a two-sided 95 % Student-t
  interval over the individual ratings, ``mean ± t(0.975, n-1) · s / sqrt(n)`` (``s`` the
  sample standard deviation). Ratings are treated as independent; rater and stimulus effects
  are not modelled, so the interval is optimistic when few raters rate many clips.
* Change vs base: ``100 · (MOS_system - MOS_base) / MOS_base`` percent (how the reference
  recipe reports "+57.2 % MOS"; on a 1-5 scale it depends on the scale's origin).
* A/B preference: the share of A/B trials in which a system was chosen over its opponent,
  with a 95 % Wilson score interval and a two-sided exact binomial test against 50 %.
* Rater agreement: Krippendorff's alpha with the interval metric, units = clips
  (:func:`krippendorff_alpha_interval`).
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from lora_audio.listen import KEY_FORMAT, QUESTIONS, RATINGS_FORMAT, ListenError
from lora_audio.listen.build import ab_system_pairs

log = logging.getLogger(__name__)

SCORES_FORMAT = "lora-audio-listen-scores"
METHOD = {
    "mos_ci": "95 % two-sided Student-t interval over individual ratings: "
    "mean ± t(0.975, n-1)·s/√n",
    "change_vs_base": "100·(MOS − MOS_base)/MOS_base, in percent",
    "preference_ci": "95 % Wilson score interval; p: two-sided exact binomial test vs 50 %",
    "agreement": "Krippendorff's alpha, interval metric, units = clips",
}


# --------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class Mos:
    """Mean opinion score of ``n`` ratings with its t-interval (``None`` bounds when n < 2)."""

    n: int
    mean: float
    sd: float | None
    ci_low: float | None
    ci_high: float | None


def mos_interval(values: Sequence[float], confidence: float = 0.95) -> Mos:
    """Mean and two-sided Student-t interval of ``values``.

    ``mean ± t_{(1+confidence)/2, n-1} · s / sqrt(n)`` with ``s`` the sample standard
    deviation (``ddof=1``). The interval is not clipped to the rating scale.
    """
    x = np.asarray(values, dtype=np.float64)
    n = int(x.size)
    if n == 0:
        raise ValueError("mos_interval needs at least one value")
    mean = float(x.mean())
    if n < 2:
        return Mos(n, mean, None, None, None)
    sd = float(x.std(ddof=1))
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * sd / math.sqrt(n)
    return Mos(n, mean, sd, mean - half, mean + half)


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for ``k`` successes in ``n`` trials.

    With ``p = k/n`` and ``z`` the two-sided normal quantile::

        centre = (p + z²/2n) / (1 + z²/n)
        half   = z · sqrt(p(1-p)/n + z²/4n²) / (1 + z²/n)
    """
    if n <= 0:
        raise ValueError("wilson_interval needs n >= 1")
    z = float(stats.norm.ppf((1 + confidence) / 2))
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _sum_sq_diffs(v: np.ndarray) -> float:
    """Σ over ordered pairs i≠j of (v_i − v_j)² = 2 (m Σv² − (Σv)²) for m values."""
    return 2.0 * (v.size * float(np.sum(v * v)) - float(np.sum(v)) ** 2)


def krippendorff_alpha_interval(units: Sequence[Sequence[float]]) -> float | None:
    """Krippendorff's alpha for interval data (δ²(a, b) = (a − b)²).

    ``units[u]`` holds the values the raters gave unit ``u`` (missing ratings simply absent).
    Only units with ``m_u ≥ 2`` values are pairable; ``n = Σ m_u`` over them. Then::

        D_o   = (1/n) · Σ_u  Σ_{i≠j in u} (v_ui − v_uj)² / (m_u − 1)
        D_e   = 1/(n(n−1)) · Σ_{i≠j over all n pairable values} (v_i − v_j)²
        alpha = 1 − D_o / D_e

    (Krippendorff, "Computing Krippendorff's Alpha-Reliability", 2011.) 1 is perfect
    agreement, 0 agreement at chance level. Returns ``None`` with no pairable unit or when
    every pairable value is the same (``D_e = 0``).
    """
    pairable = [np.asarray(u, dtype=np.float64) for u in units if len(u) >= 2]
    if not pairable:
        return None
    n = sum(u.size for u in pairable)
    d_o = sum(_sum_sq_diffs(u) / (u.size - 1) for u in pairable) / n
    d_e = _sum_sq_diffs(np.concatenate(pairable)) / (n * (n - 1))
    if d_e <= 0:
        return None
    return 1.0 - d_o / d_e


# --------------------------------------------------------------------------- reading


@dataclass
class Answer:
    """One answered trial from one rater. ``scores`` maps question id to 1..5 (rate trials);
    ``choice`` is the preferred clip id (A/B trials)."""

    rater: str
    trial: str
    kind: str
    clip: str = ""
    scores: dict[str, int] = field(default_factory=dict)
    a: str = ""
    b: str = ""
    choice: str = ""
    played: bool | None = None
    time: str = ""
    source: str = ""


def _load_document(
    path: str | Path, fmt: str, missing: str, unreadable: str, wrong: str
) -> dict[str, Any]:
    """Read a JSON document of format ``fmt``; each failure is one ``ListenError`` line
    ``"{path}: <message>"`` (``unreadable`` may use ``{e}``, the parser's error)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ListenError(f"{path}: {missing}") from None
    except (OSError, ValueError) as e:
        raise ListenError(f"{path}: {unreadable.format(e=e)}") from e
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        raise ListenError(f"{path}: {wrong}")
    return doc


def load_key(path: str | Path) -> dict[str, Any]:
    """Read and check ``key.json``."""
    return _load_document(
        path,
        KEY_FORMAT,
        "key not found; pass the key.json written by `listen build`",
        "not a readable JSON key ({e}); rebuild the test",
        "not a listening-test key; pass test/key.json",
    )


def load_scores(path: str | Path) -> dict[str, Any]:
    """Read and check a ``scores.json`` written by ``lora-audio listen score``."""
    return _load_document(
        path,
        SCORES_FORMAT,
        "not found; pass the scores.json written by `lora-audio listen score`",
        "not readable JSON ({e}); run `lora-audio listen score` again",
        "not a listening-test scores file; pass the scores.json written by "
        "`lora-audio listen score`",
    )


def _parse_score(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return -1
    return int(f) if f.is_integer() else -1


def _parse_bool(value: Any) -> bool | None:
    if isinstance(value, bool) or value is None:
        return value
    text = str(value).strip().lower()
    return {"true": True, "1": True, "false": False, "0": False}.get(text)


def _check_answer(row: dict[str, Any], key: dict[str, Any], where: str) -> Answer:
    """Validate one answer against the key; raises ListenError with one line."""
    trial_id = str(row.get("trial", ""))
    trial = key["trials"].get(trial_id)
    if trial is None:
        raise ListenError(f"{where}: trial {trial_id!r} is not in the key")
    kind = str(row.get("kind") or trial["kind"])
    if kind != trial["kind"]:
        raise ListenError(f"{where}: trial {trial_id} is {trial['kind']!r}, not {kind!r}")
    ans = Answer(
        rater=str(row.get("rater", "")),
        trial=trial_id,
        kind=kind,
        played=_parse_bool(row.get("played")),
        time=str(row.get("time") or ""),
        source=where,
    )
    if kind == "rate":
        ans.clip = str(row.get("clip", ""))
        if ans.clip != trial["clips"][0]:
            raise ListenError(f"{where}: trial {trial_id} clip {ans.clip!r} differs from the key")
        for q in QUESTIONS:
            value = _parse_score(row.get(q))
            if value is None:
                continue
            if not 1 <= value <= 5:
                raise ListenError(f"{where}: trial {trial_id} {q}={row.get(q)!r} is not 1..5")
            ans.scores[q] = value
        if not ans.scores:
            raise ListenError(f"{where}: trial {trial_id} has no rating")
    else:
        ans.a, ans.b = trial["clips"]
        ans.choice = str(row.get("choice", ""))
        if ans.choice not in (ans.a, ans.b):
            raise ListenError(f"{where}: trial {trial_id} choice {ans.choice!r} is not A or B")
    return ans


def _rows_from_file(path: Path) -> tuple[str, str, list[dict[str, Any]]]:
    """(test id, rater, answer rows) from a page JSON or CSV export."""
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        if not rows or "test_id" not in rows[0] or "trial" not in rows[0]:
            raise ListenError(f"{path}: not a ratings CSV (needs test_id, rater, trial columns)")
        test_ids = {r["test_id"] for r in rows}
        if len(test_ids) != 1:
            raise ListenError(f"{path}: mixes several test ids; split it per test")
        return test_ids.pop(), "", rows
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ListenError(f"{path}: not readable JSON ({e}); re-download it from the page") from e
    if not isinstance(doc, dict) or doc.get("format") != RATINGS_FORMAT:
        raise ListenError(f"{path}: not a ratings file saved by the listening page")
    rater = str(doc.get("rater") or "")
    rows = [dict(r, rater=r.get("rater", rater)) for r in doc.get("answers", [])]
    return str(doc.get("test_id")), rater, rows


def load_ratings(path: str | Path, key: dict[str, Any]) -> tuple[list[Answer], list[str]]:
    """Read one ratings file. Returns ``(answers, problems)``; bad answers are skipped with a
    problem line each. Raises :class:`ListenError` if the whole file is unusable (wrong test,
    wrong format)."""
    path = Path(path)
    test_id, _, rows = _rows_from_file(path)
    if test_id != key["test_id"]:
        raise ListenError(
            f"{path}: ratings for test {test_id}, but the key is for test {key['test_id']}; "
            "use the key.json of the test these ratings came from"
        )
    answers: list[Answer] = []
    problems: list[str] = []
    for n, row in enumerate(rows, 1):
        try:
            ans = _check_answer(row, key, f"{path} answer {n}")
        except ListenError as e:
            problems.append(str(e))
            continue
        if not ans.rater:
            problems.append(f"{path} answer {n}: no rater id; skipped")
            continue
        answers.append(ans)
    return answers, problems


def expand_ratings_args(args: Sequence[str | Path]) -> list[Path]:
    """Files as given; folders expand to the ``*.json``/``*.csv`` inside (``key.json`` and
    ``scores.json`` excluded)."""
    out: list[Path] = []
    for arg in args:
        p = Path(arg)
        if p.is_dir():
            out += sorted(
                f
                for f in p.iterdir()
                if f.suffix.lower() in (".json", ".csv")
                and f.name not in ("key.json", "scores.json")
            )
        elif p.exists():
            out.append(p)
        else:
            raise ListenError(f"{p}: no such ratings file; check the path")
    return out


def dedupe(answers: list[Answer]) -> tuple[list[Answer], int]:
    """Keep one answer per (rater, trial): the latest by ``time``. Returns (kept, dropped)."""
    best: dict[tuple[str, str], Answer] = {}
    for a in answers:
        k = (a.rater, a.trial)
        if k not in best or a.time >= best[k].time:
            best[k] = a
    return list(best.values()), len(answers) - len(best)


# --------------------------------------------------------------------------- scoring


def _round(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(x, digits)


def score(answers: list[Answer], key: dict[str, Any], base: str | None = None) -> dict[str, Any]:
    """Statistics of deduplicated ``answers`` resolved through ``key`` (see module doc).

    ``base`` defaults to the key's base system. Returns a JSON-ready dict.
    """
    base = base if base is not None else key.get("base")
    systems: list[str] = list(key["systems"])
    if base is not None and base not in systems:
        raise ListenError(f"base system {base!r} is not in the test ({', '.join(systems)})")
    clips = key["clips"]
    rated = [a for a in answers if a.kind == "rate"]
    questions = [q for q in QUESTIONS if any(q in a.scores for a in rated)]

    mos: dict[str, dict[str, Any]] = {}
    agreement: dict[str, Any] = {}
    for q in questions:
        per_system: dict[str, list[int]] = {s: [] for s in systems}
        per_clip: dict[str, list[int]] = {}
        for a in rated:
            if q in a.scores:
                per_system[clips[a.clip]["system"]].append(a.scores[q])
                per_clip.setdefault(a.clip, []).append(a.scores[q])
        table: dict[str, Any] = {}
        for s, values in per_system.items():
            if values:
                m = mos_interval(values)
                table[s] = {
                    "n": m.n,
                    "mean": _round(m.mean),
                    "sd": _round(m.sd),
                    "ci_low": _round(m.ci_low),
                    "ci_high": _round(m.ci_high),
                }
        if base in table:
            ref = table[base]["mean"]
            for s, row in table.items():
                row["change_vs_base_pct"] = (
                    None if s == base or not ref else _round(100 * (row["mean"] - ref) / ref, 2)
                )
        mos[q] = table
        units = list(per_clip.values())
        agreement[q] = {
            "alpha": _round(krippendorff_alpha_interval(units)),
            "units": sum(1 for u in units if len(u) >= 2),
            "values": sum(len(u) for u in units if len(u) >= 2),
        }

    preference: list[dict[str, Any]] = []
    duels = [a for a in answers if a.kind == "ab"]
    for x, y in ab_system_pairs(systems, base):
        wins = n = 0
        for a in duels:
            pair = {clips[a.a]["system"], clips[a.b]["system"]}
            if pair == {x, y}:
                n += 1
                wins += clips[a.choice]["system"] == x
        if n:
            lo, hi = wilson_interval(wins, n)
            preference.append(
                {
                    "system": x,
                    "versus": y,
                    "wins": wins,
                    "n": n,
                    "rate": _round(wins / n),
                    "ci_low": _round(lo),
                    "ci_high": _round(hi),
                    "p_value": _round(float(stats.binomtest(wins, n, 0.5).pvalue)),
                }
            )

    raters = sorted({a.rater for a in answers})
    return {
        "format": SCORES_FORMAT,
        "version": 1,
        "test_id": key["test_id"],
        "base": base,
        "systems": systems,
        "questions": questions,
        "raters": raters,
        "n_answers": len(answers),
        "n_unplayed": sum(1 for a in answers if a.played is False),
        "mos": mos,
        "preference": preference,
        "agreement": agreement,
        "method": METHOD,
    }


def score_files(
    paths: Sequence[str | Path], key_path: str | Path, base: str | None = None
) -> dict[str, Any]:
    """Load ratings files against a key and score them. Unusable files and answers are
    reported (``problems`` in the result, and logged); raises if nothing usable is left."""
    key = load_key(key_path)
    problems: list[str] = []
    answers: list[Answer] = []
    files = expand_ratings_args(paths)
    if not files:
        raise ListenError("no ratings files found; pass the JSON/CSV files the raters sent")
    for path in files:
        try:
            got, bad = load_ratings(path, key)
        except ListenError as e:
            problems.append(str(e))
            continue
        answers += got
        problems += bad
    for line in problems:
        log.warning("%s", line)
    if not answers:
        raise ListenError("no usable ratings left; see the lines above")
    answers, duplicates = dedupe(answers)
    result = score(answers, key, base)
    result["files"] = [str(p) for p in files]
    result["duplicates_dropped"] = duplicates
    result["problems"] = problems
    return result


# --------------------------------------------------------------------------- presenting


def _fmt(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:+.1f} %"


def markdown_table(scores: dict[str, Any]) -> str:
    """A markdown summary: MOS table, preference table, agreement and method lines."""
    qs = scores["questions"]
    base = scores.get("base")
    head = ["system"]
    for q in qs:
        head += [f"{q} MOS [95 % CI]", "n"] + ([f"{q} vs {base}"] if base else [])
    lines = [
        f"Listening test `{scores['test_id']}`: {len(scores['raters'])} rater(s), "
        f"{scores['n_answers']} answers.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for s in scores["systems"]:
        row = [s]
        for q in qs:
            m = scores["mos"][q].get(s)
            if m is None:
                row += ["–", "0"] + (["–"] if base else [])
                continue
            ci = "" if m["ci_low"] is None else f" [{_fmt(m['ci_low'])}, {_fmt(m['ci_high'])}]"
            row += [f"{_fmt(m['mean'])}{ci}", str(m["n"])]
            if base:
                row.append(_pct(m.get("change_vs_base_pct")))
        lines.append("| " + " | ".join(row) + " |")
    if scores["preference"]:
        lines += [
            "",
            "| A/B | preferred | n | rate [95 % CI] | p |",
            "|---|---|---|---|---|",
        ]
        for p in scores["preference"]:
            lines.append(
                f"| {p['system']} vs {p['versus']} | {p['wins']} | {p['n']} | "
                f"{_fmt(p['rate'])} [{_fmt(p['ci_low'])}, {_fmt(p['ci_high'])}] | "
                f"{_fmt(p['p_value'], 3)} |"
            )
    lines.append("")
    for q in qs:
        ag = scores["agreement"][q]
        lines.append(
            f"Rater agreement ({q}): Krippendorff's alpha (interval) = {_fmt(ag['alpha'], 3)} "
            f"over {ag['units']} clips rated by 2+ raters."
        )
    lines.append("")
    lines += [f"- {k}: {v}" for k, v in scores["method"].items()]
    return "\n".join(lines) + "\n"


def report_summary(scores: dict[str, Any]) -> dict[str, Any]:
    """A flat, display-ready digest for the evaluation report.

    Returns ``{"title", "test_id", "raters", "base", "columns", "rows", "agreement",
    "method"}`` where ``rows`` is one dict per system with keys from ``columns``:
    ``<question>_mos``, ``<question>_ci95`` (``[low, high]``), ``<question>_vs_base_pct``
    and ``preferred_over_base`` (share of A/B trials won against the base, or None).
    """
    base = scores.get("base")
    columns = ["system"]
    for q in scores["questions"]:
        columns += [f"{q}_mos", f"{q}_ci95", f"{q}_vs_base_pct"]
    columns.append("preferred_over_base")
    wins = {p["system"]: p["rate"] for p in scores["preference"] if p["versus"] == base}
    rows = []
    for s in scores["systems"]:
        row: dict[str, Any] = {"system": s}
        for q in scores["questions"]:
            m = scores["mos"][q].get(s, {})
            row[f"{q}_mos"] = m.get("mean")
            row[f"{q}_ci95"] = [m.get("ci_low"), m.get("ci_high")] if m else None
            row[f"{q}_vs_base_pct"] = m.get("change_vs_base_pct")
        row["preferred_over_base"] = wins.get(s)
        rows.append(row)
    return {
        "title": "Blind listening test (MOS, 1–5)",
        "test_id": scores["test_id"],
        "raters": len(scores["raters"]),
        "base": base,
        "columns": columns,
        "rows": rows,
        "agreement": {q: a["alpha"] for q, a in scores["agreement"].items()},
        "method": scores["method"],
    }
