# The two set-up commands: `make demo` (end to end on real data) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= data/fashion-mnist-lt

.PHONY: demo test install lint benchmarks clean services services-postgres services-down fashion-mnist

$(BIN)/longtail: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/longtail

FASHION_MNIST := /usr/share/datasets/fashion-mnist

## fashion-mnist: Debian's dataset-fashion-mnist when it is missing (as root), else say what happens instead
fashion-mnist:
	@if [ -n "$$LONGTAIL_DATA" ] || [ -f $(FASHION_MNIST)/train-images-idx3-ubyte.gz ]; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  apt-get install -y -qq dataset-fashion-mnist >/dev/null || \
	  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null); \
	else echo "Fashion-MNIST is not in $(FASHION_MNIST): install Debian's dataset-fashion-mnist, set LONGTAIL_DATA," \
	  "or let longtail download it (checksum-verified)"; fi

## demo: build Fashion-MNIST-LT, run experiments/demo.yaml through kfp.local, score the submission
demo: install fashion-mnist
	$(BIN)/longtail data fashion-mnist-lt $(DATA)
	$(BIN)/longtail run experiments/demo.yaml --data $(DATA)/train --test $(DATA)/test --labels $(DATA)/test_labels.csv

## test: unit and integration tests
test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check src components pipelines tests benchmarks

benchmarks: install
	$(BIN)/python benchmarks/ingest.py
	$(BIN)/python benchmarks/loader.py
	$(BIN)/python benchmarks/train.py
	$(BIN)/python benchmarks/train_profile.py
	$(BIN)/python benchmarks/pipeline.py

clean:
	rm -rf .longtail build *.egg-info

# --- Containers and kind. Images build with podman or docker, whichever is installed; kind needs Docker.
# Image names and tags come from components/images.py (`python -m longtail.components.images`), the same
# table the compiled pipeline uses; override with `make images IMAGE_REGISTRY=ghcr.io/me IMAGE_TAG=dev`.
IMAGE_REGISTRY ?= $(LONGTAIL_IMAGE_REGISTRY)
IMAGE_TAG ?= $(LONGTAIL_IMAGE_TAG)
KIND_CLUSTER ?= longtail
CHECKOV_VERSION ?= 3.3.30
# "name=ref" pairs, evaluated only by the targets that use them: the shared base first, then the step images.
ALL_IMAGE_REFS = $(shell LONGTAIL_IMAGE_REGISTRY='$(IMAGE_REGISTRY)' LONGTAIL_IMAGE_TAG='$(IMAGE_TAG)' $(BIN)/python -m longtail.components.images | tr ' ' '=')
BASE_REF = $(firstword $(ALL_IMAGE_REFS))
IMAGE_REFS = $(wordlist 2,$(words $(ALL_IMAGE_REFS)),$(ALL_IMAGE_REFS))
image_name = $(word 1,$(subst =, ,$(1)))
image_ref = $(word 2,$(subst =, ,$(1)))

# The container engine: podman (with this repo's containers.conf: runc, ulimits root may set) or docker.
ENGINE ?= $(notdir $(shell command -v podman || command -v docker))
ifeq ($(ENGINE),podman)
export CONTAINERS_CONF ?= $(CURDIR)/containers.conf
endif
# BASE_IMAGE: what images/base/Dockerfile starts FROM. With podman (no registry here) the default is a
# Debian bookworm base made from Debian packages by scripts/debian-base.sh; with docker, or with
# BASE_IMAGE= set empty, the Dockerfile's pinned upstream python image.
DEBIAN_BASE := localhost/longtail-base-debian:bookworm
BASE_IMAGE ?= $(if $(filter podman,$(ENGINE)),$(DEBIAN_BASE),)
# CUDA_PACKAGES: the train image's CUDA wheels; empty (the default) builds a CPU-only train image.
# For GPU nodes: make images CUDA_PACKAGES='tensorflow[and-cuda]==2.21.0'
CUDA_PACKAGES ?=
# The shared base every step image starts FROM, tagged like the step images; each step Dockerfile
# takes it as the LONGTAIL_BASE build argument (it has no default there).
LONGTAIL_BASE = $(call image_ref,$(BASE_REF))
# The host's CA bundle reaches pip as a build secret (mounted for one RUN, never in a layer), for
# networks whose HTTPS goes through an intercepting proxy; --network host for the same networks.
CA_BUNDLE ?= $(wildcard /etc/ssl/certs/ca-certificates.crt)
BUILD_FLAGS = --network host $(if $(filter podman,$(ENGINE)),--format docker) $(if $(CA_BUNDLE),--secret id=ca-bundle$(comma)src=$(CA_BUNDLE))
comma := ,

