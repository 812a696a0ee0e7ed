# syntax=docker/dockerfile:1
# The image of the scoring graph's three Python services: gateway, feature_service, filter_model.
# One image; the command picks the service (`python -m services.<name>`):
#
#   docker build -t scoring-graph:0.1.0 .
#   docker run --rm scoring-graph:0.1.0 services.gateway
#
# Redis and Triton run from their official images (deploy/compose, deploy/k8s). The filter's model files are
# not in this image: compose mounts them, Kubernetes copies them from the models image (deploy/k8s/models.Dockerfile).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first, in a layer of their own: pinned (make docker-requirements), and they change far less often
# than the code.
COPY deploy/docker/requirements.txt /tmp/requirements.txt
RUN pip install --no-cache-dir -r /tmp/requirements.txt
COPY pyproject.toml README.md ./
COPY scoring ./scoring
COPY services ./services
# --no-deps: every dependency is already pinned above; nothing else may slip in.
RUN pip install --no-cache-dir --no-deps .

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="scoring-graph" \
      org.opencontainers.image.description="gateway, feature_service and filter_model of the scoring graph" \
      org.opencontainers.image.licenses="Apache-2.0"
ARG UID=10001
RUN groupadd --system --gid "${UID}" scoring \
    && useradd --system --uid "${UID}" --gid scoring --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin scoring
COPY --from=build /opt/venv /opt/venv
COPY deploy/docker/grpc_health_probe.py /app/grpc_health_probe.py
# The root file system can be read-only: nothing writes bytecode at run time, logs go to stdout.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
USER ${UID}:${UID}
# gRPC: gateway 50051, feature_service 50052, filter_model 50053; Prometheus /metrics: 9464, 9465, 9466.
EXPOSE 50051 50052 50053 9464 9465 9466
ENTRYPOINT ["python", "-m"]
CMD ["services.gateway"]
