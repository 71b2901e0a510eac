# leoflow-staging: one image for the webhook, the GC CronJob and the chart's hook Jobs. The one recipe:
# `make image` builds exactly this file (buildah, no Docker, no registry) into dist/, and the node tests, the
# demo and the chart tests run that archive (docs/images.md). Python 3.11, the locked runtime dependencies
# of requirements/image.lock, then the project's wheel with --no-deps; user 10001; entrypoint
# `leoflow-staging`, default command `--help`.
#
# BASE: any Python 3.11 image laid out like python:3.11-slim (interpreter and pip on /usr/local/bin, site
# packages in /usr/local/lib/python3.11/site-packages, groupadd/useradd). Where no registry can be reached,
# `make image` passes a base made from Debian's packages (hack/images/python-base/; docs/images.md says
# exactly what differs).
ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS build
# Reproducible builds: with SOURCE_DATE_EPOCH set, pip writes hash-checked .pyc files (valid whatever the
# files' mtimes) and no time stamps.
ARG SOURCE_DATE_EPOCH
# Only for building behind a TLS-intercepting proxy: the CA bundle pip should trust (make image mounts the
# host's bundle there for this stage; nothing of it reaches the image).
ARG PIP_CERT
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore PIP_NO_CACHE_DIR=1
WORKDIR /src
# Dependencies first (their own layer, rebuilt only when the lock changes), exactly as pinned.
COPY requirements/image.lock requirements/image.lock
RUN pip install --prefix=/deps --no-deps --only-binary=:all: -r requirements/image.lock
# The project: only what its wheel is made of (.dockerignore keeps tests, bench, hack, devenv out).
COPY pyproject.toml README.md ./
COPY leoflow_staging ./leoflow_staging
COPY webhook ./webhook
COPY gc_job ./gc_job
COPY shared ./shared
COPY certs ./certs
RUN pip install --prefix=/app --no-deps . \
 && python3 -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version'

FROM ${BASE}
ARG SOURCE_DATE_EPOCH
RUN groupadd --system --gid 10001 leoflow \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin leoflow
# Two layers: the dependencies (unchanged until the lock changes) and the project (small, per source change).
COPY --from=build /deps /usr/local
COPY --from=build /app /usr/local
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 TMPDIR=/tmp
USER 10001:10001
# The image must start, as its own user, with its dependencies importable.
RUN leoflow-staging --help >/dev/null \
 && python3 -c 'import psycopg2, cryptography, flask, gunicorn, kubernetes, sqlalchemy, alembic, prometheus_client, orjson, webhook, gc_job, shared, certs'
EXPOSE 8443
ENTRYPOINT ["leoflow-staging"]
CMD ["--help"]
