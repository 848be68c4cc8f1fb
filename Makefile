# The two commands of the README: `make book` and `make test`.
# Both make .venv if it is missing and install the package with its extras from pyproject.toml.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
JOBS   ?= auto
# runs the chapters read, trained side by side before the chapters execute (one thread each)
PREPARE_JOBS ?= 2

BOOK_BUILD = $(BIN)/jupyter-book build . --config book/_config.yml --toc book/_toc.yml -W -n --keep-going
NOTEBOOKS  = $(wildcard chapters/*.ipynb)

.PHONY: book test lint unit nbval bookcheck bench clean weights

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip
	# torch and torchvision in one command, unpinned: pip pairs them.
	$(BIN)/python -m pip install --quiet --progress-bar off torch torchvision
	$(BIN)/python -m pip install --quiet --progress-bar off -e ".[book,test]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

# First the runs the chapters read (the snapshots of chapters 1-8, the runs of chapters 9-10),
# trained into the cache with a progress bar: resumable, and found in seconds once done, so no
# chapter trains inside a cell's timeout. Then the book.
book: $(STAMP)
	$(BIN)/python -m imbalance.lab --jobs $(PREPARE_JOBS)
	$(BOOK_BUILD)
	@test -f _build/html/index.html && echo "The book is in _build/html/index.html"

# The protocol's pretrained backbone (committed; this re-creates it: ~15 min on one core). Its
# provenance is inside the file: python -c "import torch; print(torch.load('weights/...')['provenance'])"
weights: $(STAMP)
	$(BIN)/python -m imbalance.train.pretrain --out weights/resnet18-w32-gn.pt --steps 4000 \
		--train-images 12000

lint: $(STAMP)
	$(BIN)/ruff check .

# tests/book checks the built book: `bookcheck`, after the build
unit: $(STAMP)
	$(BIN)/python -m pytest tests --ignore=tests/book -n $(JOBS) -q

nbval: $(STAMP)
ifneq ($(strip $(NOTEBOOKS)),)
	# the runs the chapters read, trained once before the chapters run side by side (one thread a
	# run: with any other load on the cores, OpenMP threads that wait on each other at every
	# barrier make a step ten times slower)
	IMBALANCE_SMOKE=1 $(BIN)/python -m imbalance.lab --jobs $(PREPARE_JOBS)
	# one torch thread per notebook: the workers already take one core each
	OMP_NUM_THREADS=1 IMBALANCE_SMOKE=1 $(BIN)/python -m pytest --nbval-lax --nbval-current-env -n $(JOBS) --dist loadscope -q $(NOTEBOOKS)
else
	@echo "nbval: no chapters yet"
endif

# The built book as a reader gets it: outputs, figures, links, math rendered offline, and (with
# a headless Chromium) screenshots in _build/screenshots. Builds the book first if it is missing.
bookcheck: $(STAMP)
	$(BIN)/python -m pytest tests/book -q

test: lint unit nbval
	IMBALANCE_SMOKE=1 $(MAKE) book
	$(MAKE) bookcheck

bench: $(STAMP)
	$(BIN)/python benchmarks/losses.py
	$(BIN)/python benchmarks/train_step.py
	$(BIN)/python benchmarks/ohem.py

clean:
	rm -rf _build
