# Every install step lives here: a fresh machine needs only python3 (3.10+) and make.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q

.PHONY: run test bench sample dashboard clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install -e '.[test,bench]'
	@# the dashboard test drives Debian's headless Chromium (no browser downloads from test tools)
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver; }
	touch $@

## run: install, then run the main job on the bundled sample (local Ray)
run: $(VENV)/.installed
	$(PY) pipelines/crawl.py

## test: install with test extras, then check the import layers and run the test suite
test: $(VENV)/.installed-test
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q

## bench: speed and quality benchmarks on ../shared/data (prints figures)
bench: $(VENV)/.installed-test
	$(PY) bench/extraction.py
	$(PY) bench/pipeline.py
	$(PY) bench/dedup.py
	$(PY) bench/pii.py
	$(PY) bench/mix.py
	$(PY) bench/images.py

## dashboard: browse the crawl runs, mixes and tuning runs under output/
dashboard: $(VENV)/.installed
	$(PY) pipelines/dashboard.py --root output

sample: $(VENV)/.installed
	$(PY) pipelines/make_sample.py

clean:
	rm -rf output sample .pytest_cache
