# Two commands for a fresh machine: `make demo` and `make test`. Everything they need is here.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# tool:Debian-package pairs the tests use (real DICOM validators and codecs)
DEBIAN_TOOLS := dciodvfy:dicom3tools dcmcjpls:dcmtk dcmcjpeg:dcmtk dsrdump:dcmtk
DEMO := demo-output

.PHONY: demo test venv system-deps lock clean

$(STAMP): pyproject.toml locked-dependencies.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c locked-dependencies.txt -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

system-deps:
	@missing=""; \
	for pair in $(DEBIAN_TOOLS); do \
	  command -v "$${pair%%:*}" >/dev/null || missing="$$missing $${pair##*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

demo: venv
	rm -rf $(DEMO)
	$(BIN)/cad phantom --out $(DEMO)/phantom --exams 1 --seed 2026
	$(BIN)/cad inspect $(DEMO)/phantom --truth $(DEMO)/phantom/truth.json --out $(DEMO)/overlays
	@echo
	@echo "Demo outputs:"
	@echo "  synthetic exam (MG DICOM): $(DEMO)/phantom/exam00000/"
	@echo "  ground truth:              $(DEMO)/phantom/truth.json"
	@echo "  geometry overlays (PNG):   $(DEMO)/overlays/"

test: venv system-deps
	$(BIN)/python -m pytest --junitxml=reports/junit.xml

# Re-pin every third-party package after a deliberate dependency change (a SOUP change).
lock: venv
	{ echo "# Exact versions of every third-party package (SOUP), one source of truth."; \
	  echo "# Installation is constrained by this file (pip -c); the SOUP list is generated from it."; \
	  echo "# Regenerate with: make lock"; \
	  $(BIN)/pip freeze --exclude-editable | grep -v '^mammo-cad' | sort -f; } > locked-dependencies.txt

clean:
	rm -rf $(VENV) $(DEMO) reports .pytest_cache .hypothesis
