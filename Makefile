# Two commands, each doing its own set-up on a fresh clone:
#   make demo   creates .venv, installs, builds demo data, trains and restores on CPU, writes a report
#   make demo-ads  the same for ADS (Rain-Blur-Noise, NAFNet), results/demo_ads
#   make test   creates .venv if missing, installs, runs the pytest suite
#   make lint   flake8 + isort check (.ci/run runs it before the tests)
#   make soak   (not in CI) a long training run checking that memory and open files stay flat
#   make bench  (not in CI) the benchmark suite of ratios, bench/README.md
PYTHON ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
# The torch/torchvision pair installed into .venv (tested: 2.14.1 / 0.29.1). Override e.g.
#   make test TORCH_PKGS="torch torchvision"
TORCH_PKGS ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed

.PHONY: install test demo demo-ads lint format clean soak bench

$(VPY):
	$(PYTHON) -m venv $(VENV)

# BasicSR 1.4.2 is an sdist whose setup.py fails on Python 3.13 (PEP 667) and lists torch in
# setup_requires: tools/install_basicsr.py downloads it, fixes get_version(), builds the wheel
# without build isolation (no second torch) and installs it; the same route on Python 3.10-3.13.
# Then install the plugin itself.
$(STAMP): $(VPY) setup.py requirements.txt tools/install_basicsr.py
	$(VPY) -m pip install -q --upgrade pip setuptools wheel
	$(VPY) -m pip install -q $(TORCH_PKGS)
	$(VPY) tools/install_basicsr.py -q
	$(VPY) -m pip install -q -e '.[test,demo,app]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(VPY) -m pytest -q tests

# flake8 (style, unused names) and isort (import order), settings in setup.cfg
lint: $(STAMP)
	$(VPY) -m flake8 uniremoval tests bench datasets_prep tools setup.py
	$(VPY) -m isort --check-only --diff uniremoval tests bench datasets_prep tools setup.py

# rewrite the import order in place (flake8's findings are fixed by hand)
format: $(STAMP)
	$(VPY) -m isort uniremoval tests bench datasets_prep tools setup.py

demo: $(STAMP)
	$(VPY) -m uniremoval.demo --out results/demo

# ADS (Park et al., CVPR 2023) end to end at toy scale on CPU: UM, fine-tuned targets, FAIG-SD masks, classifier,
# CNN-ADS for every selection method x q x 3 seeds; writes results/demo_ads/report.{md,html,json}
demo-ads: $(STAMP)
	$(VPY) -m uniremoval.demo.ads --out results/demo_ads

# not in CI: a few hundred training iterations with validation and saving on the demo data; fails when
# the resident memory grows (least-squares slope > 2 MB per 100 iterations) or open files grow
soak: $(STAMP)
	OMP_NUM_THREADS=1 $(VPY) bench/soak.py --iters 400 --every 50

# benchmark suite (bench/README.md): ratios measured side by side in one process, written to
# bench/results/*.json, then printed as a table. Under 10 minutes on 2 quiet CPU cores: run it on an
# otherwise idle machine. BENCH_ARGS=--quick: toy settings; BENCH_ARGS=--full: paper sizes on a GPU.
BENCH_ARGS ?=
bench: $(STAMP)
	$(VPY) bench/run_suite.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) experiments results tb_logger datasets/demo
