# stedloop daemon on the simulator, in a container.
#   docker build -t stedloop .
#   stedloop keys --dir ./keys          # once, on the host: server + client CURVE keys
#   docker run -d --name stedloop -p 5755:5755 -p 5756:5756 -v "$PWD/keys:/keys:ro" stedloop
#   stedloop status --connect tcp://localhost:5755 --keys ./keys
# The daemon binds 0.0.0.0 inside the container so published ports reach it, and therefore
# requires CURVE: it refuses to start without the keys folder (see docs/service.md).

# ---- build stage: a virtual environment with the CPU build of torch and stedloop ----------
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# The CPU wheel from PyTorch's own index: PyPI's default torch pulls a multi-GB CUDA build.
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
WORKDIR /src
COPY pyproject.toml README.md ./
COPY stedloop ./stedloop
COPY drivers ./drivers
COPY plugins ./plugins
COPY configs ./configs
COPY models ./models
RUN pip install --no-cache-dir .

# ---- runtime stage: slim, non-root, only the environment -----------------------------------
FROM python:3.11-slim AS runtime
LABEL org.opencontainers.image.title="stedloop" \
      org.opencontainers.image.description="Self-tuning STED microscope daemon (simulator backend)" \
      org.opencontainers.image.licenses="MIT"
RUN groupadd --system --gid 10001 stedloop \
    && useradd --system --uid 10001 --gid stedloop --home-dir /data --create-home stedloop \
    && mkdir -p /keys \
    && chown stedloop:stedloop /keys
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    STEDLOOP_HOME=/data \
    STEDLOOP_LOG_FORMAT=json \
    STEDLOOP_DRIVER__NAME=simulator \
    STEDLOOP_DAEMON__REQUEST_ADDRESS=tcp://0.0.0.0:5755 \
    STEDLOOP_DAEMON__EVENT_ADDRESS=tcp://0.0.0.0:5756 \
    STEDLOOP_DAEMON__KEYS_DIR=/keys
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 5755 5756
# Ping through the protocol (the container's own client key pair from /keys is used).
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["stedloop", "status", "--json", "--timeout", "5", "--connect", "tcp://127.0.0.1:5755"]
# exec form: the daemon runs as PID 1 and gets SIGTERM from `docker stop` (clean stop).
STOPSIGNAL SIGTERM
CMD ["stedloop", "serve"]
