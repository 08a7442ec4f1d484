# The lockwatch demo in a container: the shop, its load and the dashboard, as
# scripts/demo.sh runs them; the dashboard stays up on port 8000 afterwards.
#
#   docker build -t lockwatch-demo .
#   docker run --rm -it -p 8000:8000 -e LOCKWATCH_TOKEN=pick-a-token lockwatch-demo
#
# Without LOCKWATCH_TOKEN a token is made up and printed with the dashboard's URL.
# DEMO_SECONDS, DEMO_CLIENTS and DEMO_WORKERS pass through to scripts/demo.sh.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

# The same venv and install as scripts/demo.sh, done at build time so the container
# needs no network when it runs (scripts/demo.sh finds the venv and skips its install).
COPY pyproject.toml ./
COPY lockwatch ./lockwatch
RUN python3.11 -m venv .venv/demo \
    && .venv/demo/bin/python -m pip install --no-cache-dir -e ".[dashboard,redis]" gunicorn

COPY demo ./demo
COPY scripts ./scripts

EXPOSE 8000
CMD ["bash", "scripts/demo.sh", "--keep", "--host", "0.0.0.0"]
