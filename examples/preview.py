"""Preview an image at once with run_task: in this process, with no worker.

A port of the RunTask example of the Go library tasker
(github.com/asaidimu/tasker, docs/usage/core-operations). run_task skips the
queues: it borrows an ImageProcessor from the manager's pool of one resource
(resource_pool_size=1), runs the thumbnail task of examples.image_processor
here and returns the processor to the pool, so the second preview reuses it.
A TaskManager connects to Redis when it is created, so a server is still
needed, but no worker runs.

Run from the repository root:

    python -m examples.preview

It uses the Redis server at $TASKER_REDIS_URL, or starts a temporary local one.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from pathlib import Path

from examples.image_processor import (
    FACTOR,
    HEIGHT,
    WIDTH,
    ImageProcessor,
    config,
    make_image,
    thumbnail,
    write_ppm,
)
from examples.support import redis_server
from tasker_redis import TaskManager
from tasker_redis.config import REDIS_URL_ENV


def main() -> None:
    url = os.environ.get(REDIS_URL_ENV)
    preview_config = dataclasses.replace(config, resource_pool_size=1)
    with (
        tempfile.TemporaryDirectory(prefix="tasker-preview-") as directory,
        redis_server(url) as redis_url,
        TaskManager(
            dataclasses.replace(preview_config, redis_url=redis_url)
        ) as manager,
    ):
        for index in range(2):
            source = Path(directory) / f"preview-{index}.ppm"
            write_ppm(source, make_image(WIDTH, HEIGHT, seed=index))
            started = time.perf_counter()
            result = manager.run_task(thumbnail, str(source), FACTOR)
            elapsed_ms = (time.perf_counter() - started) * 1000
            print(
                f"run_task: {source.name} -> {Path(result['path']).name} "
                f"{result['width']}x{result['height']} on processor "
                f"{result['processor']} ({elapsed_ms:.1f} ms)"
            )
        print(f"image processors created: {ImageProcessor.created}")


if __name__ == "__main__":
    main()
