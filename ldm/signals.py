"""SIGTERM and SIGINT as an exception (`ldm.errors.Interrupted`), so a stopped run records why and exits non-zero.

The entry scripts (train.py, evaluate.py, sample.py) run their Hydra main under `guarded`: a signal that arrives
outside a run (while Hydra composes, between a sweep's jobs, while joblib waits on its workers) ends the process
with one `error:` line and exit 128 + signal. Inside a run, `ldm.run.task` records `status: interrupted` first.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Callable

from ldm.errors import Interrupted


def _raise_interrupted(signum: int, frame) -> None:
    raise Interrupted(signum)


def install() -> None:
    """SIGTERM and SIGINT raise `Interrupted` (main thread only, where Python delivers signals). Lightning's own
    SIGTERM handler, installed during `fit`, calls this one after its own, so training stops at once."""
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, _raise_interrupted)


def guarded(main: Callable[[], object]) -> None:
    """Run an entry point's main with the handlers installed; a stop becomes one line and exit 128 + signal."""
    install()
    try:
        main()
    except Interrupted as e:
        print(f"error: stopped by {e.name}; a stopped run continues with resume=<its run directory>",
              file=sys.stderr)
        sys.exit(128 + e.signum)
