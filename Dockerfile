# sinkfleet: one image for every sinkfleet command (worker, topics apply, db migrate, produce).
#
#   docker build -t sinkfleet:local .
#   docker run --rm sinkfleet:local --help
#
# Configuration comes from SINKFLEET_* environment variables (see sinkfleet/config.py);
# the catalogue (schemas/ topics/ sinks/ workers/) is baked in under SINKFLEET_HOME=/app.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# Install the package and its dependencies from a throw-away copy of the sources, so /app
# holds only the catalogue. README.md* is a glob: the build works whether or not it exists.
COPY pyproject.toml README.md* /tmp/src/
COPY sinkfleet/ /tmp/src/sinkfleet/
RUN pip install /tmp/src \
    && rm -rf /tmp/src

# An unprivileged user; the catalogue stays root-owned and read-only for it.
RUN groupadd --system --gid 10001 sinkfleet \
    && useradd --system --uid 10001 --gid sinkfleet --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin sinkfleet

WORKDIR /app
COPY schemas/ ./schemas/
COPY topics/ ./topics/
COPY sinks/ ./sinks/
COPY workers/ ./workers/

ENV SINKFLEET_HOME=/app

# Where processes that write (roll-ups' working files, retention's archive) keep them: owned
# by uid 10001, so a volume mounted here starts with that owner.
RUN mkdir -p /var/lib/sinkfleet/archive && chown -R 10001:10001 /var/lib/sinkfleet

USER 10001:10001

# `docker stop` sends SIGTERM: the worker drains its batch, commits and exits 0.
ENTRYPOINT ["sinkfleet"]
CMD ["worker", "--spec", "events"]
