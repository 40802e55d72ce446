#!/usr/bin/env bash
# A training job that heals itself: runs `ringsgd train` under mpirun on the hosts that answer,
# and when a rank or a host dies, relaunches it on the survivors from the newest checkpoint —
# without a human. When a lost host answers again (or discovery lists a new one), the job
# grows back at its next checkpoint, replica check, evaluation or epoch end.
#
#   launch/elastic.sh HOSTS [options] -- train --config … --run-dir DIR …
#   launch/elastic.sh --simulated-hosts 4 --rate 1gbit --min-hosts 2 -- train --config configs/fashion-cnn.yaml
#
# HOSTS, one of:
#   --hostfile FILE        "host slots=K" lines (OpenMPI's format); hosts reached by ssh,
#                          probed with `ssh host true`
#   --discover CMD         a command printing one "host slots" (or "host:slots") line per
#                          usable host, as Horovod's host discovery script; run before every
#                          launch and every --probe-every seconds (a host it stops listing is lost)
#   --slurm                the nodes of the SLURM allocation this runs in (sbatch, salloc;
#                          launch/slurm.sbatch does it with RINGSGD_ELASTIC set); ranks are
#                          started by srun --mpi=pmix on the nodes left, a node is probed with a
#                          one-task `srun --overlap`. Submit with --no-kill, so that SLURM does
#                          not end the allocation when one of its nodes fails
#   --simulated-hosts N    N simulated hosts on this machine (launch/simhosts.sh, as
#                          launch/simcluster.sh), created here and torn down on every exit;
#                          with --rate R (required), --ranks-per-host K, --local-dir PATH (each
#                          host sees a disk of its own at PATH: put the run directory there;
#                          the disks stay, as PATH/.simulated-disk-h1 … from this machine)
# Options:
#   --min-hosts M          launch only on at least M answering hosts (default 1); wait for them
#   --max-restarts R       relaunches after failures before giving up (default 3; growing
#                          back does not count)
#   --probe-every S        seconds between probes of the hosts while the job runs (default 2)
#   --cooldown S           a host where a rank died, or that stopped answering, rejoins only
#                          after answering for S seconds (default 10); while the job is down
#                          it is not asked for the first S seconds, so there it rejoins 2×S
#                          after it was lost at the earliest
#   --wait S               longest wait for --min-hosts answering hosts (default 300)
#
# What counts as lost: a host that stops answering the probe (its link down, ssh failing,
# discovery no longer listing it) — the job is then stopped at once instead of waiting for
# comm.timeout_seconds — and a host on which mpirun saw a rank or its daemon die, or for
# which a rank waited past comm.timeout_seconds. A job that fails with every host healthy (a
# configuration error, a NaN run) ends the supervisor for good with the job's own last line.
# Relaunches pass `--resume-if-present` (and drop --resume, --overwrite): the run continues
# from the newest checkpoint any surviving host holds (checkpoint.replicate: per_host keeps one
# on every host whose run directory is its own). Every event is one line "elastic: …"; the
# last sums up restarts, hosts lost and added, and steps redone.
#
# Growing back stops the job with a checkpoint at its next periodic checkpoint, replica check,
# evaluation or epoch end (SIGUSR1, which mpirun forwards to every rank). A stop it did
# not ask for (SLURM's time-limit warning) ends the supervision, the run saved. Needs root for --simulated-hosts. Environment:
# ELASTIC_LOG_DIR (keep each job's whole output there, job-1.log, job-2.log, …), MPIRUN_ARGS
# (extra mpirun options; not used under --slurm, whose ranks srun starts: RINGSGD_SRUN_MPI names
# its --mpi plugin, pmix by default).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
fail() { echo "elastic: error: $*" >&2; exit 2; }
say() { echo "elastic: $*" >&2; }
# shellcheck source=launch/simhosts.sh
source "$root/launch/simhosts.sh"
# shellcheck source=launch/run-ranks.sh
source "$root/launch/run-ranks.sh"
usage="usage: launch/elastic.sh (--hostfile FILE | --discover CMD | --slurm | --simulated-hosts N --rate R [--ranks-per-host K] [--local-dir PATH]) [--min-hosts M] [--max-restarts R] [--probe-every S] [--cooldown S] [--wait S] -- train …"

