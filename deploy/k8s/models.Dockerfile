# syntax=docker/dockerfile:1
# The trained models as an image, for Kubernetes: init containers copy them into each pod's volume, so any node
# can run Triton or the filter without shared storage. Build it after `make triton-repo`, from the repository root
# (deploy/k8s/models.Dockerfile.dockerignore sends only these folders):
#
#   docker build -f deploy/k8s/models.Dockerfile -t scoring-graph-models:0.1.0 .
#
# Retag for every training run that goes out; the tag is what a rollout compares.
FROM busybox:1.36.1
COPY artifacts/models/filter/ /models/filter/
COPY artifacts/models/market/filter/ /models/market/filter/
COPY artifacts/triton_repository_container/ /models/triton/
COPY artifacts/triton_repository_container_gpu/ /models/triton-gpu/
USER 65534:65534
