# The only entry points: setup, demo, test, check, bench.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEBS := dovecot-imapd dovecot-pop3d dovecot-managesieved dovecot-sieve dovecot-lmtpd redis-server \
	chromium chromium-driver
# The bench's anchors: imapsync's Perl modules (../shared/anchors/README.md).
BENCH_DEBS := libauthen-ntlm-perl libcgi-pm-perl libcrypt-openssl-rsa-perl libdata-uniqid-perl \
  libencode-imaputf7-perl libfile-copy-recursive-perl libfile-tail-perl libio-socket-inet6-perl \
  libio-socket-ssl-perl libio-tee-perl libhtml-parser-perl libjson-webtoken-perl \
  libmail-imapclient-perl libparse-recdescent-perl libproc-processtable-perl \
  libmodule-scandeps-perl libreadonly-perl libregexp-common-perl libsys-meminfo-perl \
  libterm-readkey-perl libtest-mockobject-perl libtest-pod-perl libunicode-string-perl \
  liburi-perl libwww-perl libtest-nowarnings-perl libtest-deep-perl libtest-warn-perl
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup debs bench-debs install-debs venv bytecode demo test check bench clean

setup: debs venv bytecode

# Installs only what is missing; `apt-get update` first, as a fresh machine needs it.
debs:
	@$(MAKE) --no-print-directory install-debs PACKAGES="$(DEBS)"

bench-debs:
	@$(MAKE) --no-print-directory install-debs PACKAGES="$(BENCH_DEBS)"

install-debs:
	@missing=""; for p in $(PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

venv: $(VENV)/.installed

# Every module compiled ahead (only what changed since): a command then starts without
# compiling ours again, even where PYTHONDONTWRITEBYTECODE=1 keeps Python from saving
# what it compiles (an editable install's modules are compiled beside the sources).
bytecode: venv
	@$(PY) -m compileall -q -j 0 migrator workers $(VENV)/lib >/dev/null

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

demo: setup
	$(PY) -m scripts.demo

test: setup
	$(PY) -m pytest -q -p no:cacheprovider

check: setup
	$(VENV)/bin/ruff check migrator workers tests scripts bench
	$(VENV)/bin/ruff format --check migrator workers tests scripts bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# RUNS: interleaved runs of each anchor comparison (the medians are reported).
bench: setup bench-debs
	RUNS=$(or $(RUNS),3) SIZE=$(SIZE) $(PY) -m bench.run
	$(if $(SIZE),,$(PY) -m bench.sync)

clean:
	rm -rf $(VENV) build *.egg-info
