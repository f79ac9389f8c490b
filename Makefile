# Two commands for a fresh machine: `make demo` and `make test`. Everything they need is here.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# tool:Debian-package pairs the tests use (real DICOM validators and codecs; headless Chromium and its
# driver for the dashboard's browser tests; pdftoppm to look at PDF reports)
DEBIAN_TOOLS := dciodvfy:dicom3tools dcmcjpls:dcmtk dcmcjpeg:dcmtk dsrdump:dcmtk dot:graphviz \
  chromium:chromium chromedriver:chromium-driver pdftoppm:poppler-utils
# file:Debian-package pairs (the pixelmed SR validator is a jar; its package brings Java; Orthanc
# and its DICOMweb plugin are the real PACS of the service tests, started by the tests themselves)
DEBIAN_FILES := /usr/share/java/pixelmed.jar:libpixelmed-java /usr/sbin/Orthanc:orthanc \
  /usr/share/orthanc/plugins/libOrthancDicomWeb.so:orthanc-dicomweb
DEMO := demo-output
PHANTOMS := build/phantoms
MODEL := models/phantom-retinanet-r18
RUN := runs/phantom-retinanet-r18

.PHONY: demo test test-fast venv system-deps lock clean train-phantom train-correspondence evaluate-phantom bench loadtest docs trace \
  sbom fuzz

# the three distributions of this repository (pyproject.toml): the device (with Ray for batch), its
# torch side and the development and QA tooling, all editable
DISTRIBUTIONS := distributions/mammo-cad-torch/pyproject.toml distributions/mammo-cad-dev/pyproject.toml
$(STAMP): pyproject.toml $(DISTRIBUTIONS) locked-dependencies.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c locked-dependencies.txt -e '.[batch]' \
	  -e distributions/mammo-cad-torch -e 'distributions/mammo-cad-dev[docs]'
	touch $(STAMP)

venv: $(STAMP)

system-deps:
	@missing=""; \
	for pair in $(DEBIAN_TOOLS); do \
	  command -v "$${pair%%:*}" >/dev/null || missing="$$missing $${pair##*:}"; \
	done; \
	for pair in $(DEBIAN_FILES); do \
	  test -e "$${pair%%:*}" || missing="$$missing $${pair##*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

demo: venv
	rm -rf $(DEMO)
	$(BIN)/cad phantom --out $(DEMO)/phantom --exams 1 --seed 2026
	$(BIN)/cad detect $(DEMO)/phantom --out $(DEMO)/cad
	@echo
	@echo "Demo outputs:"
	@echo "  synthetic exam (MG DICOM): $(DEMO)/phantom/exam00000/"
	@echo "  ground truth:              $(DEMO)/phantom/truth.json"
	@echo "  CAD findings:              $(DEMO)/cad/<StudyInstanceUID>/findings.json"
	@echo "  CAD overlays (PNG):        $(DEMO)/cad/<StudyInstanceUID>/overlays/"
	@echo "  Mammography CAD SR:        $(DEMO)/cad/<StudyInstanceUID>/cad-sr.dcm  (dsrdump it)"
	@echo "  presentation state (GSPS): $(DEMO)/cad/<StudyInstanceUID>/cad-pr.dcm"

# Every test, on every core (pytest-xdist; a file's tests share one worker, so module fixtures are
# built once), then the traceability matrices and their gap check from this run's results.
TEST_WORKERS ?= auto
test: venv system-deps
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --junitxml=reports/junit.xml; status=$$?; \
	$(BIN)/cad trace --junit reports/junit.xml --out reports/trace || status=1; exit $$status

# The edit loop: unit and integration tests not marked slow, on every core (no trace).
test-fast: venv
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile -m "not slow" tests/unit tests/integration

trace: venv
	$(BIN)/cad trace --junit reports/junit.xml --out reports/trace

