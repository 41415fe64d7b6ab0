"""Make thumbnails of generated images on a worker, with an urgent one at high priority.

A port of the QueueTaskWithPriority example of the Go library tasker
(github.com/asaidimu/tasker, docs/usage/core-operations). It writes a few
240x160 colour images as binary PPM files into a temporary directory and
queues a thumbnail task for each with queue_task_async. Then it queues one
more with queue_task_with_priority, which blocks until its result: the single
worker process takes it before the normal tasks still waiting. The script
checks every thumbnail against a downscale of its own and stops the worker
with SIGTERM.

Run from the repository root:

    python -m examples.image_processor

It uses the Redis server at $TASKER_REDIS_URL, or starts a temporary local one.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

from examples.support import Workers, redis_server
from tasker_redis import Config, TaskContext, TaskManager, task
from tasker_redis.config import REDIS_URL_ENV

logger = logging.getLogger(__name__)

WIDTH = 240
HEIGHT = 160
# Thumbnails are 1/FACTOR of the image in each direction.
FACTOR = 4
NORMAL_IMAGES = 8

# A binary PPM header as write_ppm writes it: no comments, maximum value 255,
# and exactly one whitespace byte before the pixels.
PPM_HEADER = re.compile(rb"P6\s+(\d+)\s+(\d+)\s+255\s")


class Image(NamedTuple):
    """An RGB image: 3 bytes per pixel, rows from top to bottom."""

    width: int
    height: int
    pixels: bytes


def make_image(width: int, height: int, seed: int) -> Image:
    """Return a gradient: red grows to the right, green downwards, blue with seed."""
    blue = seed * 53 % 256
    pixels = bytearray()
    for y in range(height):
        green = y * 255 // max(height - 1, 1)
        for x in range(width):
            pixels += bytes((x * 255 // max(width - 1, 1), green, blue))
    return Image(width, height, bytes(pixels))


def write_ppm(path: Path, image: Image) -> None:
    """Write image as a binary PPM file, the Netpbm format "P6"."""
    header = f"P6\n{image.width} {image.height}\n255\n".encode("ascii")
    path.write_bytes(header + image.pixels)


def read_ppm(path: Path) -> Image:
    """Read a binary PPM file as write_ppm writes it.

    Raises:
        ValueError: The file has another format or a wrong number of pixels.
    """
    data = path.read_bytes()
    match = PPM_HEADER.match(data)
    if match is None:
        raise ValueError(f"{path} is not a binary PPM file with maximum value 255")
    width, height = int(match[1]), int(match[2])
    pixels = data[match.end() :]
    if len(pixels) != width * height * 3:
        raise ValueError(
            f"{path} has {len(pixels)} bytes of pixels, expected "
            f"{width * height * 3} for {width}x{height}"
        )
    return Image(width, height, pixels)


def downscale(image: Image, factor: int) -> Image:
    """Shrink image by factor in each direction, averaging factor x factor blocks.

    Rows and columns at the right and bottom edges that do not fill a whole
    block are dropped.

    Raises:
        ValueError: The image is smaller than one block.
    """
    width, height = image.width // factor, image.height // factor
    if width == 0 or height == 0:
        raise ValueError(
            f"cannot shrink a {image.width}x{image.height} image by {factor}"
        )
    stride = image.width * 3
    area = factor * factor
    pixels = bytearray()
    for y in range(height):
        for x in range(width):
            for channel in range(3):
                start = y * factor * stride + x * factor * 3 + channel
                total = 0
                for row in range(start, start + factor * stride, stride):
                    total += sum(image.pixels[row : row + factor * 3 : 3])
                pixels.append((total + area // 2) // area)
    return Image(width, height, bytes(pixels))


class ImageProcessor:
    """The per-worker resource: makes thumbnails and counts them.

    Attributes:
        created: ImageProcessor objects made in this process so far.
        id: 1 for the first processor of a process, then 2, and so on.
    """

    created = 0

    def __init__(self) -> None:
        ImageProcessor.created += 1
        self.id = ImageProcessor.created
        self.thumbnails = 0

    def thumbnail(self, source: Path, factor: int) -> tuple[Path, Image]:
        """Write a downscaled copy of source as NAME.thumb.ppm next to it."""
        image = downscale(read_ppm(source), factor)
        target = source.with_suffix(".thumb.ppm")
        write_ppm(target, image)
        self.thumbnails += 1
        return target, image

    def close(self) -> None:
        logger.info(
            "image processor %d of process %d closed (thumbnails: %d)",
            self.id,
            os.getpid(),
            self.thumbnails,
        )


# An explicit name, because this module is "__main__" when run as a script but
# "examples.image_processor" in the workers that import it.
@task(name="images.thumbnail")
def thumbnail(
    ctx: TaskContext, processor: ImageProcessor, source: str, factor: int
) -> dict[str, Any]:
    """Write a thumbnail of the PPM image at source and describe it."""
    level = "high" if ctx.high_priority else "normal"
    logger.info(
        "processor %d: %s priority thumbnail of %s", processor.id, level, source
    )
    target, image = processor.thumbnail(Path(source), factor)
    return {
        "path": str(target),
        "width": image.width,
        "height": image.height,
        "processor": processor.id,
    }


config = Config(
    on_create=ImageProcessor,
    on_destroy=ImageProcessor.close,
    worker_count=1,
    queue="images",
)


def describe(source: Path, result: dict[str, Any]) -> str:
    target = Path(result["path"]).name
    return f"{source.name} -> {target} {result['width']}x{result['height']}"


def matches_local_downscale(source: Path, result: dict[str, Any]) -> bool:
    """Return True if the worker's thumbnail equals a downscale made here."""
    return read_ppm(Path(result["path"])) == downscale(read_ppm(source), FACTOR)


def main() -> int:
    url = os.environ.get(REDIS_URL_ENV)
    with (
        tempfile.TemporaryDirectory(prefix="tasker-images-") as directory,
        redis_server(url) as redis_url,
        Workers(
            "examples.image_processor:config",
            count=config.worker_count,
            env={REDIS_URL_ENV: redis_url},
        ) as workers,
        TaskManager(dataclasses.replace(config, redis_url=redis_url)) as manager,
    ):
        folder = Path(directory)
        sources = [folder / f"image-{index}.ppm" for index in range(NORMAL_IMAGES)]
        urgent = folder / "urgent.ppm"
        for seed, path in enumerate([*sources, urgent]):
            write_ppm(path, make_image(WIDTH, HEIGHT, seed))
        print(f"generated {len(sources) + 1} images of {WIDTH}x{HEIGHT} in {folder}")
        workers.wait_until_running(manager)

        futures = [
            manager.queue_task_async(thumbnail, str(path), FACTOR) for path in sources
        ]
        urgent_result = manager.queue_task_with_priority(thumbnail, str(urgent), FACTOR)
        not_done = sum(not future.done() for future in futures)
        print(
            f"high priority: {describe(urgent, urgent_result)} "
            f"(finished with {not_done} of {len(futures)} normal thumbnails pending)"
        )
        results = [future.result(timeout=60) for future in futures]
        for path, result in zip(sources, results, strict=True):
            print(f"normal priority: {describe(path, result)}")

        pairs = [*zip(sources, results, strict=True), (urgent, urgent_result)]
        matching = sum(matches_local_downscale(path, result) for path, result in pairs)
        print(f"thumbnails equal to a local downscale: {matching} of {len(pairs)}")
    return 0 if matching == len(pairs) else 1


if __name__ == "__main__":
    sys.exit(main())
