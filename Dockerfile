# leoflow-staging: one image for the webhook, the GC CronJob and the chart's hook Jobs.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY leoflow_staging ./leoflow_staging
COPY webhook ./webhook
COPY gc_job ./gc_job
COPY shared ./shared
COPY certs ./certs
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
RUN groupadd --system --gid 10001 leoflow \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin leoflow
COPY --from=build /install /usr/local
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 TMPDIR=/tmp
USER 10001:10001
EXPOSE 8443
ENTRYPOINT ["leoflow-staging"]
CMD ["--help"]
