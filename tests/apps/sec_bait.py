"""A module whose import creates the file named by $SEC_BAIT_MARKER.

No worker config imports it. A test queues a message naming `apps.sec_bait:run`
and checks that the file never appears, which shows that a worker does not
import modules named in messages.
"""

from __future__ import annotations

import os
from pathlib import Path

MARKER_ENV = "SEC_BAIT_MARKER"

if os.environ.get(MARKER_ENV):
    Path(os.environ[MARKER_ENV]).touch()


def run(*args: object) -> None:
    """Create the marker file if anything calls this."""
    if os.environ.get(MARKER_ENV):
        Path(os.environ[MARKER_ENV]).touch()
