"""Training recipes and model definitions (PyTorch). Nothing at runtime imports this package.

``pip install 'edgehdr[train]'`` brings PyTorch; the runtime runs the exported ONNX
models through ``edgehdr.infer`` and never needs it.
"""
