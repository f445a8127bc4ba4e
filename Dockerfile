# One image for every Berth process: the entry point is the `berth` command, and
# the service picks its subcommand (server, worker, proxy-worker, beat, flower).
#
#   docker build -t berth:0.1.0 .
#
# Stage 1 installs Berth and its dependencies into a virtualenv. Every
# dependency ships manylinux wheels, so no compiler is needed even here; the
# stage exists so that pip, setuptools, the build directory and the sources
# stay out of the image that runs.
FROM python:3.11-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/berth
WORKDIR /src
# Only what the package needs (see .dockerignore): never tests, .env or a kubeconfig.
COPY pyproject.toml README.md constraints.txt ./
COPY shared ./shared
COPY api ./api
COPY workers ./workers
COPY cli ./cli
RUN /opt/berth/bin/pip install --no-compile -c constraints.txt . \
 && /opt/berth/bin/pip uninstall --yes pip setuptools

# Stage 2: the interpreter, the virtualenv and nothing else.
FROM python:3.11-slim-bookworm

# A fixed numeric id, so Kubernetes' runAsNonRoot can verify it without a passwd lookup.
ARG BERTH_UID=10001
RUN groupadd --system --gid "${BERTH_UID}" berth \
 && useradd --system --uid "${BERTH_UID}" --gid berth --home-dir /home/berth --create-home \
      --shell /usr/sbin/nologin berth \
 && mkdir -p /var/lib/berth /home/berth/.kube \
 && chown berth:berth /var/lib/berth /home/berth/.kube

COPY --from=build /opt/berth /opt/berth

# BERTH_HOME holds only beat's schedule in a container; configs are mounted
# read-only (BERTH_SERVER_CONFIG, and ~/.kube/config for `filename: ~/.kube/config`).
ENV PATH=/opt/berth/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/berth \
    BERTH_HOME=/var/lib/berth \
    BERTH_SERVER_CONFIG=/etc/berth/config.yml

USER ${BERTH_UID}:${BERTH_UID}
WORKDIR /home/berth
EXPOSE 3000 5555
ENTRYPOINT ["berth"]
CMD ["--help"]
