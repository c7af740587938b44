"""The `lora-audio` entry point's process settings."""

from __future__ import annotations

import subprocess
import sys

from lora_audio.cli import GOMP_SPINCOUNT, omp_defaults


def test_omp_spin_count_is_set_unless_the_user_chose_one() -> None:
    env: dict[str, str] = {}
    omp_defaults(env)
    assert env == {"GOMP_SPINCOUNT": GOMP_SPINCOUNT}
    mine = {"GOMP_SPINCOUNT": "123"}
    omp_defaults(mine)
    assert mine == {"GOMP_SPINCOUNT": "123"}
    policy = {"OMP_WAIT_POLICY": "ACTIVE"}
    omp_defaults(policy)
    assert policy == {"OMP_WAIT_POLICY": "ACTIVE"}


def test_commands_run_with_it_before_torch_loads() -> None:
    code = (
        "import os, sys; from lora_audio import cli; "
        "assert 'torch' not in sys.modules; "
        "cli.omp_defaults(os.environ); print(os.environ['GOMP_SPINCOUNT'])"
    )
    env = {"PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == GOMP_SPINCOUNT
