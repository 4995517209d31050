# Curator DB server. Build: `docker build -t curator-db .` (or podman); run:
#   docker run -p 127.0.0.1:50051:50051 -v curator-data:/data curator-db
# The admin key is generated into the volume on first start: `docker exec ID cat /data/admin.key`
# (or pass CURATOR_ADMIN_KEY). `compose.yaml` runs it with Prometheus.
ARG BASE=python:3.11-slim

FROM ${BASE} AS build
WORKDIR /src
COPY pyproject.toml setup.py README.md LICENSE ./
COPY proto ./proto
COPY curator ./curator
COPY curator_api ./curator_api
COPY server ./server
COPY client ./client
# Wheels only: no compiler in the image.
RUN python3 -m venv /opt/curator \
    && /opt/curator/bin/pip install --no-cache-dir --only-binary=:all: . \
    && rm -rf /src

FROM ${BASE}
COPY --from=build /opt/curator /opt/curator
RUN useradd --system --uid 10001 --create-home --home-dir /home/curator curator \
    && mkdir -p /data && chown curator /data
USER curator
ENV PATH=/opt/curator/bin:$PATH \
    CURATOR_DATA_DIR=/data \
    CURATOR_ADDRESS=0.0.0.0:50051 \
    NUMBA_CACHE_DIR=/home/curator/numba-cache
# Compile the search kernels into numba's cache now, so that the container serves in seconds
# (on a host with another CPU model numba recompiles them once, while NOT_SERVING).
RUN python -c "from curator.index.warmup import warm_kernels; warm_kernels()"
VOLUME /data
EXPOSE 50051 9464
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-m", "server.health_probe"]
CMD ["curator-server", "--log-format", "json"]
