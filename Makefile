# Every install step lives here: a fresh machine needs only python3 (3.10+) and make.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q

.PHONY: run test bench sample clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install -e '.[test,bench]'
	touch $@

## run: install, then run the main job on the bundled sample (local Ray)
run: $(VENV)/.installed
	$(PY) pipelines/crawl.py

## test: install with test extras, then run the test suite
test: $(VENV)/.installed-test
	$(PY) -m pytest -q

## bench: speed and quality benchmarks on ../shared/data (prints figures)
bench: $(VENV)/.installed-test
	$(PY) bench/extraction.py
	$(PY) bench/pipeline.py

sample: $(VENV)/.installed
	$(PY) pipelines/make_sample.py

clean:
	rm -rf output sample .pytest_cache
