# Entry points. `make demo` and `make test` are the README's first two commands.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.sglbench-installed
# The pinned set is a lock (every package, sglang's own metadata aside), so it installs in one
# step with --no-deps: nothing is resolved, and pip has no dependency set to complain about.
LOCK := requirements-sglang.txt requirements.txt requirements-dev.txt
REQS := $(LOCK) requirements-uv.txt pyproject.toml
INSTALL_ARGS := --no-deps $(addprefix -r ,$(LOCK)) -e .
# auto: uv (PATH, else requirements-uv.txt installed into the venv with pip), else pip.
# 1: uv or fail. 0: pip only (slower: one file at a time).
USE_UV ?= auto

.PHONY: setup test lint unit demo clean

setup: $(STAMP)

# Idempotent: re-runs only when a requirements file changed. No bytecode is compiled here (uv's
# default, pip's --no-compile): it was half of pip's time, and Python compiles what it imports.
$(STAMP): $(REQS)
	@test -x $(PY) || python3 -m venv $(VENV)
	@set -e; start=$$(date +%s); uv=$$($(FIND_UV)); \
	n=$$(cat $(LOCK) | grep -c '^[A-Za-z]'); \
	if [ -n "$$uv" ]; then \
	  echo "make setup: $(VENV): $$n pinned packages with $$($$uv --version) (the first time about 7 GB, mostly torch's CUDA libraries, kept in uv's cache and hard-linked from there)"; \
	  $(PY) -c "$$UV_WITH_PIP_CONFIG" $$uv pip install -q --python $(PY) $(INSTALL_ARGS); \
	  problems=$$($$uv pip check -q --python $(PY) 2>&1 || true); \
	else \
	  echo "make setup: $(VENV): $$n pinned packages with pip (about 7 GB; 'make setup USE_UV=auto' is faster)"; \
	  $(PY) -m pip install -q --disable-pip-version-check --no-compile --no-warn-conflicts \
	    --no-build-isolation $(INSTALL_ARGS); \
	  problems=$$($(PY) -m pip check 2>&1 || true); \
	fi; \
	problems=$$(printf '%s\n' "$$problems" | grep -v -e '^sglang ' -e '^The package `sglang` ' \
	  -e '^Found [0-9]* incompatibilit' -e '^No broken requirements' -e '^$$' || true); \
	if [ -n "$$problems" ]; then \
	  printf '%s\n' "$$problems" "make setup: the pinned set in $(LOCK) is incomplete (above): pin what is missing"; \
	  exit 1; \
	fi; \
	touch $(STAMP); \
	echo "make setup: $(VENV) ready in $$(( $$(date +%s) - start )) s"

# Prints the uv to use, or nothing for pip. Bootstrapping uv from PyPI prints only errors (-qq):
# pip would also warn about each local index of this machine's pip config that lacks uv.
FIND_UV = \
	if [ "$(USE_UV)" = 0 ]; then exit 0; fi; \
	if command -v uv; then exit 0; fi; \
	if [ -x $(VENV)/bin/uv ] || $(PY) -m pip install -qq --disable-pip-version-check \
	    -r requirements-uv.txt >&2; then echo $(VENV)/bin/uv; exit 0; fi; \
	if [ "$(USE_UV)" = 1 ]; then echo "make setup: could not install uv (USE_UV=1)" >&2; exit 1; fi; \
	echo "make setup: could not install uv; using pip" >&2

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
