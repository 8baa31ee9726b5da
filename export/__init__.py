"""Training-free export tooling (host side): ONNX checks, FP16/INT8 Q/DQ quantisation, TensorRT engine building.

Empty until the inference-backends issue lands; see ARCHITECTURE.md. Nothing here trains.
"""