# CUDA_PACKAGES goes to the step Dockerfile that declares it (the train image's), found by its ARG line.
takes_cuda = $(shell grep -qs '^ARG CUDA_PACKAGES' images/$(1)/Dockerfile && echo yes)

define build_image
	$(ENGINE) build $(BUILD_FLAGS) --file images/$(call image_name,$(1))/Dockerfile --build-arg LONGTAIL_BASE=$(LONGTAIL_BASE) $(if $(call takes_cuda,$(call image_name,$(1))),--build-arg CUDA_PACKAGES='$(CUDA_PACKAGES)') --tag $(call image_ref,$(1)) .

endef

define load_image
	kind load docker-image --name $(KIND_CLUSTER) $(call image_ref,$(1))

endef

.PHONY: images kind-load pin-digests checkov-venv test-containers podman-service

## images: build the shared base, then every step image FROM it, tagged as the pipeline references them
images: install
	$(if $(strip $(IMAGE_REFS)),,$(error no image names from `python -m longtail.components.images`; run `make install` first))
	$(if $(ENGINE),,$(error neither podman nor docker is installed; apt-get install podman runc))
	$(if $(filter $(DEBIAN_BASE),$(BASE_IMAGE)),CONTAINER_ENGINE=$(ENGINE) scripts/debian-base.sh $(DEBIAN_BASE))
	$(ENGINE) build $(BUILD_FLAGS) --file images/$(call image_name,$(BASE_REF))/Dockerfile $(if $(BASE_IMAGE),--build-arg BASE_IMAGE=$(BASE_IMAGE)) --tag $(LONGTAIL_BASE) .
	$(foreach pair,$(IMAGE_REFS),$(call build_image,$(pair)))

## kind-load: load the built step images into the kind cluster $(KIND_CLUSTER)
kind-load: install
	$(if $(strip $(IMAGE_REFS)),,$(error no image names from `python -m longtail.components.images`; run `make install` first))
	$(foreach pair,$(IMAGE_REFS),$(call load_image,$(pair)))

## pin-digests: print the registry digest of every pinned base/service image (needs Docker + buildx)
pin-digests:
	bash scripts/pin-digests.sh

## checkov-venv: checkov in its own venv (it pins an old `packaging` that breaks pytest in .venv)
checkov-venv: .venv-checkov/bin/checkov

.venv-checkov/bin/checkov:
	$(PYTHON) -m venv .venv-checkov
	.venv-checkov/bin/pip install --quiet --upgrade pip
	.venv-checkov/bin/pip install --quiet 'checkov==$(CHECKOV_VERSION)'
	touch $@

## test-containers: build the images, then run the pipeline with each step in its own container
## (raw images on SeaweedFS, MLflow server proxying to it) and check the images hold no credential
test-containers: images
	mkdir -p $(CURDIR)/.longtail  # pytest makes --basetemp itself, but not its parent (a fresh clone has none)
	$(BIN)/python -m pytest -m containers --basetemp=$(CURDIR)/.longtail/pytest-containers \
	  tests/integration/test_containers.py tests/integration/test_containers_images.py

## podman-service: podman's Docker API for `longtail run --runner container` (scripts/podman-service.sh)
podman-service:
	scripts/podman-service.sh up

## services: SeaweedFS (S3) + an MLflow server with artifacts proxied to it (scripts/services.sh);
## its store is SQLite, or with BACKEND=postgres a PostgreSQL cluster of its own (Debian's postgresql)
services: install
	scripts/services.sh up

## services-postgres: `make services BACKEND=postgres`
services-postgres: install
	BACKEND=postgres scripts/services.sh up

services-down:
	scripts/services.sh down
