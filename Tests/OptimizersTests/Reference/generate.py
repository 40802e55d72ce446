#!/usr/bin/env python3
"""Generates reference.json: torch.optim trajectories and lr_scheduler values.

Run with any Python that has torch (the peer's venv: ../shared/peer/setup.sh):
    ~/.cache/ringsgd-peer/venv/bin/python Tests/OptimizersTests/Reference/generate.py
Each optimizer case: two parameter tensors (a 4x3 "weight" and a 4 "bias": the flat
buffer's two layer views), a fixed 30-step gradient sequence, and the flat parameters after
every step. LARS and LAMB are not in torch.optim; they are written here in float32 torch
ops from the papers' formulas (the same ones our doc comments cite).
"""
import json
import math
import os

import torch

STEPS = 30
torch.manual_seed(0)
W0 = torch.randn(4, 3) * 0.5
B0 = torch.randn(4) * 0.1
GRADS = [(torch.randn(4, 3) * (0.5 + 0.5 * math.sin(t)), torch.randn(4) * 0.3) for t in range(STEPS)]


def flat(ps):
    return torch.cat([p.detach().reshape(-1) for p in ps]).tolist()


def run_torch(make):
    w, b = W0.clone().requires_grad_(True), B0.clone().requires_grad_(True)
    opt = make([w, b])
    out = []
    for gw, gb in GRADS:
        w.grad, b.grad = gw.clone(), gb.clone()
        opt.step()
        out.append(flat([w, b]))
    return out


def run_lars(lr, momentum, wd, eta):
    ps = [W0.clone(), B0.clone()]
    bufs = [torch.zeros_like(p) for p in ps]
    out = []
    for grads in GRADS:
        for p, g, buf in zip(ps, grads, bufs):
            wn, gn = float(p.double().norm()), float(g.double().norm())
            trust = eta * wn / (gn + wd * wn) if wn > 0 and gn > 0 else 1.0
            d = g + wd * p
            buf.mul_(momentum).add_(torch.tensor(trust, dtype=torch.float32) * d)
            p.sub_(torch.tensor(lr, dtype=torch.float32) * buf)
        out.append(flat(ps))
    return out


def run_lamb(lr, b1, b2, eps, wd):
    ps = [W0.clone(), B0.clone()]
    ms = [torch.zeros_like(p) for p in ps]
    vs = [torch.zeros_like(p) for p in ps]
    out = []
    for t, grads in enumerate(GRADS, start=1):
        bc1, bc2 = torch.tensor(1 - b1 ** t, dtype=torch.float32), torch.tensor(1 - b2 ** t, dtype=torch.float32)
        for p, g, m, v in zip(ps, grads, ms, vs):
            m.mul_(b1).add_((1 - b1) * g)
            v.mul_(b2).add_((1 - b2) * g * g)
            r = (m / bc1) / ((v / bc2).sqrt() + eps) + wd * p
            wn, rn = float(p.double().norm()), float(r.double().norm())
            scale = lr * (wn / rn if wn > 0 and rn > 0 else 1.0)
            p.sub_(torch.tensor(scale, dtype=torch.float32) * r)
        out.append(flat(ps))
    return out


cases = []
for momentum in [0.0, 0.9]:
    for nesterov in [False, True]:
        if nesterov and momentum == 0:
            continue
        for dampening in ([0.0] if nesterov else [0.0, 0.5]):
            for wd in [0.0, 1e-2]:
                for lr in [0.1, 1e-3]:
                    o = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=wd, nesterov=nesterov)
                    cases.append(dict(optimizer="sgd", options=o,
                                      trajectory=run_torch(lambda ps: torch.optim.SGD(ps, **o))))
for name, cls in [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)]:
    for amsgrad in [False, True]:
        for wd in [0.0, 1e-2]:
            for lr in [1e-2, 1e-3]:
                o = dict(lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=wd, amsgrad=amsgrad)
                cases.append(dict(optimizer=name, options=dict(o, betas=list(o["betas"])),
                                  trajectory=run_torch(lambda ps: cls(ps, **o))))
# An eps of the order of sqrt(v-hat) (gradients ~0.3-1 here): where it sits (after the square
# root, after bias correction) and that it is there at all then show at 1e-6; at 1e-8 they do not.
for name, cls in [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)]:
    o = dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-3, weight_decay=1e-2, amsgrad=False)
    cases.append(dict(optimizer=name, options=dict(o, betas=list(o["betas"])),
                      trajectory=run_torch(lambda ps: cls(ps, **o))))
