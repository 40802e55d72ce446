# Sourced by the launchers: run_ranks MPIRUN_ARGUMENTS… runs mpirun and makes the job's cause
# the last line the user sees.
#
# mpirun's own notes after a failure ("Primary job terminated normally, but…", "MPI_ABORT was
# invoked…", "mpirun noticed that process rank…", "mpirun detected that one or more
# processes exited…", across hosts "An MPI communication peer process has unexpectedly
# disconnected…": 11–16 lines each) are dropped from what is
# shown — other mpirun messages (no slots, a daemon that cannot start) pass through. Then,
# if the job failed: the first "ringsgd: error:" line a rank printed is printed again unless it
# already is the last line; if no rank printed one (a rank was killed, crashed or ran out of
# memory), a line names the rank mpirun saw die, and says how to continue. Ctrl-C or SIGTERM
# to the job's process group (what a terminal, `timeout` and schedulers send) ends every rank
# and is reported as an interruption, with exit status 130 or 143 as shells expect.
# MPIRUN_ARGS, the user's extra mpirun options, split at white space and never glob-expanded
# ("eth*" reaches mpirun as written): every launcher passes "${mpirun_extra[@]}".
read -r -a mpirun_extra <<< "${MPIRUN_ARGS:-}"

# repeat_first_error LOG LAST_SHOWN: prints LOG's first "ringsgd: error:" line again unless it is
# already the last line shown; fails when LOG holds none (the job died without saying why).
repeat_first_error() {
  local line
  line=$(grep -a -m1 '^ringsgd: error:' "$1" || true)
  [ -n "$line" ] || return 1
  [ "$2" == "$line" ] || echo "$line" >&2
}

# filter_mpirun_notes SHOWN [EXTRA]: stdin to stdout without mpirun's notes after a failure
# (and its notes whose text matches the awk pattern EXTRA); the last non-empty line shown goes
# to the file SHOWN.
filter_mpirun_notes() {
  # mawk reads its input in blocks unless told it is interactive: lines would show late.
  local live=()
  [[ "$(awk -W version 2>&1 | head -n1)" == mawk* ]] && live=(-W interactive)
  awk "${live[@]}" -v shown="$1" -v extra="${2:-}" '
      length($0) >= 60 && /^-+$/ {   # mawk has no {n,} intervals
        if (inblock) { inblock = 0; if (!boiler) { printf "%s%s\n", block, $0; fflush(); last = $0 } block = ""; boiler = 0 }
        else { inblock = 1; block = $0 "\n" }
        next
      }
      inblock {
        block = block $0 "\n"
        if ($0 ~ /Primary job +terminated normally|mpirun noticed that process rank|mpirun detected that one or more processes exited|MPI_ABORT was invoked|Per user-direction|peer process has unexpectedly disconnected/) boiler = 1
        if (extra != "" && $0 ~ extra) boiler = 1
        next
      }
      extra != "" && $0 ~ extra { next }
      { print; fflush(); if ($0 != "") last = $0 }
      END { if (inblock && !boiler) printf "%s", block; print last > shown }'
}

# The traps' work: the first signal stops the job (SIGTERM to mpirun), later ones are noted only.
_run_ranks_stop() {
  [ -z "$interrupted" ] || return 0
  interrupted=$1
  [ -z "$mpirun_pid" ] || kill -TERM "$mpirun_pid" 2>/dev/null || true
  : >"$log.stop" 2>/dev/null || true   # for the guard: mpirun has its SIGTERM
}

