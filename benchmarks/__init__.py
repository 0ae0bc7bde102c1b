"""Benchmarks and the offline demo pipeline (build side: may use torch)."""
