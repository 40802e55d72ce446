#!/usr/bin/env python3
"""PyTorch reference for `ringsgd bench compute`: one core, the same mlp/cnn (batch 128, SGD
momentum 0.9), configs/fashion-resnet.yaml's ResNet (batch 64, a rank's share at np 2; SGD
momentum 0.9, weight decay 5e-4), or GPT (configs/tiny-gpt.yaml's: 4 blocks, width 128, 16 windows of 128 bytes,
AdamW with weight decay on matrices), a full training step (forward, cross-entropy, backward,
update), 5 warm-up + 30 timed steps, median. Usage: python torch_step.py mlp|cnn|resnet|gpt
(PyTorch is never a dependency of ringsgd.) The GPT is the module of ringsgd's exports, read
from Sources/ModelFiles/GPTModuleSource.swift."""
import os, statistics, sys, time, torch, torch.nn as nn, torch.nn.functional as F
torch.set_num_threads(1)
model = sys.argv[1]
batch = {"gpt": 16, "resnet": 64}.get(model, 128)
if model == "gpt":
    source = open(os.path.join(os.path.dirname(__file__), "../../Sources/ModelFiles/GPTModuleSource.swift")).read()
    scope = {}
    exec(source.split('"""')[1].split("\n", 1)[1], scope)
    net = scope["GPT"](256, 128, 4, 4, 128)
    for n, w in net.named_parameters():
        if w.dim() >= 2: torch.nn.init.normal_(w, 0.0, 0.02)
    matrices = [p for p in net.parameters() if p.dim() >= 2]; rest = [p for p in net.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": matrices, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}], lr=1e-3, betas=(0.9, 0.95))
    x = torch.randint(0, 256, (batch, 128)); y = torch.randint(0, 256, (batch, 128))
    loss = lambda: F.cross_entropy(net(x).flatten(0, 1), y.flatten())
elif model == "mlp":
    net = nn.Sequential(nn.Flatten(), nn.Linear(784,512), nn.ReLU(), nn.Linear(512,256), nn.ReLU(), nn.Linear(256,10))
elif model == "resnet":
    class Block(nn.Module):
        """A basic block: conv-BN-ReLU-conv-BN plus the shortcut (a 1×1 conv + BN when the shape changes)."""
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.layers = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                                        nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
            self.shortcut = nn.Sequential() if stride == 1 and cin == cout else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        def forward(self, x): return self.layers(x) + self.shortcut(x)
    stages = [(16, 16, 1), (16, 16, 1), (16, 32, 2), (32, 32, 1), (32, 64, 2), (64, 64, 1)]
    net = nn.Sequential(nn.Conv2d(1, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                        *[m for cin, cout, s in stages for m in (Block(cin, cout, s), nn.ReLU())],
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))
else:
    net = nn.Sequential(nn.Conv2d(1,32,3,padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32,64,3,padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear(3136,128), nn.ReLU(), nn.Linear(128,10))
if model != "gpt":
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4 if model == "resnet" else 0)
    x = torch.randn(batch,1,28,28); y = torch.randint(0,10,(batch,))
    loss = lambda: F.cross_entropy(net(x), y)
times=[]
for i in range(35):
    t=time.perf_counter(); opt.zero_grad(set_to_none=True); loss().backward(); opt.step(); times.append(time.perf_counter()-t)
t=statistics.median(times[5:])   # the mean of the two middle values, as ringsgd's median
tokens = f" ({batch*128/t:.0f} tokens/s)" if model == "gpt" else ""
print(f"torch {torch.__version__} {model} batch {batch}: {batch/t:.0f} samples/s{tokens}, {t*1e3:.2f} ms/step (median of 30, 1 thread)")
