# Two commands set everything up on a fresh machine:  make demo   and   make test
# Override the torch pin elsewhere, e.g.  make test TORCH=torch==2.6.0
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(subst =,_,$(subst /,_,$(TORCH)))
PYTEST_ARGS ?=

.PHONY: install test demo clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# torch goes in first and pinned: a bare `pip install torch` pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[test]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

demo: install
	$(BIN)/sgpo demo --out runs/demo --overwrite

clean:
	rm -rf $(VENV) runs build dist .pytest_cache
