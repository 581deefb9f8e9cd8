"""Progress of long steps (a converter, a quantiser, an engine build) instead of silence.

Each step is logged to the ``nnport.progress`` logger: when it starts, every
``every_s`` seconds while it runs, and when it ends (with its seconds).  The
CLI shows these lines on stderr when stderr is a terminal, and always with
``-v``; a library user sees them by configuring logging.  With no handler
listening at INFO the step costs a level check: no thread is started.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator

log = logging.getLogger("nnport.progress")


@contextlib.contextmanager
def step(what: str, *, every_s: float = 15.0) -> Iterator[None]:
    """Log ``what`` as it starts, while it runs (every ``every_s`` seconds) and as it ends or fails."""
    if not log.isEnabledFor(logging.INFO):
        yield
        return
    start = time.perf_counter()
    log.info("%s ...", what)
    done = threading.Event()

    def beat() -> None:
        while not done.wait(every_s):
            log.info("%s: still working (%.0f s)", what, time.perf_counter() - start)

    threading.Thread(target=beat, name="nnport-progress", daemon=True).start()
    try:
        yield
    except BaseException:
        log.info("%s: stopped after %.1f s", what, time.perf_counter() - start)
        raise
    else:
        log.info("%s: done in %.1f s", what, time.perf_counter() - start)
    finally:
        done.set()
