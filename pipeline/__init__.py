"""Multitask compression pipeline: AdapMTL training, hardening, ONNX export, ONNX Runtime and TensorRT checks."""

__version__ = "0.6.0"
