"""The studio's generation jobs: checked requests, a FIFO queue and one worker thread.

A :class:`Studio` owns one loaded model and runs one job at a time, so the model is never used
by two generations at once. Each job is one prompt and one seed, with the chosen adapters
and optionally the base model at the same seed (``compare``), written by the same
:func:`~lora_audio.generation.run_plan` + :func:`~lora_audio.generation.write_results` calls as
``lora-audio infer --compare`` into ``OUT/<job id>/`` (same layout, sidecars and index).

Every change to a job (queued, each denoising step, each file written, done or failed) is
appended to the job's event list as its public JSON state, so a reader can stream every step
in order (:meth:`Studio.events_since`).
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from lora_audio import adapters as lora
from lora_audio.generation import (
    BASE_SYSTEM,
    MAX_SCALE,
    AdapterRef,
    Generated,
    GenerationError,
    GenerationPlan,
    make_plan,
    model_summary,
    resolve_adapter,
    run_plan,
    write_results,
)
from lora_audio.studio import StudioError

log = logging.getLogger(__name__)

#: URL prefix under which the output folder is served
FILES_ROUTE = "/files"
MAX_STEPS = 500
MAX_GUIDANCE = 30.0
MAX_PROMPT_CHARS = 1000
MAX_SEED = 2**32 - 1
#: longest audio a request may ask for, unless the model allows less
DEFAULT_MAX_SECONDS = 300.0
#: most jobs waiting behind the running one
DEFAULT_MAX_QUEUE = 8
#: job states; ``done`` and ``failed`` are final
QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
FINAL_STATES = (DONE, FAILED)


class QueueFull(StudioError):
    """The queue holds ``max_queue`` jobs already."""


@dataclass(frozen=True)
class JobRequest:
    """What the page asks for: one prompt, one seed, adapters by name with their strengths."""

    prompt: str
    seconds: float
    steps: int
    seed: int = 0
    guidance: float = 7.0
    negative_prompt: str = ""
    #: ``(adapter name, strength)`` pairs applied together; empty: the base model
    adapters: tuple[tuple[str, float], ...] = ()
    #: also generate with the base model at the same seed
    compare: bool = False


@dataclass
class Job:
    id: str
    request: JobRequest
    plan: GenerationPlan
    folder: Path
    state: str = QUEUED
    #: denoising steps done, over every system of the job
    step: int = 0
    error: str | None = None
    files: list[dict[str, Any]] = field(default_factory=list)
    started: float | None = None
    finished: float | None = None
    #: the job's public state after each change, oldest first (older ones dropped, see _compact)
    events: list[dict[str, Any]] = field(default_factory=list)
    #: event number of ``events[0]``
    first_event: int = 0

    @property
    def total_steps(self) -> int:
        return self.plan.num_items * self.plan.settings.steps


class Studio:
    """One model, the adapters offered, the output folder and the queue that runs jobs in order.

    ``adapters`` are ``(folder, default strength)`` pairs, checked now (files, sha256, family,
    base-model fingerprint); the page refers to them by folder name. Raises
    :class:`StudioError` (one line) for a bad adapter or output folder.
    """

    def __init__(
        self,
        model: Any,
        adapters: Sequence[tuple[str | Path, float]] = (),
        out: str | Path = "studio-output",
        *,
        max_seconds: float = DEFAULT_MAX_SECONDS,
        max_queue: int = DEFAULT_MAX_QUEUE,
        allow_base_mismatch: bool = False,
    ) -> None:
        self.model = model
        self.out = Path(out)
        if self.out.exists() and not self.out.is_dir():
            raise StudioError(f"{out}: exists and is not a folder; choose another --out folder")
        if not (max_seconds > 0 and max_queue >= 1):
            raise StudioError(
                f"--max-seconds must be > 0 and --max-queue >= 1, got {max_seconds:g} and "
                f"{max_queue}"
            )
        self.summary = model_summary(model)
        self.allow_base_mismatch = allow_base_mismatch
        self.adapters: dict[str, AdapterRef] = {}
        for path, scale in adapters:
            ref = self._check_adapter(path, scale)
            if ref.name in self.adapters or ref.name == BASE_SYSTEM:
                raise StudioError(
                    f"{path}: another adapter is already named {ref.name!r} (or it is the base "
                    "system's name); rename one of the folders"
                )
            self.adapters[ref.name] = ref
        self.out.mkdir(parents=True, exist_ok=True)
        model_max = getattr(model, "max_seconds", None)
        self.max_seconds = float(min(max_seconds, model_max) if model_max else max_seconds)
        self.max_queue = max_queue
        self._lock = threading.Condition()
        self._jobs: dict[str, Job] = {}
        self._queue: deque[Job] = deque()
        self._closed = False
        self._worker = threading.Thread(target=self._work, name="studio-worker", daemon=True)
        self._worker.start()

    # ------------------------------------------------------------------ setup checks
    def _check_adapter(self, path: str | Path, scale: float) -> AdapterRef:
        try:
            ref = resolve_adapter(path, scale, self.model.family)
            info = lora.read_adapter(path)[0]
        except (GenerationError, lora.AdapterError) as exc:
            raise StudioError(str(exc)) from None
        if info.base_fingerprint != self.summary["base_fingerprint"]:
            message = (
                f"{path}: adapter was trained on {info.base_model}, not on this model "
                f"({self.summary['base_model']})"
            )
            if not self.allow_base_mismatch:
                raise StudioError(message + "; pass --allow-base-mismatch to use it anyway")
            log.warning("%s; using it anyway", message)
        return ref

    def info(self) -> dict[str, Any]:
        """What the page needs to draw its form: model, tiny-model note, adapters, limits."""
        return {
            "model": {k: self.summary[k] for k in ("family", "base_model", "sample_rate")},
            "note": self.summary.get("note"),
            "adapters": [{"name": r.name, "scale": r.scale} for r in self.adapters.values()],
            "limits": {
                "max_seconds": self.max_seconds,
                "max_steps": MAX_STEPS,
                "max_guidance": MAX_GUIDANCE,
                "max_scale": MAX_SCALE,
                "max_seed": MAX_SEED,
                "max_prompt_chars": MAX_PROMPT_CHARS,
                "max_queue": self.max_queue,
            },
            "defaults": {"seconds": min(10.0, self.max_seconds), "steps": 50, "guidance": 7.0},
        }

    # ---------------------------------------------------------------- requests
    def plan_for(self, req: JobRequest) -> GenerationPlan:
        """Check a request (one line saying what to change) and make its generation plan."""
        if not req.prompt.strip():
            raise StudioError("the prompt is empty; type what the music should be")
        if max(len(req.prompt), len(req.negative_prompt)) > MAX_PROMPT_CHARS:
            raise StudioError(f"prompts are limited to {MAX_PROMPT_CHARS} characters; shorten it")
        if not (math.isfinite(req.seconds) and 0 < req.seconds <= self.max_seconds):
            raise StudioError(
                f"seconds must be above 0 and at most {self.max_seconds:g} for this model, "
                f"got {req.seconds:g}"
            )
        if not 1 <= req.steps <= MAX_STEPS:
            raise StudioError(f"steps must be from 1 to {MAX_STEPS}, got {req.steps}")
        if not 0 <= req.seed <= MAX_SEED:
            raise StudioError(f"seed must be from 0 to {MAX_SEED}, got {req.seed}")
        if not (math.isfinite(req.guidance) and 0 <= req.guidance <= MAX_GUIDANCE):
            raise StudioError(f"guidance must be from 0 to {MAX_GUIDANCE:g}, got {req.guidance:g}")
        chosen: list[tuple[str, float]] = []
        for name, scale in req.adapters:
            if name not in self.adapters:
                offered = ", ".join(self.adapters) or "none (start the studio with --lora DIR)"
                raise StudioError(f"unknown adapter {name!r}; this studio offers: {offered}")
            if not (math.isfinite(scale) and abs(scale) <= MAX_SCALE):
                raise StudioError(
                    f"strength of {name} must be from -{MAX_SCALE:g} to {MAX_SCALE:g}, got {scale:g}"
                )
            chosen.append((self.adapters[name].path, float(scale)))
        if len({n for n, _ in req.adapters}) != len(req.adapters):
            raise StudioError("an adapter is chosen twice; choose each adapter once")
        if req.compare and not chosen:
            raise StudioError("choose an adapter to compare with the base model")
        try:
            return make_plan(
                [req.prompt],
                chosen,
                seeds=[req.seed],
                seconds=req.seconds,
                steps=req.steps,
                guidance=req.guidance,
                negative_prompt=req.negative_prompt.strip() or None,
                compare=req.compare,
                family=self.model.family,
            )
        except GenerationError as exc:
            raise StudioError(str(exc)) from None

    def submit(self, req: JobRequest) -> dict[str, Any]:
        """Check ``req`` and queue it; returns the job's public state. Raises :class:`StudioError`."""
        plan = self.plan_for(req)
        with self._lock:
            if self._closed:
                raise StudioError("the studio is shutting down; start it again")
            if len(self._queue) >= self.max_queue:
                raise QueueFull(
                    f"{len(self._queue)} jobs are already waiting; try again when one has finished"
                )
            job_id = self._new_id()
            job = Job(job_id, req, plan, self.out / job_id)
            self._jobs[job.id] = job
            self._queue.append(job)
            self._publish(job)
            self._lock.notify_all()
            return job.events[-1]

    def _new_id(self) -> str:
        while True:
            job_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
            if job_id not in self._jobs and not (self.out / job_id).exists():
                return job_id

    # ------------------------------------------------------------------- reading
    def get(self, job_id: str) -> dict[str, Any]:
        """A job's public state; ``KeyError`` when there is no such job."""
        with self._lock:
            return self._jobs[job_id].events[-1]

    def jobs(self) -> list[dict[str, Any]]:
        """Every job of this session, newest first."""
        with self._lock:
            return [job.events[-1] for job in reversed(self._jobs.values())]

    def events_since(self, job_id: str, start: int) -> tuple[int, list[dict[str, Any]]]:
        """``(number of the first, states)``: the job's states from event number ``start`` on.

        States dropped since (a finished job keeps only its last) are skipped. ``KeyError`` for
        no such job.
        """
        with self._lock:
            job = self._jobs[job_id]
            skip = max(start - job.first_event, 0)
            return job.first_event + skip, job.events[skip:]

    def _public(self, job: Job) -> dict[str, Any]:
        s, req = job.plan.settings, job.request
        taken = job.finished - job.started if job.finished and job.started else None
        return {
            "id": job.id,
            "state": job.state,
            "position": next((i + 1 for i, q in enumerate(self._queue) if q is job), None),
            "step": job.step,
            "total_steps": job.total_steps,
            "progress": round(job.step / job.total_steps, 4),
            "prompt": req.prompt,
            "negative_prompt": s.negative_prompt,
            "seconds": s.seconds,
            "steps": s.steps,
            "guidance": s.guidance,
            "seed": req.seed,
            "systems": [
                {
                    "name": sy.name,
                    "adapters": [{"name": r.name, "scale": r.scale} for r in sy.adapters],
                }
                for sy in job.plan.systems
            ],
            "files": list(job.files),
            "error": job.error,
            "seconds_taken": round(taken, 2) if taken is not None else None,
            "note": self.summary.get("note"),
        }

    def _publish(self, job: Job) -> None:
        """Record the job's current state as a new event (call with the lock held)."""
        job.events.append(self._public(job))

    @staticmethod
    def _compact(job: Job) -> None:
        """Keep only a finished job's last state, so a long session does not pile up steps."""
        job.first_event += len(job.events) - 1
        del job.events[:-1]

    # -------------------------------------------------------------------- running
    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._closed:
                    self._lock.wait()
                if self._closed:
                    return
                for old in self._jobs.values():
                    if old.state in FINAL_STATES:
                        self._compact(old)
                job = self._queue.popleft()
                job.state, job.started = RUNNING, time.time()
                for j in (job, *self._queue):  # queue positions moved up
                    self._publish(j)
            self._run(job)

    def _run(self, job: Job) -> None:
        steps = job.plan.settings.steps
        done = 0

        def on_step(i: int, _total: int) -> None:
            with self._lock:
                job.step = done * steps + min(i, steps)
                self._publish(job)

        def on_file(path: Path, item: Generated) -> None:
            nonlocal done
            rel = path.relative_to(self.out).as_posix()
            url = f"{FILES_ROUTE}/{quote(rel)}"
            with self._lock:
                done += 1
                job.step = done * steps
                job.files.append(
                    {
                        "system": item.system,
                        "adapters": [
                            {"name": a["name"], "scale": a["scale"]} for a in item.meta["adapters"]
                        ],
                        "url": url,
                        "sidecar": url.rsplit(".", 1)[0] + ".json",
                        "download": f"{job.id}-{item.system}-{path.name}",
                    }
                )
                self._publish(job)

        error = None
        try:
            results = run_plan(
                self.model, job.plan, allow_base_mismatch=self.allow_base_mismatch, on_step=on_step
            )
            write_results(job.folder, job.plan, results, on_file=on_file)
        except (GenerationError, lora.AdapterError) as exc:
            error = str(exc)
        except Exception as exc:  # the worker must survive any job
            log.exception("studio job %s failed", job.id)
            error = f"generation failed ({type(exc).__name__}: {exc}); see the studio's log"
        with self._lock:
            job.finished = time.time()
            if error is None:
                job.state, job.step = DONE, job.total_steps
                log.info(
                    "job %s done in %.1f s -> %s", job.id, job.finished - job.started, job.folder
                )
            else:
                job.state, job.error = FAILED, error
                log.warning("job %s failed: %s", job.id, error)
            self._publish(job)

    def close(self, timeout: float | None = None) -> None:
        """Stop taking jobs, fail the queued ones and wait up to ``timeout`` s for the running one."""
        with self._lock:
            self._closed = True
            while self._queue:
                job = self._queue.popleft()
                job.state, job.error = FAILED, "the studio stopped before this job ran"
                self._publish(job)
            self._lock.notify_all()
        self._worker.join(timeout)
