# Beam SDK worker image for Dataflow (and Flink/Spark portable runners with DOCKER
# environments): Beam's own SDK image, plus ffmpeg, fpcalc, klio-assets and a warm numba cache.
#
#   docker build -f docker/beam-worker.Dockerfile -t beam-worker:0.1.0 .
#
# Used with DataflowConfig.sdk_container_image (KLIO_ASSETS_DATAFLOW). The Python and Beam
# versions must equal the launcher's (docker/Dockerfile, setup.cfg; test_deploy.py checks).
ARG PYTHON_VERSION=3.11
ARG BEAM_VERSION=2.77.0

FROM python:3.11-slim-bookworm AS wheels
WORKDIR /src
COPY . .
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM apache/beam_python3.11_sdk:2.77.0
ARG BEAM_VERSION
RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg libchromaprint-tools \
 && rm -rf /var/lib/apt/lists/*
COPY --from=wheels /wheels /wheels
# The constraint keeps the image's Beam: a dependency resolution must never replace it.
RUN echo "apache-beam==${BEAM_VERSION}" > /tmp/constraints.txt \
 && pip install --no-cache-dir -c /tmp/constraints.txt "$(ls /wheels/klio_assets-*.whl)[gcs,models]" \
 && pip install --no-cache-dir --no-deps silero-vad==6.2.3 basic-pitch==0.4.0 \
 && rm -rf /wheels /tmp/constraints.txt

# librosa compiles with numba at first use (~20-30 CPU-s per process cold, 2-3 s warm): compile
# once at build time into a cache every worker process can read and extend.
ENV NUMBA_CACHE_DIR=/opt/numba-cache \
    OPENBLAS_NUM_THREADS=1
COPY docker/warm_numba.py /opt/klio/warm_numba.py
RUN mkdir -p "$NUMBA_CACHE_DIR" \
 && python /opt/klio/warm_numba.py \
 && chmod -R a+rwX "$NUMBA_CACHE_DIR"
# ENTRYPOINT stays Beam's /opt/apache/beam/boot.