hostfile="" discover="" simulated="" slurm="" rate="" per_host=1 local_dir=""
min_hosts=1 max_restarts=3 probe_every=2 cooldown=10 wait_limit=300
while [ $# -gt 0 ]; do
  case "$1" in
    --hostfile) hostfile=${2-}; shift 2 || fail "--hostfile needs a value; $usage" ;;
    --discover) discover=${2-}; shift 2 || fail "--discover needs a value; $usage" ;;
    --slurm) slurm=1; shift ;;
    --simulated-hosts) simulated=${2-}; shift 2 || fail "--simulated-hosts needs a value; $usage" ;;
    --rate) rate=${2-}; shift 2 || fail "--rate needs a value; $usage" ;;
    --ranks-per-host) per_host=${2-}; shift 2 || fail "--ranks-per-host needs a value; $usage" ;;
    --local-dir) local_dir=${2-}; shift 2 || fail "--local-dir needs a value; $usage" ;;
    --min-hosts) min_hosts=${2-}; shift 2 || fail "--min-hosts needs a value; $usage" ;;
    --max-restarts) max_restarts=${2-}; shift 2 || fail "--max-restarts needs a value; $usage" ;;
    --probe-every) probe_every=${2-}; shift 2 || fail "--probe-every needs a value; $usage" ;;
    --cooldown) cooldown=${2-}; shift 2 || fail "--cooldown needs a value; $usage" ;;
    --wait) wait_limit=${2-}; shift 2 || fail "--wait needs a value; $usage" ;;
    --) shift; break ;;
    -h|--help) sed -n '2,/^[^#]/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) fail "unknown option '$1'; $usage" ;;
  esac
done
sources=0
for s in "$hostfile" "$discover" "$simulated" "$slurm"; do [ -z "$s" ] || sources=$((sources + 1)); done
[ "$sources" -eq 1 ] || fail "give the hosts one way: --hostfile FILE, --discover CMD, --slurm or --simulated-hosts N; $usage"
for pair in "min-hosts:$min_hosts" "max-restarts:$max_restarts" "probe-every:$probe_every" "cooldown:$cooldown" "wait:$wait_limit" "ranks-per-host:$per_host"; do
  [[ "${pair#*:}" =~ ^[0-9]+$ ]] || fail "--${pair%%:*} must be a whole number, got '${pair#*:}'"
