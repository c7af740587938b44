"""A tiny demo-family model (noise, not music) and one adapter, a studio, and a live server."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lora_audio import adapters
from lora_audio.config import LoraSection
from lora_audio.studio.app import bind, create_app, make_server
from lora_audio.studio.jobs import Studio
from lora_audio.testing import fresh, train_one_step

FAMILY = "demo"


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Path]]:
    """``(model, adapter folder)``: ``tiny:demo`` built in a temporary cache, adapter ``styleA``."""
    root = tmp_path_factory.mktemp("studio")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LORA_AUDIO_CACHE", str(root / "cache"))
        trained = fresh(FAMILY, f"tiny:{FAMILY}")
        lora = LoraSection(rank=4, alpha=8, dropout=0.0)
        train_one_step(trained, lora, seed=5, lr=0.2)
        adapters.save_adapter(trained, root / "styleA", lora)
        yield fresh(FAMILY, f"tiny:{FAMILY}"), root / "styleA"


@pytest.fixture
def studio(tiny, tmp_path: Path) -> Iterator[Studio]:
    """A studio offering ``styleA`` at 0.8, writing to ``tmp_path/out``."""
    model, adapter = tiny
    s = Studio(model, [(adapter, 0.8)], tmp_path / "out")
    yield s
    s.close(timeout=60)


@pytest.fixture
def client(studio: Studio) -> Iterator[Any]:
    from starlette.testclient import TestClient

    with TestClient(create_app(studio)) as c:
        yield c


@pytest.fixture
def live(studio: Studio) -> Iterator[str]:
    """The studio served by uvicorn on 127.0.0.1 (a free port) in a thread; yields its URL."""
    server = make_server(create_app(studio))
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
