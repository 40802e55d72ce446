#!/usr/bin/env python3
"""PyTorch check of a GPT export: rebuilds the module from the file's own metadata
(ringsgd.pytorch_source, ringsgd.pytorch), loads the tensors with load_state_dict (strict), and
computes the validation loss on the windows `ringsgd evaluate` uses for data.dataset: text —
the corpus's bytes (a directory's regular files sorted, .dat/.u8 and links skipped), the tail
after floor(n * (1 - val_fraction)), W windows from 0 every floor((n - T - 1) / W) bytes.
Usage: python torch_gpt_check.py MODEL.safetensors [--text PATH ...] [--val-fraction 0.1] [--val-windows 64]
(PyTorch is never a dependency of ringsgd.)"""
import argparse, json, os
import torch, torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("--text", nargs="+", default=["/usr/share/games/fortunes"])
ap.add_argument("--val-fraction", type=float, default=0.1)
ap.add_argument("--val-windows", type=int, default=64)
args = ap.parse_args()
torch.set_num_threads(1)

with safe_open(args.model, "pt") as f:
    meta = f.metadata()
scope = {}
exec(meta["ringsgd.pytorch_source"], scope)
model = eval(meta["ringsgd.pytorch"], scope)
model.load_state_dict(load_file(args.model))
model.eval()
block = json.loads(meta["ringsgd.gpt"])["block_size"]

data = b""
for path in args.text:
    if os.path.isdir(path):
        for name in sorted(os.listdir(path)):
            full = os.path.join(path, name)
            if name.endswith((".dat", ".u8")) or os.path.islink(full) or not os.path.isfile(full):
                continue
            data += open(full, "rb").read()
    else:
        data += open(path, "rb").read()
held = torch.tensor(list(data[int(len(data) * (1 - args.val_fraction)):]), dtype=torch.long)
span = len(held) - block - 1
step = max(1, span // args.val_windows) if args.val_windows > 0 else block
starts = list(range(0, span, step))[:args.val_windows] if args.val_windows > 0 else list(range(0, span + 1, block))
x = torch.stack([held[s:s + block] for s in starts]); y = torch.stack([held[s + 1:s + block + 1] for s in starts])
with torch.no_grad():
    loss = sum(float(F.cross_entropy(model(x[i:i + 16]).flatten(0, 1), y[i:i + 16].flatten(), reduction="sum"))
               for i in range(0, len(starts), 16)) / y.numel()
print(f"pytorch {torch.__version__}: validation loss {loss:.6f} over {len(starts)} windows of {block} bytes")