done
# Base 10 from here on: shell arithmetic reads "08" as a bad octal number.
min_hosts=$((10#$min_hosts)) max_restarts=$((10#$max_restarts)) probe_every=$((10#$probe_every))
cooldown=$((10#$cooldown)) wait_limit=$((10#$wait_limit)) per_host=$((10#$per_host))
[ "$min_hosts" -ge 1 ] || fail "--min-hosts must be at least 1"
[ "$probe_every" -ge 1 ] || fail "--probe-every must be at least 1 second"
[ "$per_host" -ge 1 ] || fail "--ranks-per-host must be at least 1"
[ $# -gt 0 ] && [ "$1" = train ] || fail "put 'train' and its arguments after --: only training heals itself; $usage"
[ -z "$local_dir" ] || [ -n "$simulated" ] || fail "--local-dir simulates node-local disks: it goes with --simulated-hosts"
# The simulated hosts' link rate and slots: with real hosts the hostfile, discovery or SLURM says.
[ -z "$rate" ] || [ -n "$simulated" ] || fail "--rate shapes the simulated hosts' links: it goes with --simulated-hosts"
[ "$per_host" -eq 1 ] || [ -n "$simulated" ] || fail "--ranks-per-host is the simulated hosts' slots: it goes with --simulated-hosts (real hosts' slots come from the hostfile, discovery or SLURM)"
[ -z "$local_dir" ] || [[ "$local_dir" == /* ]] || fail "--local-dir must be an absolute path, got '$local_dir'"
train=("$@")
# What a relaunch runs: resume if any host holds a checkpoint; never delete them again.
relaunch=()
for a in "${train[@]}"; do case "$a" in --resume|--overwrite) ;; *) relaunch+=("$a") ;; esac; done
relaunch+=(--resume-if-present)

# The hosts: names (shown), addresses (the hostfile's), slots; when each was lost (0: never)
# and since when it has answered without a break (0: not answering).
names=() addrs=() slots=() lost_at=() answering_since=()
add_host() {   # NAME ADDRESS SLOTS
  local i
  for i in "${!addrs[@]}"; do [ "${addrs[$i]}" = "$2" ] && { slots[$i]=$3; return 0; }; done
  names+=("$1"); addrs+=("$2"); slots+=("$3"); lost_at+=(0); answering_since+=(0)
}

# The hosts discovery listed, added to those known (new ones become candidates to grow onto).
add_discovered() {
  local host count
  while read -r host count; do [ -z "$host" ] || add_host "$host" "$host" "$count"; done <<<"$discovered"
}
# --discover: "host slots" or "host:slots" lines; anything else is garbage (status 1, the line in $bad).
discovered="" bad=""
discover_hosts() {
  local out line host count
  discovered="" bad=""
  local status=0
  out=$(timeout 30 bash -c "$discover" 2>&1) || status=$?
  if [ "$status" -ne 0 ]; then
    bad="the command failed (exit status $status${out:+: ${out%%$'\n'*}})"
    return 1
  fi
  while IFS= read -r line; do
    [ -n "${line// /}" ] || continue
    if [[ "$line" =~ ^[[:space:]]*([A-Za-z0-9._-]+)(:|[[:space:]]+)([0-9]+)[[:space:]]*$ ]] && [ "${BASH_REMATCH[3]}" -ge 1 ]; then
      host=${BASH_REMATCH[1]} count=$((10#${BASH_REMATCH[3]}))
      discovered+="$host $count"$'\n'
    else
      bad="it printed '$line', not 'host slots'"; return 1
    fi
  done <<<"$out"
  [ -n "$discovered" ] || { bad="it listed no host"; return 1; }
}

work=$(mktemp -d /tmp/elastic.XXXXXX)
tag="re$$" subnet="" job_pid="" display_pid=""
# Ends the running job (mpirun or srun, then everything it started): SIGTERM, then SIGKILL
# after $1 seconds (5 when not given). A job already broken (a host lost, a peer
# gone) is given 2: its ranks end at once on SIGTERM, but srun waits for the lost node's task.
stop_job() {
  [ -n "$job_pid" ] || return 0
  kill -TERM "$job_pid" 2>/dev/null || true
  for _ in $(seq 1 $(( ${1:-5} * 5 ))); do kill -0 "$job_pid" 2>/dev/null || break; sleep 0.2; done
  kill -KILL "$job_pid" 2>/dev/null || true
  wait "$job_pid" 2>/dev/null || true
  [ -z "$simulated" ] || simhosts_kill "$work"
  [ -z "$display_pid" ] || wait "$display_pid" 2>/dev/null || true
  job_pid="" display_pid=""
}
teardown() {
  local status=$?
  trap - EXIT INT TERM
  stop_job
  [ -z "$simulated" ] || simhosts_destroy "$work"
  rm -rf "$work"
  exit "$status"
}
trap teardown EXIT
trap 'say "interrupted: the job was stopped; launch/elastic.sh … again (or train … --resume) continues from the newest checkpoint"; exit 130' INT
trap 'say "terminated: the job was stopped; launch/elastic.sh … again (or train … --resume) continues from the newest checkpoint"; exit 143' TERM

if [ -n "$hostfile" ]; then
  [ -f "$hostfile" ] || fail "--hostfile $hostfile does not exist"
  # `|| [ -n … ]`: a last line without its newline is a host too.
  while read -r host rest || [ -n "${host:-}" ]; do
    [ -n "$host" ] && [[ "$host" != \#* ]] || continue
    # slots=N itself, not max_slots=N; none given: one slot.
    count=$(sed -n 's/\(^\|.*[[:space:]]\)slots=\([^[:space:]]*\).*/\2/p' <<<"$rest")
    if [[ "$rest" =~ (^|[[:space:]])slots= ]]; then
      [[ "$count" =~ ^[0-9]+$ ]] && [ "$count" -ge 1 ] \
        || fail "--hostfile $hostfile: host $host has slots=$count; every host needs a whole number of slots, at least one"
      count=$((10#$count))
    else
      count=1
    fi
    add_host "$host" "$host" "$count"
  done <"$hostfile"
  [ "${#addrs[@]}" -gt 0 ] || fail "--hostfile $hostfile lists no host"
elif [ -n "$slurm" ]; then
  [ -n "${SLURM_JOB_NODELIST:-}" ] || fail "--slurm runs inside a SLURM allocation (sbatch, salloc): SLURM_JOB_NODELIST is not set"
  [[ "${SLURM_NTASKS_PER_NODE:-}" =~ ^[0-9]+$ ]] || fail "--slurm needs the same number of tasks on every node: submit with --ntasks-per-node=K"
  SLURM_NTASKS_PER_NODE=$((10#$SLURM_NTASKS_PER_NODE))
  while read -r node; do
    [ -n "$node" ] || continue
    addr=$( { scontrol show node -o "$node" 2>/dev/null || true; } | sed -n 's/.*NodeAddr=\([^ ]*\).*/\1/p')
    add_host "$node" "${addr:-$node}" "$SLURM_NTASKS_PER_NODE"
  done < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
  [ "${#addrs[@]}" -gt 0 ] || fail "--slurm: scontrol lists no node of the allocation ($SLURM_JOB_NODELIST)"
elif [ -n "$discover" ]; then
  discover_hosts || fail "--discover '$discover': $bad; it must print one 'host slots' line per host"
  add_discovered
else
  [[ "$simulated" =~ ^[0-9]+$ ]] && [ "$simulated" -ge 1 ] && [ "$simulated" -le 64 ] \
    || fail "--simulated-hosts must be a whole number in 1…64, got '$simulated'"
  simulated=$((10#$simulated))
  simhosts_check_rate "$rate"
  [ "$min_hosts" -le "$simulated" ] || fail "--min-hosts $min_hosts is more than the $simulated hosts there are; lower it or add hosts"
  simhosts_probe "$work"
  subnet=$(simhosts_pick_subnet)
  simhosts_create "$tag" "$simulated" "$rate" "$subnet" "$work"
  simhosts_agent "$work" "$subnet" "$tag" "$simulated" "$local_dir"
  for i in $(seq 1 "$simulated"); do
    add_host "h$i" "$subnet.$i" "$per_host"
    say "simulated host h$i is $subnet.$i: network namespace ${tag}h$i, link ${tag}v$i"
  done
fi
if [ -z "$discover" ] && [ "$min_hosts" -gt "${#addrs[@]}" ]; then
  fail "--min-hosts $min_hosts is more than the ${#addrs[@]} hosts there are; lower it or add hosts"
fi

# Whether host i answers now, within $2 seconds (10 when not given).
probe() {
  local i=$1 limit=${2:-10}
  if [ -n "$simulated" ]; then
    local ns="${tag}h$((i + 1))" veth="${tag}v$((i + 1))"
    [ -e "/run/netns/$ns" ] && [[ "$(ip -o link show dev "$veth" 2>/dev/null)" == *"state UP"* ]] \
      && [[ "$(ip -n "$ns" -o link show dev eth0 2>/dev/null)" == *"state UP"* ]]
  elif [ -n "$slurm" ]; then
    # A one-task step beside the job's (--overlap): it cannot start on a node whose slurmd is
    # gone, and waits for it until the timeout (where the node's namespace stays, as in the tests).
    # Asked again after an error (a busy controller can refuse one step on a healthy node), not
    # after the timeout (asking a dead node again would double the wait), nor in a short probe.
    local attempt status
    for attempt in 1 2; do
      status=0
      timeout "$limit" srun --overlap --nodes=1 --ntasks=1 --nodelist="${names[$i]}" --quiet true >/dev/null 2>&1 || status=$?
      [ "$status" -ne 0 ] && [ "$status" -ne 124 ] && [ "$attempt" -eq 1 ] && [ "$limit" -ge 10 ] || return "$status"
      sleep 1
    done
  elif [ -n "$discover" ]; then
    [[ $'\n'"$discovered" == *$'\n'"${addrs[$i]} "* ]]
  else
    # This machine itself answers (mpirun starts its ranks without ssh).
    case "${addrs[$i]}" in localhost|127.0.0.1|::1|"$(hostname)"|"$(hostname -f 2>/dev/null || true)") return 0 ;; esac
    timeout "$limit" ssh -o BatchMode=yes -o ConnectTimeout=$(( limit > 5 ? 5 : limit - 1 )) "${addrs[$i]}" true >/dev/null 2>&1
  fi
}
# Probes every host at once (with "outside": only those not in the running job; never those in
# $known_lost): refreshes discovery and answering_since; prints nothing. While a job runs, a
# host outside it is given 3 s: its answer only decides whether to grow, and a dead host's
# 10 s would hold up the loop that watches the job (and notices its end) as often as it asks.
known_lost=" "
probe_all() {
  local i k now pids=() probed=()
  now=$(date +%s)
  if [ -n "$discover" ]; then
    if discover_hosts; then
      add_discovered
    else
      say "warning: --discover failed ($bad); keeping the hosts it listed before"
      return 0
    fi
  fi
  for i in "${!addrs[@]}"; do
    if [ "${1:-}" = outside ] && [[ " ${current[*]} " == *" $i "* ]]; then continue; fi
    if [[ "$known_lost" == *" $i "* ]]; then answering_since[$i]=0; continue; fi
    if [ -n "${job_pid:-}" ] && [[ " ${current[*]} " != *" $i "* ]]; then probe "$i" 3 & else probe "$i" & fi
    pids+=($!) probed+=("$i")
  done
  for k in "${!pids[@]}"; do
    i=${probed[$k]}
    if wait "${pids[$k]}"; then [ "${answering_since[$i]}" -gt 0 ] || answering_since[$i]=$now
    else answering_since[$i]=0; fi
  done
}
# Hosts usable for a launch: answering, and for --cooldown seconds if they were lost.
usable() {
  local i now
  now=$(date +%s)
  for i in "${!addrs[@]}"; do
    [ "${answering_since[$i]}" -gt 0 ] || continue
    [ "${lost_at[$i]}" -eq 0 ] || [ $((now - answering_since[$i])) -ge "$cooldown" ] || continue
    echo "$i"
  done
}
last_step_in() { { grep -a '^ringsgd: at step ' "$1" || true; } | tail -n1 | awk '{print $4}'; }
host_list() { local i out=""; for i in "$@"; do out+="${out:+, }${names[$i]}"; done; echo "$out"; }

# mpirun's notes about a lost daemon or peer: the supervisor says what happened instead.
lost_notes='unable to reliably start one or more daemons|lost communication with a remote daemon|more process(es)? ha(s|ve) sent help message|orte_base_help_aggregate|^srun: |^slurmstepd(-[^:]*)?: '
binary="$root/.build/release/ringsgd"
if [ -n "$slurm" ]; then
  # Inside an allocation the checkout was built beforehand (a compute node may have no compiler).
  [ -x "$binary" ] || fail "$binary is missing: build on the login node first (launch/build.sh)"
else
  "$root/launch/build.sh"
fi
restarts=0 lost_total=0 added_total=0 redone=0 lost_names="" added_names="" run_id="" previous=()
# A fresh run gets its identity from here, before the first launch: learnt from the job's output
# instead, a first job that died before printing it (a data or model error on one host) left
# every relaunch free to continue another run's checkpoint found on a host's disk. A resumed
# run's identity is its checkpoint's, printed by the first job ("run id …").
fresh=1
for a in "${train[@]}"; do case "$a" in --resume|--resume-if-present) fresh=0 ;; esac; done
[ "$fresh" -eq 0 ] || run_id=$(od -An -N8 -tx8 /dev/urandom | tr -d ' \n')
started=$(date +%s)
current=() last_step=-1 ended_at=0 cause=""
first=1
while true; do
  # Wait for --min-hosts usable hosts.
  deadline=$(($(date +%s) + wait_limit))
  while true; do
    # Hosts lost less than --cooldown ago cannot be used yet: not asked (a dead one may take
    # the probe's whole timeout to say so).
    known_lost=" " now=$(date +%s)
    for i in "${!addrs[@]}"; do
      if [ "${lost_at[$i]}" -gt 0 ] && [ $((now - lost_at[i])) -lt "$cooldown" ]; then known_lost+="$i "; fi
    done
    probe_all
    known_lost=" "
    mapfile -t current < <(usable)
    [ "${#current[@]}" -ge "$min_hosts" ] && break
    [ "$(date +%s)" -lt "$deadline" ] || fail "only ${#current[@]} of the --min-hosts $min_hosts hosts answered within --wait $wait_limit s; nothing is running. Bring hosts back, then run launch/elastic.sh … again (it resumes from the newest checkpoint)"
    sleep 1
  done
  for i in "${current[@]}"; do
    lost_at[$i]=0
    # A host of this launch that the previous one did not have was added back (or found).
    if [ "${#previous[@]}" -gt 0 ] && [[ " ${previous[*]} " != *" $i "* ]]; then
      added_total=$((added_total + 1)); added_names+="${added_names:+, }${names[$i]}"
    fi
  done
  previous=("${current[@]}")
  : >"$work/hostfile"
  ranks=0
  for i in "${current[@]}"; do echo "${addrs[$i]} slots=${slots[$i]}" >>"$work/hostfile"; ranks=$((ranks + slots[i])); done
  args=(--hostfile "$work/hostfile" -np "$ranks" --map-by slot --bind-to none
        -x OPENBLAS_NUM_THREADS=1 -x SWIFT_BACKTRACE=enable=no -x RINGSGD_STEP_LINES=1)
  # The run to continue: its checkpoints only, not an earlier run's left on a host's disk.
  [ -z "$run_id" ] || args+=(-x RINGSGD_RUN_ID="$run_id")
  [ "$(id -u)" -eq 0 ] && args+=(--allow-run-as-root)
  if [ -n "$simulated" ]; then
    most=0; for i in "${current[@]}"; do [ "${slots[$i]}" -gt "$most" ] && most=${slots[$i]}; done
    simhosts_mca "$work" "$subnet" "$most"
    args+=("${SIMHOSTS_MCA[@]}"
           -x SIMCLUSTER_RATE="$rate" -x SIMCLUSTER_HOSTS="${#current[@]}")
  fi
  if [ "$first" -eq 1 ]; then command=("${train[@]}"); else command=("${relaunch[@]}"); fi
  say "launching on ${#current[@]} hosts ($(host_list "${current[@]}")), $ranks ranks${run_id:+, run $run_id}"
  raw="$work/job.log" shown="$work/shown"
  : >"$raw"
  if [ -n "$slurm" ]; then
    # --overlap: a step that lost a node lingers on it until SLURM marks the node down, and
    # would hold the CPUs of the nodes left (whose ranks are gone) until then.
    nodes=(); for i in "${current[@]}"; do nodes+=("${names[$i]}"); done
    OPENBLAS_NUM_THREADS=1 SWIFT_BACKTRACE=enable=no RINGSGD_STEP_LINES=1 RINGSGD_RUN_ID="$run_id" \
      srun --mpi="${RINGSGD_SRUN_MPI:-pmix}" --kill-on-bad-exit=1 --overlap --nodes="${#current[@]}" --ntasks="$ranks" --nodelist="$(IFS=,; echo "${nodes[*]}")" \
      --ntasks-per-node="$SLURM_NTASKS_PER_NODE" "$binary" "${command[@]}" >"$raw" 2>&1 </dev/null &
  else
    mpirun "${args[@]}" "${mpirun_extra[@]}" "$binary" "${command[@]}" >"$raw" 2>&1 </dev/null &
  fi
  job_pid=$!
  { tail -n +1 -s 0.2 -F --pid="$job_pid" "$raw" 2>/dev/null \
      | grep --line-buffered -v -e '^ringsgd: at step ' -e '^mpirun: Forwarding signal' \
      | filter_mpirun_notes "$shown" "$lost_notes" >&2; } &
  display_pid=$!
  resumed_step="" training_again=0 grow_requested=0 killed_lost=() stopped_broken=0
  while kill -0 "$job_pid" 2>/dev/null; do
    sleep "$probe_every" &
    wait $! || true
    kill -0 "$job_pid" 2>/dev/null || break
    step=$(last_step_in "$raw")
    if [ "$training_again" -eq 0 ] && [ -n "$step" ]; then
      training_again=1
      resumed_step=$(sed -n 's/^resumed at step \([0-9]*\).*/\1/p' "$raw" | head -n1)
      if [ "$first" -eq 0 ] && [ "$ended_at" != 0 ]; then
        gap=$(awk -v a="$ended_at" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
        from=${resumed_step:-0}
        again=$((last_step > from ? last_step - from : 0))
        redone=$((redone + again))
        say "training again on ${#current[@]} hosts from step $from, ${gap} s after the job ended ($cause); $again steps redone"
      fi
    fi
    # Under SLURM a probe is a job step: the job's own nodes are probed when it fails (a
    # node whose slurmd and ranks die ends the step at once).
    if [ -n "$slurm" ]; then probe_all outside; else probe_all; fi
    # A host of the job that stopped answering: stop the job now (its peers would wait for
    # comm.timeout_seconds) and relaunch without it.
    for i in "${current[@]}"; do
      if [ "${answering_since[$i]}" -eq 0 ]; then killed_lost+=("$i"); fi
    done
    if [ "${#killed_lost[@]}" -gt 0 ]; then
      say "host $(host_list "${killed_lost[@]}") stopped answering at step ${step:-?}; stopping the job"
      stop_job 2
      stopped_broken=1
      break
    fi
    # A rank saw a peer hang up: MPI cannot go on, but the ranks left would only notice at
    # comm.timeout_seconds (under srun nothing ends them before).
    if grep -aq 'peer process has unexpectedly disconnected' "$raw"; then
      say "a rank lost its peer at step ${step:-?}; stopping the job"
      stop_job 2
      stopped_broken=1
      break
    fi
    # A host not in the job answers (again) and is past its cooldown: grow at the next checkpoint.
    if [ "$grow_requested" -eq 0 ] && [ "$training_again" -eq 1 ]; then
      mapfile -t candidates < <(usable)
      if [ "${#candidates[@]}" -gt "${#current[@]}" ]; then
        extra=()
        for i in "${candidates[@]}"; do [[ " ${current[*]} " == *" $i "* ]] || extra+=("$i"); done
        say "host $(host_list "${extra[@]}") answers: growing to ${#candidates[@]} hosts at the next checkpoint"
        kill -USR1 "$job_pid" 2>/dev/null || true
        grow_requested=1
      fi
    fi
  done
  status=0
  if [ -n "$job_pid" ]; then wait "$job_pid" || status=$?; fi
  [ -z "$display_pid" ] || wait "$display_pid" 2>/dev/null || true
  job_pid="" display_pid=""
  ended_at=$(date +%s.%N)
  first=0
  jobs_run=$((${jobs_run:-0} + 1))
  # A log that cannot be kept (a full disk) is said, and supervision goes on.
  if [ -n "${ELASTIC_LOG_DIR:-}" ]; then
    { mkdir -p "$ELASTIC_LOG_DIR" && cp "$raw" "$ELASTIC_LOG_DIR/job-$jobs_run.log"; } \
      || say "warning: could not keep job $jobs_run's log in ELASTIC_LOG_DIR=$ELASTIC_LOG_DIR; supervising on"
  fi
  step=$(last_step_in "$raw")
  [ -z "$step" ] || last_step=$step
  [ -n "$run_id" ] || run_id=$(sed -n '/^run id [0-9a-f]\{16\}$/{s/^run id //p;q}' "$raw")
  if [ "$stopped_broken" -eq 0 ] && [ "$status" -eq 0 ]; then
    stopped=$(sed -n 's/^stopped at step \([0-9]*\) on request.*/\1/p' "$raw" | tail -n1)
    if [ -n "$stopped" ] && [ "$grow_requested" -eq 0 ]; then
      # Not ours: SLURM's warning before the time limit (#SBATCH --signal=USR1@300) or a
      # SIGUSR1 sent by hand. The run is saved at that step; relaunching would only be killed
      # at the limit with its new steps lost.
      say "stopped at the checkpoint of step $stopped on a request from outside (the time limit's warning, or SIGUSR1); not relaunching: resubmit (RINGSGD_RESUME=1 under SLURM) or run again with --resume to continue"
      exit 0
    fi
    if [ -n "$stopped" ]; then
      cause="grown at the checkpoint of step $stopped" last_step=$stopped
      say "stopped at the checkpoint of step $stopped; relaunching on $(usable | wc -l) hosts"
      continue
    fi
    elapsed=$(( $(date +%s) - started ))
    say "done in ${elapsed} s: $restarts restarts, $lost_total hosts lost${lost_names:+ ($lost_names)}, $added_total added back${added_names:+ ($added_names)}, $redone steps redone"
    exit 0
  fi
  # Which hosts failed: those that stopped answering, and those mpirun or a rank names.
  lost=("${killed_lost[@]}")
  if [ "${#lost[@]}" -eq 0 ]; then
    # Not a rank's "Peer host:": once one rank dies the launcher kills the others, and a rank
    # on a healthy host may see a healthy peer hang up first, its lines landing first among
    # those of several hosts (srun forwards each host's in its own order). A vanished peer's
    # host, if dead, fails its probe below; if alive, it is no worse than any other.
    named=$( { sed -n 's/.*process rank [0-9]* with PID [0-9]* on node \([^ ]*\) exited on signal.*/\1/p' "$raw"
               sed -n 's/.*Remote daemon: *\[\[[0-9]*,[0-9]*\],[0-9]*\] on node \([^ ]*\).*/\1/p' "$raw"; } | sort -u)
    # "ringsgd: error: rank R waited N s for rank M": rank M's host (ranks fill hosts in order),
    # for the M that waited for no one itself. In a ring each rank waits on its left neighbour:
    # once one stalls, the others time out one after another, each naming a rank that only waited.
    # Every rank that waited counts as a waiter, whatever for (a barrier's "the ranks that had not arrived").
    waiters=" $(sed -n 's/^ringsgd: error: rank \([0-9]*\) waited .*/\1/p' "$raw" | tr '\n' ' ')"
    for m in $(sed -n 's/^ringsgd: error: rank [0-9]* waited .* for rank \([0-9]*\) in .*/\1/p' "$raw" | sort -u); do
      [[ "$waiters" != *" $m "* ]] || continue
      r=0
      for i in "${current[@]}"; do
        if [ "$m" -lt $((r + slots[i])) ]; then named+=$'\n'"${addrs[$i]}"; break; fi
        r=$((r + slots[i]))
      done
    done
    # Hosts named are lost; the others are asked (a dead one fails its probe).
    known_lost=" "
    for i in "${current[@]}"; do
      if grep -qxF -- "${addrs[$i]}" <<<"$named" || grep -qxF -- "${names[$i]}" <<<"$named"; then known_lost+="$i "; fi
    done
    probe_all
    known_lost=" "
    for i in "${current[@]}"; do
      if [ "${answering_since[$i]}" -eq 0 ] || grep -qxF -- "${addrs[$i]}" <<<"$named" || grep -qxF -- "${names[$i]}" <<<"$named"; then lost+=("$i"); fi
    done
  fi
  abnormal=0
  grep -aqE 'peer process has unexpectedly disconnected|mpirun noticed that process rank|unable to reliably start one or more daemons|lost communication with a remote daemon|exited on signal|waited [0-9]+ s for|^srun: error: .*(Killed|Terminated|Node failure|launch failed)' "$raw" && abnormal=1
  if [ "${#lost[@]}" -eq 0 ] && [ "$abnormal" -eq 0 ]; then
    # Every host is healthy and every rank ended by itself: the job failed (bad input, a
    # diverged run) — for good.
    repeat_first_error "$raw" "$(cat "$shown" 2>/dev/null)" \
      || echo "elastic: error: the job ended with exit status $status on healthy hosts: $( { grep -av '^ringsgd: at step' "$raw" || true; } | tail -n1)" >&2
    exit "$status"
  fi
  # Lost from now, when it was decided (not when the job ended): the probes above may have
  # taken their whole timeout, and a host lost less than --cooldown ago is not asked again.
  now=$(date +%s)
  for i in "${lost[@]}"; do
    lost_at[$i]=$now
    answering_since[$i]=0   # the cooldown starts when it answers again
    lost_total=$((lost_total + 1)); lost_names+="${lost_names:+, }${names[$i]}"
  done
  if [ -n "$simulated" ]; then simhosts_kill "$work"; fi   # a lost simulated host is powered off: nothing of it runs on
  restarts=$((restarts + 1))
  # A rank died abnormally and nothing names its host: every answering host is tried again.
  cause="a rank died on an unknown host"
  [ "${#lost[@]}" -eq 0 ] || cause="lost host $(host_list "${lost[@]}")"
  [ "$restarts" -le "$max_restarts" ] || fail "the job failed $restarts times, more than --max-restarts $max_restarts (last: $cause at step ${last_step}); nothing is running. launch/elastic.sh … again resumes from the newest checkpoint"
  if [ "${#lost[@]}" -eq 0 ]; then
    say "a rank died at step ${last_step} and no host is named; relaunching on the answering hosts (restart $restarts of at most $max_restarts)"
  else
    say "lost host $(host_list "${lost[@]}") at step ${last_step}; relaunching on the $(( ${#current[@]} - ${#lost[@]} )) hosts left (restart $restarts of at most $max_restarts)"
  fi
done
