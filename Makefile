# The two commands of README.md: `make demo` (the main job, offline) and `make test` (CI).
PY ?= python3
PIP_FLAGS ?= --quiet --disable-pip-version-check

.PHONY: install demo test test-slow bench aarch64

install:
	$(PY) -m pip install $(PIP_FLAGS) -e '.[dev]'

demo: install
	$(PY) -m benchmarks.demo_pipeline

test: install
	$(PY) -m pytest

# the parity cases left out of CI (MobileCLIP-B fixtures, S1/S2, every ONNX graph on image files): docs/parity.md
test-slow: install
	$(PY) -m pytest -m slow tests/apple tests/export/test_export_parity.py tests/export/test_timm_image_only.py \
		tests/export/test_timm_quantize.py

bench: install
	EDGECLIP_BENCH_QUICK=1 $(PY) -m pytest -m bench benchmarks -k "mobileclip-s0 and not mobileclip2"

aarch64: install
	$(PY) -m pytest -m aarch64 tests/device
