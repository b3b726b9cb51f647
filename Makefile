# edge-optimizer: `make demo` runs the main job, `make test` runs every test. Both set up what
# they need: a virtual environment in .venv, the pip installs, and the native build.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
HOST_BUILD := build/host
FUZZ_BUILD := build/fuzz

.PHONY: all venv build native fuzz test lint demo bench clean format

all: build

$(VENV)/.stamp: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

venv: $(VENV)/.stamp

# The Python extension, built in place (editable install drives CMake through setup.py).
build: venv
	$(PY) -m pip install -q --no-build-isolation --no-deps -e .

# Native C++ tests and benchmark binaries for this machine.
native: venv
	$(VENV)/bin/cmake -S . -B $(HOST_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release \
	    -DCMAKE_MAKE_PROGRAM=$(abspath $(VENV)/bin/ninja) >/dev/null
	$(VENV)/bin/cmake --build $(HOST_BUILD) -j $(JOBS)

# libFuzzer + ASan/UBSan build of the .eom loader target (clang; portable kernels only), kept
# apart from the g++ build. Run by hand: see kernels/README.md (tests/test_fuzz_loader.py runs it).
fuzz: venv
	$(VENV)/bin/cmake -S . -B $(FUZZ_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Debug -DEDGEOPT_FUZZ=ON \
	    -DCMAKE_CXX_COMPILER=clang++ -DEDGEOPT_BUILD_TESTS=OFF -DEDGEOPT_BUILD_BENCH=OFF \
	    -DCMAKE_MAKE_PROGRAM=$(abspath $(VENV)/bin/ninja) >/dev/null
	$(VENV)/bin/cmake --build $(FUZZ_BUILD) -j $(JOBS)

lint: venv
	$(VENV)/bin/ruff check optimizer tests benchmarks setup.py
	$(VENV)/bin/ruff format --check optimizer tests benchmarks setup.py

# Every test: lint, the native C++ tests (host paths, then ARM and older x86 CPUs under
# qemu-user, driven from pytest), and the Python tests.
test: build native lint
	$(PY) -m pytest -q tests

# The main job: train (cached) the digits VGG, compress it with the default and smallest recipes,
# export .eom and .tflite, benchmark against PyTorch fp32 and LiteRT, print the table, write the
# reports to edgeopt-demo/ (`edgeopt demo --help` for options).
demo: build
	$(PY) -m optimizer.demo --out edgeopt-demo

bench: build
	$(PY) benchmarks/gemm.py --markdown

format: venv
	$(VENV)/bin/ruff format optimizer tests benchmarks setup.py
	clang-format -i $$(find kernels -name '*.cc' -o -name '*.h')

clean:
	rm -rf build optimizer/_kernels*.so optimizer/_runtime*.so *.egg-info
