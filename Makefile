# Two entry points: `make demo` runs the app, `make test` runs the test suite.
# Both install what they need first (pinned Python packages; Debian's chromium for browser tests).
PYTHON ?= python3

.PHONY: demo test setup setup-browser

setup:
	$(PYTHON) -m pip install -q -r requirements.txt

setup-browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

demo: setup
	$(PYTHON) app.py

test: setup setup-browser
	$(PYTHON) -m pytest -q
