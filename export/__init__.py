"""Build side: MobileCLIP models from checkpoints to reparameterized ONNX bundles (needs torch)."""
