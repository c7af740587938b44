"""The studio's API on the tiny demo model (noise, not music): jobs, progress, files, refusals."""

from __future__ import annotations

import http.client
import io
import json
import threading
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
import soundfile as sf

import lora_audio
from lora_audio.generation import TINY_NOTE
from lora_audio.studio.jobs import Studio

#: fast settings: the tiny model, 1 s, 4 denoising steps
FAST = {"seconds": 1.0, "steps": 4, "guidance": 3.0}


def body(**changes) -> dict:
    return {"prompt": "calm piano", "seed": 7, **FAST, **changes}


def stream(client, job_id: str, last_id: int | None = None) -> list[dict]:
    """Every state the job's event stream sends (after ``last_id``), until done or failed."""
    events, ids = [], []
    headers = {} if last_id is None else {"Last-Event-ID": str(last_id)}
    with client.stream("GET", f"/api/jobs/{job_id}/events", headers=headers) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("id: "):
                ids.append(int(line[4:]))
            elif line.startswith("data: "):
                events.append(json.loads(line[6:]))
    first = ids[0] if ids else 0
    assert ids == list(range(first, first + len(events)))
    return events


def wav(content: bytes) -> tuple[np.ndarray, int]:
    audio, sr = sf.read(io.BytesIO(content), dtype="float32", always_2d=True)
    return audio.T, sr


def test_info_page_and_tiny_model_note(client) -> None:
    info = client.get("/api/info").json()
    assert info["note"] == TINY_NOTE
    assert info["model"] == {"family": "demo", "base_model": "tiny:demo", "sample_rate": 16000}
    assert info["adapters"] == [{"name": "styleA", "scale": 0.8}]
    assert info["limits"]["max_seconds"] == 300
    page = client.get("/")
    assert page.status_code == 200 and "/static/studio.js" in page.text
    assert "EventSource" in client.get("/static/studio.js").text
    assert client.get("/docs").status_code == 404  # no page that loads scripts from a CDN


def test_generate_streams_every_step_then_serves_base_and_adapter_at_one_seed(
    client, studio: Studio, tiny
) -> None:
    model, adapter = tiny
    r = client.post(
        "/api/jobs", json=body(adapters=[{"name": "styleA", "scale": 0.8}], compare=True)
    )
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["state"] in ("queued", "running") and job["total_steps"] == 8
    events = stream(client, job["id"])

    steps = [e["step"] for e in events]
    assert steps == sorted(steps) and set(steps) == set(range(9)), steps
    assert events[-1]["state"] == "done" and events[-1]["progress"] == 1.0
    assert client.get(f"/api/jobs/{job['id']}").json() == events[-1]
    # A reconnecting EventSource resumes after the last id it got; past the end: 204, stop.
    assert stream(client, job["id"], last_id=3) == events[4:]
    r = client.get(f"/api/jobs/{job['id']}/events", headers={"Last-Event-ID": str(len(events) - 1)})
    assert r.status_code == 204
    assert [j["id"] for j in client.get("/api/jobs").json()] == [job["id"]]

    files = {f["system"]: f for f in events[-1]["files"]}
    assert list(files) == ["base", "styleA"]
    assert files["styleA"]["adapters"] == [{"name": "styleA", "scale": 0.8}]
    got = {}
    for system, f in files.items():
        r = client.get(f["url"])
        assert r.status_code == 200 and r.headers["content-type"] == "audio/x-wav"
        got[system], sr = wav(r.content)
        assert sr == 16000 and got[system].shape == (1, 16000)
        meta = client.get(f["sidecar"]).json()
        assert (meta["seed"], meta["system"], meta["note"]) == (7, system, TINY_NOTE)
        assert f["url"] == f"/files/{job['id']}/{system}/p000_s7.wav"
    index = json.loads((studio.out / job["id"] / "index.json").read_text())
    assert index["complete"] and index["layout"] == "one folder per system"

    # The same API as the CLI at the same seed gives the same audio (24-bit files).
    direct = lora_audio.generate(
        model, "calm piano", [(adapter, 0.8)], seeds=[7], compare=True, **FAST
    )
    for item in direct:
        np.testing.assert_allclose(got[item.system], np.clip(item.audio, -1, 1), atol=2e-6)
    assert np.abs(got["base"] - got["styleA"]).max() > 1e-3, "the adapter changed nothing"


