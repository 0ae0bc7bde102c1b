"""Build side: INT8 static quantization calibrated on reinforced-dataset samples (onnx + onnxruntime, no torch)."""
