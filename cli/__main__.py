"""Run the `tasker` command as `python -m tasker_redis_cli`."""

from .main import main

main()
