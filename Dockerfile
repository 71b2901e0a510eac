# leoflow-staging: one image for the webhook, the GC CronJob and the chart's hook Jobs.
# The same image hack/build-images.sh builds without Docker (docs/images.md): Python 3.11, the locked
# runtime dependencies of requirements/image.lock, then the project with --no-deps; user 10001;
# entrypoint `leoflow-staging`, default command `--help`.
FROM python:3.11-slim AS build
WORKDIR /src
# Dependencies first (their own layer, rebuilt only when the lock changes), exactly as pinned.
COPY requirements/image.lock requirements/image.lock
RUN pip install --no-cache-dir --prefix=/install --no-deps --only-binary=:all: -r requirements/image.lock
COPY pyproject.toml README.md ./
COPY leoflow_staging ./leoflow_staging
COPY webhook ./webhook
COPY gc_job ./gc_job
COPY shared ./shared
COPY certs ./certs
RUN pip install --no-cache-dir --prefix=/install --no-deps .

FROM python:3.11-slim
RUN groupadd --system --gid 10001 leoflow \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin leoflow
COPY --from=build /install /usr/local
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 TMPDIR=/tmp
USER 10001:10001
EXPOSE 8443
ENTRYPOINT ["leoflow-staging"]
CMD ["--help"]
