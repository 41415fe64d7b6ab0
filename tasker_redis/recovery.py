"""Recovery of tasks held by workers that died, crashed or stopped heartbeating."""

from __future__ import annotations

import logging

from tasker_redis import scripts
from tasker_redis import serialization as ser
from tasker_redis.config import Config
from tasker_redis.scripts import OrphanedTask, QueueScripts

logger = logging.getLogger(__name__)

# Expired leases released per recovery pass.
RECOVERY_BATCH = 100


def release_worker(
    queue_scripts: QueueScripts,
    config: Config,
    worker_id: str,
    *,
    releaser_id: str,
    crashed: bool,
    started_token: int = -1,
    running: bool = False,
) -> int:
    """Put the tasks of a dead worker back on the queue, or fail them.

    Args:
        queue_scripts: Scripts bound to the queue.
        config: Queue settings (max_crashes, lease_timeout, result_ttl).
        worker_id: The worker that is gone.
        releaser_id: Id of the calling process, recorded on failed tasks.
        crashed: True if the worker died unexpectedly, which counts towards
            max_crashes for the task it was running; False if it was killed
            on purpose.
        started_token: Fencing token of the last task the worker started,
            from its RunningTaskSlot; 0 if it started none since its last
            recorded results, -1 if unknown.
        running: True if that task was still running.

    Returns:
        The number of tasks failed rather than queued again.
    """
    orphans = queue_scripts.release(
        worker_id,
        count_crash=crashed,
        max_crashes=config.max_crashes,
        releaser_id=releaser_id,
        lease_ms=int(config.lease_timeout * 1000),
        started_token=started_token,
        running=running,
    )
    for orphan in orphans:
        fail_orphan(queue_scripts, config, orphan, releaser_id)
    return len(orphans)


def recover_expired(
    queue_scripts: QueueScripts, config: Config, releaser_id: str
) -> int:
    """Release tasks whose lease expired; return how many were failed instead."""
    orphans = queue_scripts.recover(
        max_crashes=config.max_crashes,
        releaser_id=releaser_id,
        lease_ms=int(config.lease_timeout * 1000),
        limit=RECOVERY_BATCH,
        worker_silence_ms=int(config.lease_timeout * 3000),
    )
    for orphan in orphans:
        fail_orphan(queue_scripts, config, orphan, releaser_id)
    return len(orphans)


def _decode_or_none(data: bytes) -> ser.TaskMessage | None:
    try:
        return ser.TaskMessage.decode(data)
    except ValueError:
        return None


def fail_orphan(
    queue_scripts: QueueScripts, config: Config, orphan: OrphanedTask, releaser_id: str
) -> None:
    """Record the failure of a task that must not run again.

    An at-most-once task fails with TaskLost. A task that crashed its worker
    more than max_crashes times is a poison task: it fails with
    TaskDeadLettered and its message goes to the dead-letter list.
    """
    message = _decode_or_none(orphan.message)
    name = message.name if message is not None else "<undecodable>"
    if message is not None and message.once:
        text = (
            f"at-most-once task {orphan.task_id} ({name}) was interrupted because "
            "its worker died or was killed, and is not run again"
        )
        logger.warning("%s", text)
        record_failure(
            queue_scripts, config, orphan, releaser_id, kind=ser.LOST, text=text
        )
        return
    text = (
        f"task {orphan.task_id} ({name}) crashed its worker {orphan.crashes} "
        f"times, more than max_crashes ({config.max_crashes}); moved to the "
        "dead-letter list"
    )
    logger.error("%s", text)
    record_failure(
        queue_scripts, config, orphan, releaser_id, kind=ser.DEAD_LETTERED, text=text
    )


# Error kind of a failure recorded for a task: exception name and counter.
_FAILURE_KINDS = {
    ser.LOST: ("TaskLost", scripts.LOST),
    ser.DEAD_LETTERED: ("TaskDeadLettered", scripts.DEAD_LETTERED),
    ser.TIMEOUT: ("TaskTimeout", scripts.FAILED),
}


def record_failure(
    queue_scripts: QueueScripts,
    config: Config,
    orphan: OrphanedTask,
    releaser_id: str,
    *,
    kind: str,
    text: str,
) -> None:
    """Record an error result for a task leased to the releaser.

    The result goes to the task's result key and to the inbox of its
    producer; a dead-lettered task also gets a dead-letter entry.
    """
    message = _decode_or_none(orphan.message)
    error_type, counter = _FAILURE_KINDS[kind]
    dead_letter = None
    if kind == ser.DEAD_LETTERED:
        dead_letter = ser.DeadLetter(
            orphan.task_id, text, orphan.message, releaser_id
        ).encode()
    result = ser.TaskResult(
        orphan.task_id,
        ok=False,
        error_kind=kind,
        error_type=error_type,
        error_message=text,
        worker_id=releaser_id,
    )
    finished = scripts.FinishedTask(
        orphan.task_id,
        orphan.claim,
        result.encode(config.max_payload_size),
        counter,
        inbox=message.reply_to
        if message is not None and queue_scripts.keys.is_inbox(message.reply_to)
        else None,
        dead_letter=dead_letter,
    )
    queue_scripts.finish(
        [finished],
        worker_id=releaser_id,
        lease_ms=int(config.lease_timeout * 1000),
        result_ttl_ms=int(config.result_ttl * 1000),
        claim_next=0,
    )
