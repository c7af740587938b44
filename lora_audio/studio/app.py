"""The studio's web app (FastAPI): the page, a JSON API, live progress and the output files.

    GET  /                          the page (static/index.html, studio.js, studio.css)
    GET  /api/info                  model (with the tiny-model note), adapters, limits, defaults
    POST /api/jobs                  queue a generation -> 202 + the job's state
    GET  /api/jobs                  this session's jobs, newest first
    GET  /api/jobs/{id}             one job's state (for polling)
    GET  /api/jobs/{id}/events      Server-Sent Events: every state change until done or failed
    GET  /files/{path}              a file in the output folder, and nothing outside it

POST body (JSON): ``prompt`` (required), ``seconds``, ``steps``, ``seed``, ``guidance``,
``negative_prompt``, ``adapters`` (``[{"name": ..., "scale": ...}]``), ``compare``. A refused
request gets a 4xx status and ``{"error": "one line saying what to change"}``.

Files are served by Starlette's ``StaticFiles``, which resolves symlinks and refuses any path
that leaves the folder (``../``, ``%2e%2e``, absolute paths, links pointing out).
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from lora_audio.studio import StudioError
from lora_audio.studio.jobs import FILES_ROUTE, FINAL_STATES, JobRequest, QueueFull, Studio

STATIC = Path(__file__).resolve().parent / "static"
#: how often an event stream looks for new job states, in seconds
EVENT_POLL_S = 0.05


class AdapterChoice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    scale: float = 1.0


class GenerateBody(BaseModel):
    """``POST /api/jobs``; unset numbers take the studio's defaults (``/api/info``)."""

    model_config = ConfigDict(extra="forbid")

    prompt: str
    negative_prompt: str = ""
    seconds: float | None = None
    steps: int | None = None
    seed: int = 0
    guidance: float | None = None
    adapters: list[AdapterChoice] = Field(default_factory=list)
    compare: bool = False


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    """One line for the first problem in a request body pydantic refused."""
    first = exc.errors()[0]
    if first.get("type") == "json_invalid":
        return "the request body is not valid JSON"
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    return f"{where}: {first.get('msg', 'invalid')}" if where else str(first.get("msg"))


def create_app(studio: Studio) -> FastAPI:
    """The app serving ``studio``; closing the app (lifespan end) closes the studio."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        studio.close(timeout=0)

    # No /docs: FastAPI's docs page loads scripts from a CDN, and the studio works offline.
    app = FastAPI(
        title="lora-audio studio",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return error(422, _validation_message(exc))

    @app.exception_handler(HTTPException)
    async def _http(_request: Request, exc: HTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail), exc.headers)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/api/info")
    async def info() -> dict[str, Any]:
        return studio.info()

    @app.post("/api/jobs", status_code=202)
    async def submit(body: GenerateBody) -> Any:
        defaults = studio.info()["defaults"]
        req = JobRequest(
            prompt=body.prompt,
            seconds=defaults["seconds"] if body.seconds is None else body.seconds,
            steps=defaults["steps"] if body.steps is None else body.steps,
            seed=body.seed,
            guidance=defaults["guidance"] if body.guidance is None else body.guidance,
            negative_prompt=body.negative_prompt,
            adapters=tuple((a.name, a.scale) for a in body.adapters),
            compare=body.compare,
        )
        try:
            # Checks the adapter files (sha256): off the event loop.
            return await asyncio.to_thread(studio.submit, req)
        except QueueFull as exc:
            return error(429, str(exc))
        except StudioError as exc:
            return error(400, str(exc))

    @app.get("/api/jobs")
    async def jobs() -> list[dict[str, Any]]:
        return studio.jobs()

    @app.get("/api/jobs/{job_id}")
    async def job(job_id: str) -> Any:
        try:
            return studio.get(job_id)
        except KeyError:
            return error(404, f"no job {job_id!r} in this session")

    @app.get("/api/jobs/{job_id}/events")
    async def events(job_id: str, request: Request) -> Any:
        # A reconnecting EventSource sends the last id it got: resume after it.
        last = request.headers.get("last-event-id", "")
        start = int(last) + 1 if last.isdigit() else 0
        try:
            final = studio.get(job_id)["state"] in FINAL_STATES  # before: no event after it
            _, new = studio.events_since(job_id, start)
        except KeyError:
            return error(404, f"no job {job_id!r} in this session")
        if final and not new:
            return Response(status_code=204)  # all sent: tells EventSource not to reconnect
        return StreamingResponse(
            _event_stream(studio, job_id, start, request),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    studio.out.mkdir(parents=True, exist_ok=True)
    app.mount(FILES_ROUTE, StaticFiles(directory=studio.out), name="files")
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


async def _event_stream(
    studio: Studio, job_id: str, start: int, request: Request
) -> AsyncIterator[str]:
    """``id: N`` + ``data: {job state}`` for every state from number ``start`` on, until final."""
    sent = start
    while True:
        first, new = studio.events_since(job_id, sent)
        for number, state in enumerate(new, first):
            yield f"id: {number}\ndata: {json.dumps(state)}\n\n"
            if state["state"] in FINAL_STATES:
                return
        sent = first + len(new)
        if await request.is_disconnected():
            return
        await asyncio.sleep(EVENT_POLL_S)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free port). ``OSError`` if taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def make_server(app: FastAPI, log_level: str = "warning") -> Any:
    """A uvicorn server for ``app``; run it with ``server.run(sockets=[bind(host, port)])``."""
    import uvicorn

    config = uvicorn.Config(app, log_level=log_level, access_log=False, timeout_graceful_shutdown=1)
    return uvicorn.Server(config)
