#!/usr/bin/env python3
"""PyTorch check of a classifier export (a layer list: MLP, CNN, ResNet with batch norms): builds
the module from the file's metadata (`ringsgd.pytorch_source` exec'd first when present, for
`Residual`), load_state_dict (strict: parameters and buffers, running statistics included),
model.eval(), and prints the test accuracy on Fashion-MNIST's t10k files normalised as the
metadata says — to compare with `ringsgd evaluate`. Usage: python torch_export_check.py MODEL.safetensors
(PyTorch is never a dependency of ringsgd.)"""
import gzip, json, sys
import numpy as np, torch
from torch import nn
from safetensors import safe_open
from safetensors.torch import load_file

torch.set_num_threads(1)
path = sys.argv[1]
with safe_open(path, "pt") as f:
    meta = f.metadata()
scope = {"nn": nn, "torch": torch}
if "ringsgd.pytorch_source" in meta:
    exec(meta["ringsgd.pytorch_source"], scope)
model = eval(meta["ringsgd.pytorch"], scope)
model.load_state_dict(load_file(path))
norm = json.loads(meta["ringsgd.normalization"])
d = "/usr/share/datasets/fashion-mnist/"
x = np.frombuffer(gzip.open(d + "t10k-images-idx3-ubyte.gz").read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
y = torch.from_numpy(np.frombuffer(gzip.open(d + "t10k-labels-idx1-ubyte.gz").read(), np.uint8, offset=8).astype(np.int64))
x = (torch.from_numpy(x.astype(np.float32)) / 255 - norm["mean"]) / norm["std"]
model.eval()
with torch.no_grad():
    correct = sum(int((model(x[i:i + 1000]).argmax(1) == y[i:i + 1000]).sum()) for i in range(0, len(y), 1000))
print(f"pytorch {torch.__version__}: test accuracy {correct / len(y):.4f} ({len(y)} samples, model.eval())")