for centered in [False, True]:
    for momentum in [0.0, 0.9]:
        for wd in [0.0, 1e-2]:
            o = dict(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=wd, momentum=momentum, centered=centered)
            cases.append(dict(optimizer="rmsprop", options=o,
                              trajectory=run_torch(lambda ps: torch.optim.RMSprop(ps, **o))))
for momentum in [0.0, 0.9]:
    for wd in [0.0, 1e-3]:
        o = dict(lr=0.5, momentum=momentum, weight_decay=wd, trust_coefficient=0.01)
        cases.append(dict(optimizer="lars", options=o, trajectory=run_lars(0.5, momentum, wd, 0.01)))
for wd in [0.0, 1e-2]:
    o = dict(lr=1e-2, betas=[0.9, 0.999], eps=1e-6, weight_decay=wd)
    cases.append(dict(optimizer="lamb", options=o, trajectory=run_lamb(1e-2, 0.9, 0.999, 1e-6, wd)))


def schedule_values(make, steps=40, base=0.1):
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=base)
    sched = make(opt)
    values = []
    for _ in range(steps):
        values.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return values


S = torch.optim.lr_scheduler
schedules = [
    dict(kind="step", options=dict(step_size=7, gamma=0.5), values=schedule_values(lambda o: S.StepLR(o, 7, 0.5))),
    dict(kind="multistep", options=dict(milestones=[5, 12, 30], gamma=0.3),
         values=schedule_values(lambda o: S.MultiStepLR(o, [5, 12, 30], 0.3))),
    dict(kind="exponential", options=dict(gamma=0.93), values=schedule_values(lambda o: S.ExponentialLR(o, 0.93))),
    dict(kind="cosine", options=dict(t_max=30, eta_min=0.001),
         values=schedule_values(lambda o: S.CosineAnnealingLR(o, 30, 0.001))),
    dict(kind="linear", options=dict(start_factor=0.25, end_factor=1.0, total_iters=8),
         values=schedule_values(lambda o: S.LinearLR(o, 0.25, 1.0, 8))),
    dict(kind="warmup_cosine", options=dict(warmup=6, start_factor=0.1, t_max=34),
         values=schedule_values(lambda o: S.SequentialLR(o, [S.LinearLR(o, 0.1, 1.0, 6), S.CosineAnnealingLR(o, 34)], [6]))),
    dict(kind="onecycle", options=dict(max_lr=0.4, total_steps=40),
         values=schedule_values(lambda o: S.OneCycleLR(o, max_lr=0.4, total_steps=40))),
]


def momentum_values(make_optimizer, key, steps=40):
    """OneCycleLR's default cycle_momentum: the momentum (SGD) or beta1 (Adam) before each step."""
    p = torch.zeros(1, requires_grad=True)
    opt = make_optimizer([p])
    sched = S.OneCycleLR(opt, max_lr=0.4, total_steps=steps)
    values = []
    for _ in range(steps):
        group = opt.param_groups[0]
        values.append(group["momentum"] if key == "momentum" else group["betas"][0])
        opt.step()
        sched.step()
    return values


cycled_momentum = [
    dict(optimizer="sgd", values=momentum_values(lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9), "momentum")),
    dict(optimizer="adam", values=momentum_values(lambda ps: torch.optim.Adam(ps, lr=0.1), "beta1")),
]



def run_onecycle(make_optimizer, max_lr):
    """Parameters after each step of the optimizer under OneCycleLR (cycle_momentum on): the rate
    and the momentum (beta1) the schedule sets reach the update."""
    w, b = W0.clone().requires_grad_(True), B0.clone().requires_grad_(True)
    opt = make_optimizer([w, b])
    sched = S.OneCycleLR(opt, max_lr=max_lr, total_steps=STEPS)
    out = []
    for gw, gb in GRADS:
        w.grad, b.grad = gw.clone(), gb.clone()
        opt.step()
        sched.step()
        out.append(flat([w, b]))
    return out


onecycle_trajectories = [
    dict(optimizer="sgd", max_lr=0.4, trajectory=run_onecycle(lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9), 0.4)),
    dict(optimizer="adam", max_lr=0.01, trajectory=run_onecycle(lambda ps: torch.optim.Adam(ps, lr=0.01), 0.01)),
]

here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "reference.json"), "w") as f:
    json.dump(dict(torch=torch.__version__, initial=flat([W0, B0]),
                   gradients=[flat(g) for g in GRADS], optimizers=cases, schedules=schedules,
                   onecycle_momentum=cycled_momentum, onecycle_trajectories=onecycle_trajectories), f)
print(f"wrote {len(cases)} optimizer cases and {len(schedules)} schedules (torch {torch.__version__})")
