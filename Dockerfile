# The image of the worker and producer services in compose.yaml.
FROM python:3.11-slim

WORKDIR /app
COPY . .
RUN pip install --no-cache-dir . \
    && useradd --create-home tasker

# `tasker worker` imports examples.file_stats from the working directory.
USER tasker
CMD ["tasker", "--help"]
