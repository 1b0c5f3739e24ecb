# LoopML developer entry points. `make demo` and `make test` set themselves up.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip

.PHONY: venv install install-test system-deps demo test server bench bench-serving bench-monitoring clean

$(VENV)/bin/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH (or: make PYTHON=python3 ...)"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# Stamp files: reinstall only when pyproject.toml changes.
$(VENV)/.installed-samples: pyproject.toml | $(VENV)/bin/python
	$(PIP) install --quiet -e '.[samples,clients]'
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(VENV)/bin/python
	$(PIP) install --quiet -e '.[samples,clients,cluster,test]'
	touch $@ $(VENV)/.installed-samples

install: $(VENV)/.installed-samples
install-test: $(VENV)/.installed-test

demo: install
	LOOPML_PY=$(PY) bash scripts/demo.sh

# system-deps: Chromium, bubblewrap, HAProxy, wrk from Debian (apt-get when root; see the script)
system-deps:
	bash scripts/system-deps.sh

test: install-test system-deps
	$(PY) -m pytest -q

server: install
	$(VENV)/bin/loopml server

bench: install-test
	$(PY) bench/training.py

# submit → first batch, cold vs warm (spare) workers, and 20 short jobs cold vs warm
.PHONY: bench-job-start
bench-job-start: install-test
	$(PY) bench/job_start.py

# the dashboard's lists in chromium: 3000 jobs / 2000 versions vs 30 rows (time to visible, JSON bytes)
.PHONY: bench-ui-scale
bench-ui-scale: install-test
	$(PY) bench/ui_scale.py

# local vs a 2-node Ray cluster it starts itself (PostgreSQL + moto S3): submit → first batch, 8 jobs at once
.PHONY: bench-ray
bench-ray: install-test
	$(PY) bench/ray_scale.py

# needs wrk (apt-get install wrk); creates a separate BentoML venv under ../bench-venvs on first use
bench-serving: install-test
	$(PY) bench/serving.py

# drift power study, LoopML vs Evidently (issue 12; ~15 min, BENCH_ARGS=--quick: a few); creates a
# LoopML with 1 vs 2 serving workers (LOOPML_SERVING_WORKERS) at c=32 and c=128; needs wrk
.PHONY: bench-serving-workers
bench-serving-workers: install-test
	$(PY) bench/serving_workers.py $(BENCH_ARGS)

# separate Evidently venv under ../bench-venvs on first use
bench-monitoring: install-test
	$(PY) bench/monitoring.py --power $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
