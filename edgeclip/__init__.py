"""edgeclip: MobileCLIP embeddings on phones and small boards, with ONNX Runtime and no PyTorch."""

__version__ = "0.1.0"
