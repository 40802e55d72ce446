# The peer's Python and script, for the launch/peer scripts (sourced once `root` and `fail` are
# set): PEER_PY (default ~/.cache/ringsgd-peer/venv/bin/python, made by ../shared/peer/setup.sh),
# PEER_SCRIPT (default ../shared/peer/torch_ddp.py, beside this checkout).
py=${PEER_PY:-$HOME/.cache/ringsgd-peer/venv/bin/python}
script=${PEER_SCRIPT:-$root/../shared/peer/torch_ddp.py}
[ -x "$py" ] || fail "no PyTorch venv at $py; make it with ../shared/peer/setup.sh (or set PEER_PY)"
[ -f "$script" ] || fail "no $script; set PEER_SCRIPT to torch_ddp.py"
