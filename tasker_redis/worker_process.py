"""The entry point of a worker process: one Worker per thread, until stopped."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import signal
import threading
from collections.abc import Sequence

from tasker_redis.config import Config
from tasker_redis.isolation import TaskGate
from tasker_redis.slot import RunningTaskSlot
from tasker_redis.worker import EXIT_OK, EXIT_RESOURCE_FAILED, Worker

logger = logging.getLogger(__name__)

# Signals that stop `tasker worker`. The supervisor handles both; a worker
# process handles SIGTERM and ignores SIGINT.
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


class WorkerThreads:
    """Runs one Worker per thread and stops them all when one of them fails.

    Each Worker has its own id, resource, Redis connection and heartbeat.
    run_worker_process gives the Workers of a process one stop event and one
    TaskGate, and nothing else is shared. When a thread's Worker ends
    with a non-zero code, or a task raises SystemExit in it, the others stop
    after their running tasks and the process exits with that code, so the
    supervisor starts a fresh process.
    """

    def __init__(self, workers: Sequence[Worker]) -> None:
        self.workers = list(workers)
        self._codes = [EXIT_OK] * len(self.workers)

    def run(self) -> int:
        """Run every Worker to its end; return the first non-zero exit code.

        The first Worker runs in the calling thread, so with one thread a
        task runs in the main thread, where it may install signal handlers.
        """
        threads = [
            threading.Thread(
                target=self._run_one, args=(index,), name=f"tasker-worker-{index}"
            )
            for index in range(1, len(self.workers))
        ]
        for thread in threads:
            thread.start()
        self._run_one(0)
        # Joining blocks the main thread, which still runs signal handlers.
        for thread in threads:
            thread.join()
        return next((code for code in self._codes if code != EXIT_OK), EXIT_OK)

    def request_stop(self) -> None:
        """Ask every Worker to stop after its running task."""
        for worker in self.workers:
            worker.request_stop()

    def _run_one(self, index: int) -> None:
        worker = self.workers[index]
        code = EXIT_RESOURCE_FAILED
        try:
            code = worker.run()
        except SystemExit:
            # A task called sys.exit(), which Worker logged. Worker.run already
            # released the thread's tasks, charging the running one a crash.
            logger.error(
                "worker %s ended with SystemExit; stopping this process",
                worker.worker_id,
            )
        except BaseException:
            logger.exception("worker %s failed", worker.worker_id)
        finally:
            self._codes[index] = code
            if code != EXIT_OK:
                self.request_stop()


def run_worker_process(
    config: Config,
    worker_ids: Sequence[str],
    slots: Sequence[RunningTaskSlot],
    close_fds: Sequence[int] = (),
    modules: Sequence[str] = (),
) -> None:
    """Entry point of a worker process started by the supervisor; never returns.

    The process runs one Worker per id in worker_ids, each in its own thread
    and publishing its running task in the matching slot.

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
    # With several threads, one gate lets a task charged a crash run alone,
    # and one event stops every thread at once.
    gate = TaskGate() if len(worker_ids) > 1 else None
    stopping = threading.Event()
    group = WorkerThreads(
        [
            Worker(
                config,
                worker_id,
                slot=slot,
                recovers=index == 0,
                gate=gate,
                stopping=stopping,
            )
            for index, (worker_id, slot) in enumerate(
                zip(worker_ids, slots, strict=True)
            )
        ]
    )
    signal.signal(signal.SIGTERM, lambda signum, frame: group.request_stop())
    # The supervisor forks with these signals blocked; a SIGTERM sent since
    # then is delivered now, to the handler above.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    code = EXIT_RESOURCE_FAILED
    try:
        code = group.run()
    except Exception:
        logger.exception("worker process %d failed", os.getpid())
    finally:
        logging.shutdown()
        os._exit(code)
