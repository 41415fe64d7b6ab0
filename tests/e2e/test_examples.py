"""The examples as real scripts, with real workers and a private Redis server."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from examples.file_stats import FileReader, measure_bytes
from examples.image_processor import Image, downscale, read_ppm, write_ppm

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]

# Seconds one example may run. Each took about 2 s on an idle 2-core machine.
EXAMPLE_TIMEOUT = 120

# Files of known content, by path relative to the scanned directory.
SMALL_FILES = {
    "a.txt": b"hello world\n",
    "b.txt": b"one two three\nfour",
    "empty.txt": b"",
    "sub/data.bin": b"\x00\x01\x02" * 100,
    # 1,250,000 bytes, so a word spans the boundary of the 1 MiB reads.
    "sub/deep/words.txt": b"word " * 250_000,
    # The NUL byte lies after the first 8 KiB, so this is a text file.
    "late-nul.txt": b"x" * 9000 + b"\x00",
}


def run_example(
    module: str, *args: str, redis_url: str | None
) -> subprocess.CompletedProcess[str]:
    """Run `python -m module args...` from the repository root and capture it."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("TASKER_REDIS_URL", "FILE_STATS_QUEUE")
    }
    if redis_url is not None:
        env["TASKER_REDIS_URL"] = redis_url
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=EXAMPLE_TIMEOUT,
    )


def output_values(stdout: str) -> dict[str, str]:
    """Return the "key: value" lines of an example's output as a dict."""
    values = {}
    for line in stdout.splitlines():
        key, separator, value = line.partition(": ")
        if separator:
            values[key] = value
    return values


def make_small_tree(root: Path) -> Path:
    for name, content in SMALL_FILES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    (root / "link.txt").symlink_to(root / "a.txt")
    return root


# calculator, image_processor and preview


def test_calculator_products(redis_url: str) -> None:
    completed = run_example("examples.calculator", redis_url=redis_url)
    lines = completed.stdout.splitlines()

    assert completed.returncode == 0, completed.stderr
    assert lines[0].startswith("queue_task: 10 * 25 = 250 (")
    assert lines[1:] == [
        "queue_task_async: 2 * 3 = 6",
        "queue_task_async: 7 * 6 = 42",
        "queue_task_async: 12 * 12 = 144",
        "queue_task_async: 123456789 * 987654321 = 121932631112635269",
    ]


def test_image_processor_thumbnails(redis_url: str) -> None:
    completed = run_example("examples.image_processor", redis_url=redis_url)
    lines = completed.stdout.splitlines()
    normal = [line for line in lines if line.startswith("normal priority: ")]
    urgent = [line for line in lines if line.startswith("high priority: ")]

    assert completed.returncode == 0, completed.stderr
    assert len(urgent) == 1
    assert urgent[0].startswith("high priority: urgent.ppm -> urgent.thumb.ppm 60x40")
    assert normal == [
        f"normal priority: image-{index}.ppm -> image-{index}.thumb.ppm 60x40"
        for index in range(8)
    ]
    assert lines[-1] == "thumbnails equal to a local downscale: 9 of 9"


def test_downscale_averages_blocks() -> None:
    # Two 2x2 blocks. The left one averages red 0, 10, 20, 30 to 15, and the
    # right one rounds the blue average of 7, 8, 8, 8 (7.75) to 8.
    top = [0, 1, 2, 10, 1, 2, 100, 7, 7, 100, 7, 8]
    bottom = [20, 1, 2, 30, 1, 3, 100, 7, 8, 101, 7, 8]
    pixels = bytes([*top, *bottom])
    shrunk = downscale(Image(4, 2, pixels), 2)

    assert shrunk == Image(2, 1, bytes([15, 1, 2, 100, 7, 8]))


def test_downscale_rejects_tiny_image() -> None:
    with pytest.raises(ValueError, match="cannot shrink a 1x1 image by 2"):
        downscale(Image(1, 1, b"\x00\x00\x00"), 2)


def test_ppm_round_trip(tmp_path: Path) -> None:
    # Pixel bytes that are ASCII whitespace must not be taken for the header.
    image = Image(2, 1, b" \n\t\r\x0b\x0c")
    path = tmp_path / "image.ppm"
    write_ppm(path, image)

    assert read_ppm(path) == image


def test_ppm_rejects_short_pixels(tmp_path: Path) -> None:
    path = tmp_path / "short.ppm"
    path.write_bytes(b"P6\n2 2\n255\n" + b"\x00" * 11)

    with pytest.raises(ValueError, match="has 11 bytes of pixels, expected 12"):
        read_ppm(path)


def test_preview_reuses_resource(redis_url: str) -> None:
    completed = run_example("examples.preview", redis_url=redis_url)
    lines = completed.stdout.splitlines()
    pattern = re.compile(
        r"run_task: preview-(\d)\.ppm -> preview-\1\.thumb\.ppm 60x40 "
        r"on processor 1 \(\d+\.\d ms\)"
    )

    assert completed.returncode == 0, completed.stderr
    assert len(lines) == 3
    assert pattern.fullmatch(lines[0])
    assert pattern.fullmatch(lines[1])
    assert lines[2] == "image processors created: 1"


