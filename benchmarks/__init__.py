"""Build-side benchmarks (torch reference, quantize_dynamic baseline) and the pytest-benchmark suite (marker `bench`)."""
