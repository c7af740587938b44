"""Logging setup for the command-line tools (the library itself only uses ``logging``)."""

from __future__ import annotations

import logging
import sys


def setup_logging(verbose: int = 0, quiet: bool = False) -> None:
    """Log to stderr: WARNING with ``quiet``, INFO by default, DEBUG with ``-v``."""
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(message)s" if not verbose else "%(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Libraries we depend on are chatty at INFO.
    for name in ("numba", "matplotlib", "PIL", "urllib3", "httpx", "filelock"):
        logging.getLogger(name).setLevel(logging.WARNING)