# The guard of a job (bash -c, with the launcher's pid, mpirun's and the launcher's temporary
# files): it waits while both run. When the launcher is gone first — SIGKILL, which no trap
# sees (`kill -9` of its group, `timeout -s KILL`) — mpirun, in a group of its own, would run
# on with every rank: the guard sends it the SIGTERM the trap would have (none if the trap
# sent it already, the launcher killed while mpirun stopped the ranks: one stop, as the traps
# allow), waits up to 30 s for it to stop them, then kills whatever is left in its session
# (a hung mpirun, a rank it did not reach), and removes the files the launcher left.
# It runs in a session of its own, so the signal that killed the launcher's group does not
# reach it. A zombie counts as gone (a killed launcher not yet reaped by its parent).
_run_ranks_guard='
  alive() { local s; s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1; s=${s##*) }; [ "${s%% *}" != Z ]; }
  while alive "$1"; do
    alive "$2" || exit 0
    sleep 1
  done
  alive "$2" || exit 0
  [ -e "$3.stop" ] || kill -TERM "$2" 2>/dev/null
  for i in $(seq 150); do alive "$2" || break; sleep 0.2; done
  pkill -KILL -s "$2" 2>/dev/null
  sleep 1   # the display pipeline writes its last line, then ends
  rm -f "$3" "$3.stop" "$4"'

# The launcher's temporary files (the guard removes the same ones when the launcher is gone).
_run_ranks_cleanup() { rm -f "$log" "$log.stop" "$shown"; }

run_ranks() {
  local log shown status lost interrupted="" callers_traps mpirun_pid display_pid guard_pid a resume="" continues=""
  log=$(mktemp)
  shown=$(mktemp)   # the last line the user saw
  # The advice after an interruption or a failure: a training run continues with --resume.
  for a in "$@"; do [ "$a" = train ] && resume=1; done
  if [ -n "$resume" ]; then
    continues=" 'train … --resume' continues from the run directory's newest checkpoint, if it has one (checkpoint.every_steps)"
  fi
  # mpirun runs in the background in a process group of its own, its stderr into the log,
  # which a follower filters onto our stderr; the launcher waits in `wait`, which a trapped
  # signal interrupts at once. Whether a signal went to the launcher's process group (Ctrl-C,
  # `timeout`, a scheduler, a closed terminal's SIGHUP) or to the launcher alone (`kill PID`, a
  # supervisor's terminate(), which used to reach no one until the job had ended), mpirun gets
  # one SIGTERM, from the trap, and stops every rank before it exits (signalled twice it exits
  # at once, ranks still running: later signals are not passed on). SIGKILL cannot be trapped
  # and does not reach mpirun's group: a guard in a session of its own (`_run_ranks_guard`)
  # stops the job when the launcher is gone while mpirun still runs. The caller's
  # traps (the simulated cluster's teardown) are put back afterwards. Every rank says it started
  # (RINGSGD_SAY_STARTED; the line is not shown): a failed job without it never ran.
  callers_traps=$(trap -p INT TERM HUP QUIT)
  mpirun_pid=""
  trap '_run_ranks_stop INT' INT
  trap '_run_ranks_stop TERM' TERM
  trap '_run_ranks_stop HUP' HUP
  trap '_run_ranks_stop QUIT' QUIT
  set +e
  setsid mpirun -x RINGSGD_SAY_STARTED=1 "$@" 2>"$log" &
  mpirun_pid=$!
  # A signal that came before mpirun's pid was known.
  [ -n "$interrupted" ] && kill -TERM "$mpirun_pid" 2>/dev/null
  setsid bash -c "$_run_ranks_guard" guard "$$" "$mpirun_pid" "$log" "$shown" </dev/null >/dev/null 2>&1 &
  guard_pid=$!
  { tail -n +1 -s 0.1 -F --pid="$mpirun_pid" "$log" 2>/dev/null \
      | grep -a --line-buffered -v -e '^mpirun: Forwarding signal' -e '^ringsgd: rank [0-9?]* started$' \
      | filter_mpirun_notes "$shown" >&2; } &
  display_pid=$!
  while :; do
    wait "$mpirun_pid"
    status=$?
    # Above 128 with mpirun still running: the wait was cut short by a signal's trap.
    if [ "$status" -gt 128 ] && kill -0 "$mpirun_pid" 2>/dev/null; then continue; fi
    break
  done
  wait "$display_pid"
  kill "$guard_pid" 2>/dev/null
  wait "$guard_pid" 2>/dev/null
  set -e
  trap - INT TERM HUP QUIT
  eval "$callers_traps"
  if [ -n "$interrupted" ] && [ "$status" -ne 0 ]; then
    echo "ringsgd: interrupted (SIG$interrupted): every rank was stopped.$continues" >&2
    _run_ranks_cleanup
    case "$interrupted" in INT) return 130 ;; HUP) return 129 ;; QUIT) return 131 ;; *) return 143 ;; esac
  fi
  if [ "$status" -ne 0 ]; then
    if ! repeat_first_error "$log" "$(cat "$shown")"; then
      lost=$(sed -n 's/.*process rank \([0-9]*\) with PID [0-9]* on node \([^ ]*\) exited on signal \([0-9]*\).*/rank \1 (on host \2) was killed by signal \3/p' "$log" | head -n1)
      if [ -z "$lost" ] && ! grep -aq '^ringsgd: rank [0-9?]* started$' "$log"; then
        # No rank started: mpirun could not start the job (a host it cannot reach, a
        # hostfile it cannot read, an option it does not know).
        echo "ringsgd: error: mpirun could not start the job (exit status $status; its message is above): check the hostfile, the host names and MPIRUN_ARGS" >&2
        _run_ranks_cleanup
        return "$status"
      fi
      if [ -z "$lost" ]; then
        lost="exit status $status"
        [ "$status" -gt 128 ] && [ "$status" -lt 255 ] && lost="a rank was killed by signal $((status - 128))"
      fi
      echo "ringsgd: error: the job ended abnormally: $lost; every rank was stopped.$continues" >&2
    fi
  fi
  _run_ranks_cleanup
  return "$status"
}
