# syntax=docker/dockerfile:1
# mailbox-exporter container image.
#
#   docker build -t mailbox-exporter .
#   docker run -d -p 10025:10025 \
#     -v "$PWD/mailbox-exporter.yml:/etc/mailbox-exporter/config.yml:ro" \
#     -v "$PWD/monitor.password:/run/secrets/monitor.password:ro" \
#     mailbox-exporter
#
# The configuration is read from /etc/mailbox-exporter/config.yml; mount secrets as files
# (under /run/secrets/, as Docker and Compose secrets do) and name them with password_file,
# client_secret_file or refresh_token_file. See docs/deployment.md.
#
# tests/test_deploy_image.py runs this file's pip steps outside a container;
# tests/test_deploy_container.py builds the image (on a base made from Debian's packages) and
# runs it against a real mail server.

# The base of both stages. Another one must have what python:3.12-slim has and these steps use:
# Python 3.11 or newer, pip installing into the system Python (no EXTERNALLY-MANAGED marker),
# a `python` command (the health check), groupadd and useradd.
ARG BASE_IMAGE=python:3.12-slim

# ---- build: a wheel of the exporter and wheels of everything it depends on
FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY exporter ./exporter
# The project's own wheel first, then the wheels of its dependencies (pip builds any that
# have no wheel for this platform), all in /wheels. The second step names the wheel file, not
# the project, so that no package of the same name on an index can stand in for it.
RUN --mount=type=cache,target=/root/.cache/pip \
    pip wheel --no-deps --wheel-dir /wheels . \
 && pip wheel --wheel-dir /wheels /wheels/mailbox_exporter-*.whl

# ---- runtime: the wheels installed, nothing else of the build
FROM ${BASE_IMAGE}

ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="mailbox-exporter" \
      org.opencontainers.image.description="Prometheus exporter that checks mailboxes end to end: login, send, deliver, read." \
      org.opencontainers.image.licenses="GPL-3.0-or-later" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HEALTHCHECK_URL=http://127.0.0.1:10025/-/healthy

RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels mailbox-exporter

# A fixed non-root uid, so that Kubernetes' runAsNonRoot can check it and files can be
# granted to it. The root filesystem may be read-only: the only file the exporter writes is
# the probe key, in its state directory (--storage.path, default /var/lib/mailbox-exporter),
# which is the user's, so that a volume mounted there starts writable.
RUN groupadd --system --gid 10001 mailbox-exporter \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin mailbox-exporter \
 && mkdir -p /etc/mailbox-exporter \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/mailbox-exporter
USER 10001:10001
VOLUME ["/var/lib/mailbox-exporter"]

EXPOSE 10025
# /-/healthy answers without credentials even when --web.config.file asks for them. With TLS
# set HEALTHCHECK_URL=https://127.0.0.1:10025/-/healthy (the certificate is not checked: it is
# the container talking to itself); with another --web.listen-address port, change it too.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, ssl, urllib.request; urllib.request.urlopen(os.environ['HEALTHCHECK_URL'], timeout=3, context=ssl._create_unverified_context())"]

ENTRYPOINT ["mailbox-exporter"]
CMD ["--config.file=/etc/mailbox-exporter/config.yml"]
