# One entry point: setup, demo, test, bench, protos, lint.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARTIFACTS ?= artifacts

.PHONY: setup demo test bench evaluate protos lint models clean chaos

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[train,dev]'
	touch $(STAMP)

setup: $(STAMP)

# Trains the models on simulated data when they are missing (or older than the code that makes them).
models: $(STAMP)
	$(VENV)/bin/scoring train --if-missing --out $(ARTIFACTS)

demo: models
	$(VENV)/bin/scoring demo --artifacts $(ARTIFACTS)

test: $(STAMP)
	$(PY) -m pytest -q

# Test-period figures offline and from a live gateway's answers (replays about 500,000 events).
evaluate: models
	$(VENV)/bin/scoring evaluate --live --artifacts $(ARTIFACTS) --json $(ARTIFACTS)/evaluation.json

bench: models
	$(VENV)/bin/scoring bench --artifacts $(ARTIFACTS)

# A chaos soak: every fault (kill -9, SIGSTOP, latency, dropped connections, Redis emptied) three times, with longer
# windows than the chaos tests of `make test`, on a local stack; prints the report table and writes the JSON.
chaos: models
	$(VENV)/bin/scoring chaos --artifacts $(ARTIFACTS) --rounds 3 --rate 300 --fault-window 10 --after 10 \
		--json $(ARTIFACTS)/chaos.json

protos: $(STAMP)
	$(PY) -m scoring.protos_gen

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy services scoring

clean:
	rm -rf $(ARTIFACTS)

# The container target of the Triton model repository (official tritonserver image, onnxruntime backend), for
# docker compose and Kubernetes: artifacts/triton_repository_container (CPU) and ..._gpu (KIND_GPU models).
.PHONY: triton-repo docker-requirements
triton-repo: models
	$(PY) deploy/triton_repository.py --artifacts $(ARTIFACTS)

# Pins the services' image requirements (deploy/docker/requirements.txt) to the versions installed here.
docker-requirements: $(STAMP)
	$(PY) deploy/docker/serving_requirements.py --out deploy/docker/requirements.txt
