#!/usr/bin/env python3
"""PyTorch reference for `ringsgd bench compute`: one core, the same mlp/cnn, batch 128, a full
training step (forward, cross-entropy, backward, SGD momentum 0.9), 5 warm-up + 30 timed steps,
median. Usage: python torch_step.py mlp|cnn  (PyTorch is never a dependency of ringsgd.)"""
import sys, time, torch, torch.nn as nn, torch.nn.functional as F
torch.set_num_threads(1)
model = sys.argv[1]
if model == "mlp":
    net = nn.Sequential(nn.Flatten(), nn.Linear(784,512), nn.ReLU(), nn.Linear(512,256), nn.ReLU(), nn.Linear(256,10))
else:
    net = nn.Sequential(nn.Conv2d(1,32,3,padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32,64,3,padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear(3136,128), nn.ReLU(), nn.Linear(128,10))
opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
x = torch.randn(128,1,28,28); y = torch.randint(0,10,(128,))
times=[]
for i in range(35):
    t=time.perf_counter(); opt.zero_grad(set_to_none=True); F.cross_entropy(net(x), y).backward(); opt.step(); times.append(time.perf_counter()-t)
t=sorted(times[5:])[15]
print(f"torch {torch.__version__} {model} batch 128: {128/t:.0f} samples/s, {t*1e3:.2f} ms/step (median of 30, 1 thread)")