def test_bad_requests_get_one_line_json_errors_and_queue_nothing(client, studio: Studio) -> None:
    cases = [
        (body(prompt="   "), 400, "the prompt is empty"),
        (
            body(adapters=[{"name": "nope"}]),
            400,
            "unknown adapter 'nope'; this studio offers: styleA",
        ),
        (body(seconds=0), 400, "seconds must be above 0 and at most 300"),
        (body(seconds=301), 400, "got 301"),
        (body(steps=0), 400, "steps must be from 1 to 500"),
        (body(steps=501), 400, "got 501"),
        (body(seed=-1), 400, "seed must be from 0"),
        (body(guidance=-1), 400, "guidance must be from 0"),
        (body(adapters=[{"name": "styleA", "scale": 9}]), 400, "strength of styleA"),
        (body(adapters=[{"name": "styleA"}] * 2), 400, "chosen twice"),
        (body(compare=True), 400, "choose an adapter to compare"),
        (body(prompt="x" * 1001), 400, "limited to 1000 characters"),
        (body(seconds="long"), 422, "seconds: "),
        (body(promt="typo"), 422, "promt: "),
        ({"seed": 1}, 422, "prompt: Field required"),
    ]
    for payload, status, message in cases:
        r = client.post("/api/jobs", json=payload)
        assert r.status_code == status, (payload, r.text)
        assert message in r.json()["error"], (payload, r.json())
        assert "\n" not in r.json()["error"]
    r = client.post("/api/jobs", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"] == "the request body is not valid JSON"
    r = client.get("/api/jobs/20990101-000000-abcdef")
    assert r.status_code == 404 and "no job" in r.json()["error"]
    assert client.get("/api/jobs/nope/events").status_code == 404
    assert client.get("/api/jobs").json() == []
    assert list(studio.out.iterdir()) == []


@pytest.fixture
def outside(studio: Studio, tmp_path: Path) -> bytes:
    """A secret file next to the output folder, symlinks to it from inside, and one legit file."""
    secret = b"SECRET-outside-the-output-folder"
    (tmp_path / "secret.txt").write_bytes(secret)
    (studio.out / "inside.json").write_text('{"ok": true}')
    (studio.out / "link.txt").symlink_to(tmp_path / "secret.txt")
    (studio.out / "linkdir").symlink_to(tmp_path, target_is_directory=True)
    return secret


TRAVERSALS = [
    "/files/../secret.txt",
    "/files/%2e%2e/secret.txt",
    "/files/%2E%2E/%2e%2e/out/../secret.txt",
    "/files/..%2fsecret.txt",
    "/files/%2e%2e%2fsecret.txt",
    "/files/..%5csecret.txt",
    "/files//etc/passwd",
    "/files/%2fetc%2fpasswd",
    "/files/link.txt",
    "/files/linkdir/secret.txt",
    "/static/../../studio/jobs.py",
    "/static/%2e%2e/jobs.py",
    "/static/%2e%2e/__init__.py",
    "/files/",
]


def test_nothing_outside_the_output_folder_is_readable(client, outside: bytes) -> None:
    assert client.get("/files/inside.json").json() == {"ok": True}
    for path in TRAVERSALS:
        r = client.get(path)
        assert r.status_code == 404, (path, r.status_code)
        assert outside not in r.content and b"import" not in r.content, path


def test_raw_paths_through_the_real_server(live: str, outside: bytes) -> None:
    """http.client sends paths as written (no ``..`` clean-up), through uvicorn."""
    host = urlsplit(live).netloc
    for path in [*TRAVERSALS, "/files/./../secret.txt", "/files/inside.json"]:
        conn = http.client.HTTPConnection(host, timeout=30)
        conn.request("GET", path)
        r = conn.getresponse()
        content = r.read()
        conn.close()
        if path == "/files/inside.json":
            assert r.status == 200 and json.loads(content) == {"ok": True}
            continue
        assert r.status in (400, 404), (path, r.status)
        assert outside not in content and b"import" not in content, path


def test_queue_runs_one_generation_at_a_time_in_order(tiny, tmp_path: Path, monkeypatch) -> None:
    from starlette.testclient import TestClient

    from lora_audio.studio.app import create_app

    model, adapter = tiny
    real = model.generate
    entered, release = threading.Event(), threading.Event()
    active, calls, most = [0], [], [0]
    lock = threading.Lock()

    def generate(prompt, **kw):
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
            calls.append(prompt)
        entered.set()
        try:
            assert release.wait(60), "test never released the first job"
            return real(prompt, **kw)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(model, "generate", generate)
    studio = Studio(model, [(adapter, 1.0)], tmp_path / "out", max_queue=1)
    try:
        with TestClient(create_app(studio)) as client:
            a = client.post("/api/jobs", json=body(prompt="calm piano")).json()
            assert entered.wait(60)
            b = client.post("/api/jobs", json=body(prompt="fast drums", seed=1)).json()
            assert client.get(f"/api/jobs/{a['id']}").json()["state"] == "running"
            assert (b["state"], b["position"]) == ("queued", 1)
            full = client.post("/api/jobs", json=body(prompt="slow jazz"))
            assert full.status_code == 429 and "already waiting" in full.json()["error"]
            release.set()
            b_events = stream(client, b["id"])
            a_final = client.get(f"/api/jobs/{a['id']}").json()
            # B started after A finished: A kept only its last state (a long session stays small)
            assert stream(client, a["id"]) == [a_final]
            assert len(studio.events_since(a["id"], 0)[1]) == 1
    finally:
        studio.close(timeout=60)
    assert a_final["state"] == b_events[-1]["state"] == "done"
    assert most[0] == 1 and calls == ["calm piano", "fast drums"]
    assert b_events[0]["state"] == "queued" and b_events[0]["position"] == 1
    states = [e["state"] for e in b_events]
    assert sorted(set(states), key=states.index) == ["queued", "running", "done"]


def test_a_failing_job_reports_why_and_the_next_one_runs(client, tiny, monkeypatch) -> None:
    model, _ = tiny
    real = model.generate
    calls = []

    def generate(prompt, **kw):
        calls.append(prompt)
        if len(calls) == 1:
            raise RuntimeError("out of memory (simulated)")
        return real(prompt, **kw)

    monkeypatch.setattr(model, "generate", generate)
    bad = client.post("/api/jobs", json=body()).json()
    good = client.post("/api/jobs", json=body(seed=8)).json()
    failed = stream(client, bad["id"])[-1]
    assert failed["state"] == "failed"
    assert failed["error"] == (
        "generation failed (RuntimeError: out of memory (simulated)); see the studio's log"
    )
    assert stream(client, good["id"])[-1]["state"] == "done"


def test_bad_adapter_or_output_folder_stops_the_studio_at_start(tiny, tmp_path: Path) -> None:
    from lora_audio.studio import StudioError

    model, adapter = tiny
    with pytest.raises(StudioError, match="no such adapter folder"):
        Studio(model, [(tmp_path / "missing", 1.0)], tmp_path / "out")
    with pytest.raises(StudioError, match="outside"):
        Studio(model, [(adapter, 7.0)], tmp_path / "out")
    with pytest.raises(StudioError, match="--max-queue >= 1"):
        Studio(model, [], tmp_path / "out", max_queue=0)
    (tmp_path / "file").write_text("x")
    with pytest.raises(StudioError, match="not a folder; choose another --out folder"):
        Studio(model, [], tmp_path / "file")
    assert not (tmp_path / "out").exists(), "a studio that did not start wrote nothing"
