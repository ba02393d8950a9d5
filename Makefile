# Two commands for a newcomer: `make book` and `make test` (see README.md).
PYTHON   ?= python3
VENV     ?= .venv
BIN      := $(VENV)/bin
STAMP    := $(VENV)/.installed-$(shell cat constraints.txt pyproject.toml | cksum | cut -d' ' -f1)
PROFILE  ?= ci
JOBS     ?= 2
# CIFAR-10: vqpaper.data.load_cifar10 finds it itself (README): VQPAPER_CIFAR10 if set, else the
# shared subset beside the checkout (../shared/data/), else data/, else torchvision's download.
export PYTHONHASHSEED := 0

.PHONY: venv book test test-fast bench references check clean-cache clean browser

$(STAMP): constraints.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=24"
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[book,test]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (vqpaper)" >/dev/null
	@rm -f $(VENV)/.installed-*
	@touch $@

venv: $(STAMP)

book: venv
	$(BIN)/vqpaper book --profile $(PROFILE) --jobs $(JOBS)

test: venv browser
	$(BIN)/python -m pytest -q --timeout=1800 --durations=25

# The browser test drives Debian's chromium + chromedriver. Installed here when we are root
# with apt-get (CI, fresh machines); otherwise that one test skips and says why.
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing chromium + chromium-driver for the browser test (apt-get)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
	    || echo "note: could not install chromium; the browser test will skip"; \
	else echo "note: chromium/chromedriver missing and not root: the browser test will skip"; fi

test-fast: venv
	$(BIN)/python -m pytest -q -m "not notebooks and not browser and not slow"

bench: venv
	$(BIN)/python benchmarks/quantizer.py
	$(BIN)/python benchmarks/book.py

check: venv
	$(BIN)/vqpaper check --profile $(PROFILE)

references: venv
	$(BIN)/vqpaper references --profile $(PROFILE) --accept

clean-cache: venv
	$(BIN)/vqpaper clean-cache

clean:
	rm -rf _build book/notebooks   # book/notebooks: where builds before _build/site wrote
