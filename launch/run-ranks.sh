# Sourced by the launchers: run_ranks MPIRUN_ARGUMENTS… runs mpirun and makes the job's cause
# the last line the user sees.
#
# mpirun runs with -q, which drops its ~11-line "Primary job terminated normally, but…" notes.
# Then, if the job failed: the first "ringsgd: error:" line a rank printed is printed again
# unless it already is the last line (MPI_Abort's notice can follow it); if no rank printed
# one (a rank was killed, crashed or ran out of memory), a line says so and how to continue.
run_ranks() {
  local log status line
  log=$(mktemp)
  set +e
  # stdout goes straight through (fd 3); stderr through tee into $log and back to stderr.
  { mpirun -q "$@" 2>&1 1>&3 3>&- | tee "$log" >&2; } 3>&1
  status=${PIPESTATUS[0]}
  set -e
  if [ "$status" -ne 0 ]; then
    line=$(grep -a -m1 '^ringsgd: error:' "$log" || true)
    if [ -n "$line" ]; then
      [ "$(tail -n1 "$log")" == "$line" ] || echo "$line" >&2
    else
      local why="exit status $status"
      [ "$status" -gt 128 ] && why="a rank was killed by signal $((status - 128))"
      echo "ringsgd: error: the job ended abnormally ($why); every rank was stopped. 'train … --resume' continues from the newest checkpoint in the run directory" >&2
    fi
  fi
  rm -f "$log"
  return "$status"
}
