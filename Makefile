# fusionkit: setup, test, report. Everything runs inside .venv/ in the repo root.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# On a machine without CUDA, install the CPU build of PyTorch first: a bare `torch`
# requirement would otherwise pull a multi-GB CUDA build. Override for a GPU machine:
#   make setup TORCH_SPEC="torch" TORCH_INDEX=""
TORCH_SPEC ?= torch==2.13.0
# Data: the SentEval folder beside the repo (../shared/data/senteval) when it exists, and then offline mode,
# since nothing needs the network. Without it FUSIONKIT_DATA stays unset and the Hub stays reachable, so the
# tasks download from the Hugging Face Hub (forcing offline mode there would only fail). Your own
# FUSIONKIT_DATA or HF_HUB_OFFLINE (environment or `make VAR=...`) always wins. `make env` prints the result.
LOCAL_DATA := $(abspath ../shared/data/senteval)
ifneq ($(wildcard $(LOCAL_DATA)/.),)
export FUSIONKIT_DATA ?= $(abspath ../shared/data/senteval)
ifeq ($(realpath $(FUSIONKIT_DATA)),$(realpath $(LOCAL_DATA)))
export HF_HUB_OFFLINE ?= 1
endif
endif
ifneq ($(HF_HUB_OFFLINE),)
export TRANSFORMERS_OFFLINE ?= $(HF_HUB_OFFLINE)
export HF_DATASETS_OFFLINE ?= $(HF_HUB_OFFLINE)
endif

.PHONY: setup test report families matrix lab clean env

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	@if command -v nvidia-smi >/dev/null 2>&1; then \
		echo "CUDA found: installing the default (CUDA) build of PyTorch"; \
		$(PY) -m pip install --quiet torch; \
	else \
		echo "no CUDA: installing the CPU build $(TORCH_SPEC)"; \
		$(PY) -m pip install --quiet "$(TORCH_SPEC)"; \
	fi
	$(PY) -m pip install --quiet -e ".[dev,mlflow]"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

# Unit and real-data tests, then every notebook under nbval (smoke profile; --nbval-lax: a cell must run
# without error, its outputs are not compared, since timings and scores differ from run to run).
test: setup
	$(PY) -m pytest tests notebooks --nbval-lax

# Runs on Ray, two at a time (one torch thread each): 2886 s from scratch on 2 cores (5 seeds, the fair protocol:
# tuning, matched controls, per-seed experts, leave-one-source-out); a rerun on the same work folder trains nothing.
report: setup
	$(VENV)/bin/fusionkit report --profile quick --target cr --sources mr,subj,trec --out reports/quick-cr --executor ray --workers 2

# Every strategy family at n=128 on CR with MR, SUBJ and TREC as sources (3 seeds, equal tuning budgets, matched and
# tuned controls, retention probes): see fusionkit/profiles/families.yaml for what is trimmed.
# 2990 s on 2 cores with experts of 2,000 examples and the runs that read no expert taken from the store (notebook
# 03: 327 s, 04: 2519 s); from scratch notebook 02 adds 831 s and 04 its controls' ~850 s of training (~70 min);
# 135 s when resumed.
families: setup
	$(VENV)/bin/fusionkit report --profile families --target cr --sources mr,subj,trec --out reports/families-cr --executor ray --workers 2

# The transfer matrix over the five shared tasks (each a target, the others its sources), 3 seeds at n=128:
# 1804 s from scratch on 2 cores (135 runs, 15 experts each serving 4 targets); 27 s when resumed.
matrix: setup
	$(VENV)/bin/fusionkit report --profile matrix --targets cr,mr,subj,trec,sst2 --out reports/matrix --executor ray --workers 2

lab: setup
	$(VENV)/bin/jupyter lab notebooks/

# Where the data comes from and whether the Hub is offline, as every target above sees them.
env:
	@echo "FUSIONKIT_DATA=$${FUSIONKIT_DATA:-(unset: tasks download from the Hugging Face Hub)}"
	@echo "HF_HUB_OFFLINE=$${HF_HUB_OFFLINE:-(unset: online)}"
	@echo "HF_DATASETS_OFFLINE=$${HF_DATASETS_OFFLINE:-(unset: online)}"
	@echo "TRANSFORMERS_OFFLINE=$${TRANSFORMERS_OFFLINE:-(unset: online)}"

clean:
	rm -rf $(VENV) .pytest_cache
