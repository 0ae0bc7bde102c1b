"""ONNX Runtime sessions, execution providers and device readiness (torch-free)."""
