# Entry points. `make demo` and `make test` are the README's first two commands.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.sglbench-installed
# The pinned set is a lock (every package; only sglang's own metadata asks for more), so it
# installs with --no-deps: nothing is resolved, nothing to complain about, and the lock is checked.
LOCK := requirements-sglang.txt requirements.txt requirements-dev.txt
REQS := $(LOCK) pyproject.toml
# The installer when no uv is on PATH: installed into the venv first, then again with the lock.
UV_PIN = $$(grep '^uv==' requirements-dev.txt)
# auto: uv (PATH, else UV_PIN installed into the venv with pip), else pip.
# 1: uv or fail. 0: pip only (slower: one file at a time).
USE_UV ?= auto

.PHONY: setup test lint unit demo clean

setup: $(STAMP)

# Idempotent: re-runs only when a requirements file changed. Two steps, both --no-deps: the pinned
# set (in parallel with uv), then this project, built with the pinned setuptools (no network).
# No bytecode is compiled (uv's default, pip's --no-compile): that was half of pip's time, and
# Python compiles what it imports the first time.
$(STAMP): $(REQS)
	@set -e; start=$$(date +%s); n=$$(cat $(LOCK) | grep -c '^[A-Za-z]'); \
	uv=$$($(FIND_UV)); \
	if [ -n "$$uv" ]; then \
	  echo "make setup: $(VENV): $$n pinned packages with $$($$uv --version | cut -d' ' -f1-2) ($$uv), hard-linked from its cache $$($$uv cache dir) (about 7 GB the first time, mostly torch's CUDA libraries)"; \
	  python3 -c "$$UV_WITH_PIP_CONFIG" $$uv pip install -q --python $(PY) --no-deps $(addprefix -r ,$(LOCK)); \
	  $$uv pip install -q --python $(PY) --no-deps --no-build-isolation -e .; \
	  problems=$$($$uv pip check -q --python $(PY) 2>&1 || true); \
	else \
	  echo "make setup: $(VENV): $$n pinned packages with pip (about 7 GB: 3 min here, 1 min with uv)"; \
	  $(PIP) install -q --no-deps --no-compile --no-warn-conflicts $(addprefix -r ,$(LOCK)); \
	  $(PIP) install -q --no-deps --no-compile --no-build-isolation -e .; \
	  problems=$$($(PIP) check 2>&1 || true); \
	fi; \
	problems=$$(printf '%s\n' "$$problems" | grep -v -e '^sglang ' -e '^The package `sglang` ' \
	  -e '^Found [0-9]* incompatibilit' -e '^No broken requirements' -e '^$$' || true); \
	if [ -n "$$problems" ]; then \
	  printf '%s\n' "$$problems" "make setup: the pinned set in $(LOCK) is incomplete (above): pin what is missing"; \
	  exit 1; \
	fi; \
	touch $(STAMP); \
	echo "make setup: $(VENV) ready in $$(( $$(date +%s) - start )) s"

PIP := $(PY) -m pip --disable-pip-version-check
# Makes the venv if needed and prints the uv to use, or nothing for pip. The venv starts without
# pip (ensurepip took 4 to 16 s here); pip 23.2.1, as ensurepip's, comes with the pinned set.
# uv is installed with -qq (errors only): pip warns about each local index of a machine's pip
# config that lacks uv, noise here. The system pip is tried first (no ensurepip), quietly since
# the venv's own pip is the fallback and shows its errors.
FIND_UV = \
	test -x $(PY) || python3 -m venv --without-pip $(VENV) >&2; \
	if [ "$(USE_UV)" != 0 ]; then \
	  command -v uv && exit 0; \
	  if [ -x $(VENV)/bin/uv ] || python3 -m pip --python $(PY) install -qq \
	      --disable-pip-version-check $(UV_PIN) >&2 2>/dev/null \
	      || { $(ENSURE_PIP) && $(PIP) install -qq $(UV_PIN) >&2; }; then \
	    echo $(VENV)/bin/uv; exit 0; \
	  fi; \
	  if [ "$(USE_UV)" = 1 ]; then echo "make setup: could not install uv (USE_UV=1)" >&2; exit 1; fi; \
	  echo "make setup: could not install uv; using pip" >&2; \
	fi; \
	$(ENSURE_PIP)
ENSURE_PIP = { $(PY) -m pip --version >/dev/null 2>&1 || $(PY) -m ensurepip >/dev/null; }

# uv reads no pip config, so hand it the index, find-links and constraint settings that pip would
# use here (config files, then PIP_* variables), unless the user configured uv's indexes already.
# Without any of them uv uses PyPI, as pip does.
define UV_WITH_PIP_CONFIG
import ast, os, subprocess, sys
listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"],
                        capture_output=True, text=True).stdout.splitlines()
conf = {}
for scope in ("global", "install", ":env:"):
    for line in listed:
        key, _, value = line.partition("=")
        if key.rpartition(".")[0] == scope:
            conf[key.rpartition(".")[2]] = ast.literal_eval(value)
flags = []
own = {"UV_INDEX_URL", "UV_DEFAULT_INDEX", "UV_INDEX", "UV_EXTRA_INDEX_URL", "UV_FIND_LINKS",
       "UV_NO_INDEX"}
if not own & set(os.environ):
    names = {"index-url": "--index-url", "extra-index-url": "--extra-index-url",
             "find-links": "--find-links", "constraint": "--constraints",
             "trusted-host": "--allow-insecure-host"}
    for name, flag in names.items():
        flags += [word for value in conf.get(name, "").split() for word in (flag, value)]
    if conf.get("extra-index-url"):
        flags += ["--index-strategy", "unsafe-best-match"]
    if conf.get("no-index", "").lower() in ("1", "true", "yes", "on"):
        flags.append("--no-index")
env = dict(os.environ)
if conf.get("cert"):
    env.setdefault("SSL_CERT_FILE", conf["cert"])
os.execvpe(sys.argv[1], sys.argv[1:] + flags, env)
endef
export UV_WITH_PIP_CONFIG

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: lint
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

unit: setup
	$(PY) -m pytest -q tests/unit

demo: setup
	$(VENV)/bin/invoke demo

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .sglbench build *.egg-info