# file_stats: the local reference computation


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 7, 4096])
def test_reader_matches_whole_file(tmp_path: Path, chunk_size: int) -> None:
    contents = [
        b"",
        b"a",
        b"ab cd\n  efg \n" * 1000,
        # A word that spans the first 8 KiB read and the chunks after it.
        b"x" * 8191 + b"yy z",
        b"\n" * 9000,
        b" \t" * 5000 + b"end",
        b"\x00" + b"binary data " * 1000,
    ]
    reader = FileReader(chunk_size=chunk_size)
    for index, content in enumerate(contents):
        path = tmp_path / f"file-{index}"
        path.write_bytes(content)

        assert reader.measure(str(path)) == measure_bytes(content), index


def test_measure_bytes_text() -> None:
    stats = measure_bytes(b"one two\nthree\n\nfour")

    assert stats["binary"] is False
    assert stats["size"] == 19
    assert stats["lines"] == 4
    assert stats["words"] == 4


def test_measure_bytes_sha256() -> None:
    # The SHA-256 test vector of "abc" from FIPS 180-2.
    stats = measure_bytes(b"abc")

    assert stats["sha256"] == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def test_measure_bytes_binary() -> None:
    content = b"ab\x00\ncd"
    stats = measure_bytes(content)

    assert stats["binary"] is True
    assert stats["size"] == 6
    assert stats["lines"] is None
    assert stats["words"] is None
    assert stats["sha256"] == hashlib.sha256(content).hexdigest()


# file_stats: whole runs


def test_file_stats_known_totals(redis_url: str, tmp_path: Path) -> None:
    tree = make_small_tree(tmp_path / "tree")
    completed = run_example(
        "examples.file_stats",
        "--path",
        str(tree),
        "--data-dir",
        str(tmp_path / "data"),
        redis_url=redis_url,
    )
    values = output_values(completed.stdout)

    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert values["files"] == "6 of 6"
    assert values["text files"] == "5"
    assert values["binary files"] == "1"
    assert values["bytes"] == "1259331"
    assert values["lines"] == "5"
    assert values["words"] == "250007"
    assert values["mismatches"] == "0"
    assert values["failures"] == "0"
    assert int(values["workers that ran tasks"]) in (1, 2)
    assert values["preview (run_task)"].startswith(
        f"{tree / 'a.txt'}: size 12, lines 1, words 2, sha256 "
    )
    assert "queued 6 files, the 5 largest at high priority" in completed.stdout


def test_file_stats_stdlib_json(redis_url: str, tmp_path: Path) -> None:
    json_dir = Path(sysconfig.get_paths()["stdlib"]) / "json"
    expected_files = sum(
        1
        for directory, _, names in os.walk(json_dir)
        for name in names
        if not os.path.islink(os.path.join(directory, name))
    )
    completed = run_example(
        "examples.file_stats",
        "--path",
        str(json_dir),
        "--data-dir",
        str(tmp_path / "data"),
        redis_url=redis_url,
    )
    values = output_values(completed.stdout)

    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert values["files"] == f"{expected_files} of {expected_files}"
    assert values["mismatches"] == "0"
    assert values["failures"] == "0"
    assert int(values["lines"]) > 0


def test_file_stats_starts_local_server(tmp_path: Path) -> None:
    tree = make_small_tree(tmp_path / "tree")
    data_dir = tmp_path / "data"
    completed = run_example(
        "examples.file_stats",
        "--path",
        str(tree),
        "--data-dir",
        str(data_dir),
        redis_url=None,
    )
    values = output_values(completed.stdout)
    match = re.fullmatch(r"local server (redis://\S+), data in (.+)", values["redis"])

    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert match is not None
    assert match[2] == str(data_dir)
    assert values["mismatches"] == "0"
    assert any(name.startswith("appendonly") for name in os.listdir(data_dir))
    assert (
        "tasker worker stopped (exit code 0)" in (data_dir / "workers.log").read_text()
    )
    client = redis.Redis.from_url(match[1], socket_connect_timeout=2)
    with pytest.raises(redis.ConnectionError):
        client.ping()
    client.close()


def test_file_stats_reports_mismatches(
    redis_url: str, tmp_path: Path, start_workers: Callable[..., Any]
) -> None:
    # Workers whose task returns wrong stats, on the queue the job uses with
    # --workers 0, as compose.yaml runs it.
    start_workers("apps.wrong_file_stats:config", env={"FILE_STATS_QUEUE": "wrong"})
    tree = make_small_tree(tmp_path / "tree")
    completed = run_example(
        "examples.file_stats",
        "--path",
        str(tree),
        "--workers",
        "0",
        "--queue",
        "wrong",
        "--data-dir",
        str(tmp_path / "data"),
        redis_url=redis_url,
    )
    values = output_values(completed.stdout)

    assert completed.returncode == 1
    assert values["mismatches"] == "6"
    assert values["files"] == "0 of 6"
    assert f"mismatch: {tree / 'a.txt'}: lines, sha256, size, words differ" in (
        completed.stdout
    )