# Coverage-guided fuzzing (not part of `make test`; its bounded version is): atheris on every
# parser a user feeds, schemathesis on the HTTP API (in its own venv: its jsonschema-rs pin
# conflicts with sphinx-needs). Figures and saved inputs in reports/fuzz/.
FUZZ_RUNS ?= 1000000
FUZZ_RUNS_PARSERS ?= 100000
FUZZ_RUNS_WORKBOOK ?= 10000
fuzz: venv system-deps
	test -x .venv-fuzz/bin/schemathesis || { $(PYTHON) -m venv .venv-fuzz && .venv-fuzz/bin/pip install --quiet 'schemathesis>=4,<5'; }
	$(BIN)/python -m cad_tools.fuzz ingest --out reports/fuzz --runs $(FUZZ_RUNS)
	for target in reader-study outcomes findings; do \
	  $(BIN)/python -m cad_tools.fuzz $$target --out reports/fuzz --runs $(FUZZ_RUNS_PARSERS) || exit 1; done
	$(BIN)/python -m cad_tools.fuzz jafroc --out reports/fuzz --runs $(FUZZ_RUNS_WORKBOOK)
	$(BIN)/python -m cad_tools.fuzz.api --out reports/fuzz --examples 200 --schemathesis .venv-fuzz/bin/schemathesis

# The site install's SBOM (CycloneDX) and vulnerability report (pip-audit) alone; `make docs`
# includes them. A report that says NOT CHECKED (sources unreachable) leaves a release step open.
sbom: venv
	$(BIN)/python -m traceability.sbom --out reports/sbom

# The submission document set (Sphinx, warnings are errors) from the sources of truth, the last
# test run and a standalone evaluation of the released model (run first when missing).
docs: venv system-deps
	test -f reports/junit.xml || $(MAKE) test
	test -f reports/phantom-test/metrics.json || $(MAKE) evaluate-phantom
	rm -rf reports/docs
	$(BIN)/sphinx-build -W --keep-going -q -b html docs reports/docs/html
	@echo "documents: reports/docs/html/index.html"

# Re-create the released phantom model (about 1.5 hours on 2 CPU cores, docs/detection.md):
# training and validation data, training with in-run hard-negative mining, calibration of the
# operating point on 200 validation phantoms, then the ONNX export `cad detect` runs by default.
train-phantom: venv
	$(BIN)/cad phantom --out $(PHANTOMS)/train-a --exams 240 --seed 1001 --spacing 0.4 --workers 2
	$(BIN)/cad phantom --out $(PHANTOMS)/train-b --exams 60 --seed 1003 --workers 2
	$(BIN)/cad phantom --out $(PHANTOMS)/train-c --exams 360 --seed 1006 --spacing 0.4 --workers 2
	$(BIN)/cad phantom --out $(PHANTOMS)/train-d --exams 400 --seed 1405 --spacing 0.4 --workers 2
	$(BIN)/cad phantom --out $(PHANTOMS)/val-s1 --exams 60 --seed 1404 --workers 2
	$(BIN)/cad phantom --out $(PHANTOMS)/val-cal --exams 200 --seed 1402 --workers 2
	$(BIN)/cad train --config $(MODEL)/train.yaml --out $(RUN)
	$(BIN)/python -m cad_tools.training.release calibrate --run-model $(RUN)/model \
	  --validation $(PHANTOMS)/val-cal --out $(MODEL)
	$(BIN)/cad export --format onnx --out $(MODEL)

