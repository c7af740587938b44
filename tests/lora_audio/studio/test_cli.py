"""`lora-audio studio` command: loopback by default, one-line refusals (server not started)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from lora_audio.cli import main
from lora_audio.generation import TINY_NOTE
from lora_audio.studio import app as studio_app

CONFIG = Path(__file__).resolve().parents[3] / "configs" / "tiny" / "demo.yaml"


class FakeServer:
    """Stands in for uvicorn: records where it would have listened and returns at once."""

    def __init__(self, app, log_level: str = "warning") -> None:
        self.app = app
        self.address = None

    def run(self, sockets) -> None:
        self.address = sockets[0].getsockname()[:2]
        sockets[0].close()


@pytest.fixture
def servers(monkeypatch) -> list[FakeServer]:
    made: list[FakeServer] = []

    def make(app, log_level="warning"):
        made.append(FakeServer(app, log_level))
        return made[-1]

    monkeypatch.setattr(studio_app, "make_server", make)
    return made


def test_serves_on_loopback_by_default_and_says_the_model_makes_noise(
    tiny, servers, tmp_path: Path, capsys
) -> None:
    _, adapter = tiny
    out = tmp_path / "out"
    rc = main(["studio", "--config", str(CONFIG), "--lora", f"{adapter}:0.5", "--port", "0",
               "--out", str(out)])  # fmt: skip
    printed = capsys.readouterr().out
    assert rc == 0
    host, port = servers[0].address
    assert host == "127.0.0.1" and port > 0
    assert f"http://127.0.0.1:{port}/" in printed and f"NOTE: {TINY_NOTE}" in printed
    assert out.is_dir()


def test_other_host_only_when_told_and_with_a_warning(tiny, servers, tmp_path, capsys) -> None:
    rc = main(["studio", "--config", str(CONFIG), "--host", "0.0.0.0", "--port", "0",
               "--out", str(tmp_path / "out")])  # fmt: skip
    assert rc == 0 and servers[0].address[0] == "0.0.0.0"
    assert "anyone who can reach this machine" in capsys.readouterr().err


def test_refusals_are_one_line_and_start_nothing(tiny, servers, tmp_path, capsys) -> None:
    base = ["studio", "--config", str(CONFIG), "--out", str(tmp_path / "out"), "--port", "0"]
    assert main([*base, "--lora", str(tmp_path / "missing")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"{tmp_path / 'missing'}: no such adapter folder; check the --lora path"
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        assert main([*base[:-1], str(taken.getsockname()[1])]) == 1
    finally:
        taken.close()
    assert "choose another --port" in capsys.readouterr().err
    assert servers == []
