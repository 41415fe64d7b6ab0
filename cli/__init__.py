"""The `tasker` command-line application, installed as tasker_redis_cli."""
