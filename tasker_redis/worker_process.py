"""The entry point of a worker process that the supervisor starts."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import signal
from collections.abc import Sequence

from tasker_redis.config import Config
from tasker_redis.slot import RunningTaskSlot
from tasker_redis.worker import EXIT_RESOURCE_FAILED, Worker

logger = logging.getLogger(__name__)

# Signals that stop `tasker worker`. The supervisor handles both; a worker
# process handles SIGTERM and ignores SIGINT.
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def run_worker_process(
    config: Config,
    worker_id: str,
    slot: RunningTaskSlot | None = None,
    close_fds: Sequence[int] = (),
    modules: Sequence[str] = (),
) -> None:
    """Entry point of a worker process started by the supervisor; never returns.

    SIGTERM requests a graceful stop. SIGINT is ignored because a terminal
    sends it to the whole process group and the supervisor already turns it
    into SIGTERM, or into SIGKILL for a second Ctrl-C.
    """
    signal.set_wakeup_fd(-1)
    for fd in close_fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Under fork these are imported already; a spawned process imports them
    # here so that their @task functions are registered.
    for module in modules:
        importlib.import_module(module)
    worker = Worker(config, worker_id, slot=slot)
    signal.signal(signal.SIGTERM, lambda signum, frame: worker.request_stop())
    # The supervisor forks with these signals blocked; a SIGTERM sent since
    # then is delivered now, to the handler above.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    code = EXIT_RESOURCE_FAILED
    try:
        code = worker.run()
    except Exception:
        logger.exception("worker %s failed", worker_id)
    finally:
        logging.shutdown()
        os._exit(code)