# The learned CC/MLO correspondence (issue 28, docs/detection.md): candidate pairs of the released
# detector on training phantoms (seeds 2801, 2803) and a selection set (seed 2802), never test data;
# the correspondence fitted on the first, the dual-view score and minimum link probability on the
# second, the operating point calibrated again on the validation set (seed 1402). About 1.5 hours.
CORRESPONDENCE := build/models/phantom-retinanet-r18-dv
MIN_LINK_PROBABILITY ?= 0.3
train-correspondence: venv
	test -f $(PHANTOMS)/pairs-train-2801/truth.json || \
	  $(BIN)/cad phantom --out $(PHANTOMS)/pairs-train-2801 --exams 300 --seed 2801 --spacing 0.4 --workers 2
	test -f $(PHANTOMS)/pairs-train-2803/truth.json || \
	  $(BIN)/cad phantom --out $(PHANTOMS)/pairs-train-2803 --exams 1200 --seed 2803 --spacing 0.4 --workers 2
	test -f $(PHANTOMS)/pairs-val-2802/truth.json || \
	  $(BIN)/cad phantom --out $(PHANTOMS)/pairs-val-2802 --exams 400 --seed 2802 --spacing 0.4 --workers 2
	test -f $(PHANTOMS)/val-cal/truth.json || \
	  $(BIN)/cad phantom --out $(PHANTOMS)/val-cal --exams 200 --seed 1402 --workers 2
	for set in pairs-train-2801 pairs-train-2803 pairs-val-2802; do \
	  test -f build/pairs/$$set.npz || $(BIN)/python -m cad_tools.training.correspondence $(PHANTOMS)/$$set \
	    --out build/pairs/$$set.npz || exit 1; done
	$(BIN)/python -m cad_tools.training.correspondence_release --released $(MODEL) \
	  --train build/pairs/pairs-train-2801.npz build/pairs/pairs-train-2803.npz \
	  --selection build/pairs/pairs-val-2802.npz --validation $(PHANTOMS)/val-cal \
	  --min-probability $(MIN_LINK_PROBABILITY) --out $(CORRESPONDENCE)

# Standalone performance of the released model on 240 held-out phantom exams (seed 14014, never
# used in training, calibration or selection): FROC, against what is findable, per lesion,
# fusion gain, linking, time per exam.
TEST_SET := $(PHANTOMS)/test-14014
evaluate-phantom: venv
	test -f $(TEST_SET)/truth.json || \
	  $(BIN)/cad phantom --out $(TEST_SET) --exams 240 --seed 14014 --workers 2
	rm -rf reports/phantom-test
	$(BIN)/cad detect $(TEST_SET) --out reports/phantom-test/findings --no-overlays
	$(BIN)/cad evaluate --truth $(TEST_SET)/truth.json --findings reports/phantom-test/findings \
	  --out reports/phantom-test

# Speed on this machine (a benchmark, not a test): every runtime that can run here, batch
# scaling, cold start and two image sizes, in one run (docs/runtime.md).
bench: venv
	test -f $(PHANTOMS)/bench-0.2mm/truth.json || \
	  $(BIN)/cad phantom --out $(PHANTOMS)/bench-0.2mm --exams 4 --seed 7 --spacing 0.2 --workers 2
	test -f $(PHANTOMS)/bench-0.1mm/truth.json || \
	  $(BIN)/cad phantom --out $(PHANTOMS)/bench-0.1mm --exams 4 --seed 7 --spacing 0.1 --workers 2
	$(BIN)/cad bench $(PHANTOMS)/bench-0.2mm --json reports/bench/bench.json \
	  --size-input $(PHANTOMS)/bench-0.1mm --repeats 3

# Bounded load test of `cad serve` against a real Orthanc: 200 phantom studies, exactly-once and
# SR linkage checked, throughput and queue latency measured (docs/service.md). About 15 minutes.
loadtest: venv system-deps
	$(BIN)/python -m cad_tools.loadtest --studies 200 --out reports/loadtest

# Re-pin every third-party package after a deliberate dependency change (a SOUP change).
lock: venv
	{ echo "# Exact versions of every third-party package (SOUP), one source of truth."; \
	  echo "# Installation is constrained by this file (pip -c); the SOUP list is generated from it."; \
	  echo "# Regenerate with: make lock"; \
	  $(BIN)/pip freeze --all --exclude-editable | grep -v -e '^mammo-cad' -e '^pip==' | sort -f; } > locked-dependencies.txt

clean:
	rm -rf $(VENV) $(DEMO) reports .pytest_cache .hypothesis
