# Two commands set everything up on a fresh machine:  make demo   and   make test
# Override the torch pin elsewhere, e.g.  make test TORCH=torch==2.6.0 LOCK=
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
# Exact versions of everything else (`make lock` writes it); empty: resolve sgpo[test] unpinned
LOCK   ?= requirements/lock.txt
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(subst =,_,$(subst /,_,$(TORCH)))$(if $(LOCK),-locked)
PYTEST_ARGS ?=
# `make lock` resolves sgpo[test] under these, when the file exists
LOCK_CONSTRAINTS := $(wildcard requirements/constraints.txt)
LOCK_VENV := .lock-venv

.PHONY: install lock test demo clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# torch goes in first and pinned: a bare `pip install torch` pulls a multi-GB CUDA build.
# Then the lock, every other package at its exact version, and sgpo itself, without resolution (the
# lock is the whole set; resolving it again took 2-3x as long), and `pip check` that it all fits.
$(STAMP): pyproject.toml $(LOCK) | $(BIN)/python
	$(BIN)/python -m pip install -q "$(TORCH)"
ifneq ($(LOCK),)
	$(BIN)/python -m pip install -q --no-deps -r $(LOCK)
	$(BIN)/python -m pip install -q --no-deps -e .
	$(BIN)/python -m pip check
else
	$(BIN)/python -m pip install -q -e ".[test]"
endif
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

# Regenerate requirements/lock.txt: sgpo[test] resolved unpinned (newest releases) in a fresh venv
# beside $(TORCH), then frozen, minus torch (installed first, from TORCH) and sgpo itself.
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install -q --upgrade pip
	$(LOCK_VENV)/bin/python -m pip install -q "$(TORCH)"
	$(LOCK_VENV)/bin/python -m pip install -q $(if $(LOCK_CONSTRAINTS),-c $(LOCK_CONSTRAINTS)) -e ".[test]"
	mkdir -p requirements
	{ echo "# Exact versions of sgpo[test]'s dependencies, which \`make install\` installs after $(TORCH)."; \
	  echo "# Written by \`make lock\` (fresh venv, $$($(LOCK_VENV)/bin/python -c 'import platform; print("Python", platform.python_version(), platform.machine())'), \`pip freeze\` minus torch and sgpo): do not edit."; \
	  $(LOCK_VENV)/bin/python -m pip freeze --exclude-editable | grep -v -i '^torch==' | LC_ALL=C sort -f; } > requirements/lock.txt.tmp
	mv requirements/lock.txt.tmp requirements/lock.txt
	rm -rf $(LOCK_VENV)

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

demo: install
	$(BIN)/sgpo demo --out runs/demo --overwrite

clean:
	rm -rf $(VENV) $(LOCK_VENV) runs build dist .pytest_cache
