#!/usr/bin/env bash
# Bring up a single-node SLURM cluster on this (Debian) machine, as root: munged + slurmctld + slurmd.
#
#   sudo make slurm-up        (or: sudo scripts/slurm_up.sh)      ...      sudo make slurm-down
#
# For trying `make table1 LAUNCHER=slurm` on a workstation and for `make test-slurm`. Idempotent: a second call
# with the cluster up only checks it. Installs `slurm-wlm` and `munge` with apt-get when they are missing.
# Everything it writes lives in $CRELU_SLURM_DIR (default /tmp/crelu-slurm): slurm.conf, state, spool, logs and
# the pid files of the daemons it started. Clients find the config through /etc/slurm/slurm.conf, which this
# script makes a link to $CRELU_SLURM_DIR/slurm.conf when no such file exists; if one exists (a real cluster's),
# it is left alone and you `export SLURM_CONF=$CRELU_SLURM_DIR/slurm.conf` instead.
# No systemd, no cgroups (proctrack/linuxproc, task/none), no accounting (squeue/scontrol work, sacct does not).
set -euo pipefail

DIR=${CRELU_SLURM_DIR:-/tmp/crelu-slurm}
CONF=$DIR/slurm.conf
SYSTEM_CONF=/etc/slurm/slurm.conf
HOST=$(hostname -s)
export SLURM_CONF=$CONF

say() { echo "slurm-up: $*"; }
die() { echo "slurm-up: error: $*" >&2; exit 1; }
alive() {  # alive PIDFILE NAME: the pid in PIDFILE runs a process called NAME
  local pid
  [ -s "$1" ] && pid=$(cat "$1") && [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$2" ]
}

[ "$(id -u)" = 0 ] || die "run as root (sudo make slurm-up): the daemons and the job steps run as root"

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
  command -v apt-get >/dev/null || die "slurm-wlm and munge are missing and this is not a Debian/Ubuntu machine"
  say "installing slurm-wlm and munge (apt-get)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
fi

mkdir -p "$DIR/log"

# --- munge (authentication): reuse a running munged, else start one and remember its pid as ours ----------
if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  alive "$DIR/munged.pid" munged && say "munged (ours) is running" || say "using the munged already running"
else
  if [ ! -s /etc/munge/munge.key ]; then
    say "creating /etc/munge/munge.key"
    runuser -u munge -- mungekey --create --keyfile=/etc/munge/munge.key
  fi
  install -d -o munge -g munge -m 0755 /run/munge
  runuser -u munge -- munged --pid-file=/run/munge/munged.pid --log-file=/var/log/munge/munged.log
  for _ in $(seq 50); do [ -s /run/munge/munged.pid ] && break; sleep 0.1; done
  cp /run/munge/munged.pid "$DIR/munged.pid"
  munge -n | unmunge >/dev/null || die "munged does not answer (see /var/log/munge/munged.log)"
  say "started munged (pid $(cat "$DIR/munged.pid"))"
fi

# --- slurm.conf -------------------------------------------------------------------------------------------------
if alive "$DIR/slurmctld.pid" slurmctld && alive "$DIR/slurmd.pid" slurmd; then
  say "slurmctld and slurmd (ours) are already running"
else
  for d in slurmd slurmctld; do  # a half-up cluster: stop what is left, start both afresh
    if alive "$DIR/$d.pid" "$d"; then kill "$(cat "$DIR/$d.pid")"; sleep 1; fi
  done
  if pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null; then
    die "another slurmctld/slurmd (not started by this script) is running; stop it first"
  fi
  rm -rf "$DIR/state" "$DIR/spool"
  mkdir -p "$DIR/state" "$DIR/spool"
  cpus=$(nproc)
  mem_mb=$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.85}' /proc/meminfo)
  cat > "$CONF" <<EOF
# Written by scripts/slurm_up.sh (crelu-repro): single-node workstation cluster. Removed by slurm_down.sh.
ClusterName=crelu
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
JobRequeue=1
ReturnToService=2
KillWait=30
MinJobAge=600
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=local Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
  say "wrote $CONF (NodeName=$HOST CPUs=$cpus RealMemory=$mem_mb)"
  slurmctld -f "$CONF"
  slurmd -f "$CONF"
  for d in slurmctld slurmd; do
    for _ in $(seq 100); do alive "$DIR/$d.pid" "$d" && break; sleep 0.1; done
    alive "$DIR/$d.pid" "$d" || die "$d did not start; see $DIR/log/$d.log"
  done
  say "started slurmctld (pid $(cat "$DIR/slurmctld.pid")) and slurmd (pid $(cat "$DIR/slurmd.pid"))"
fi

# --- clients find the config ------------------------------------------------------------------------------------
if [ -L "$SYSTEM_CONF" ] && [ "$(readlink "$SYSTEM_CONF")" = "$CONF" ]; then
  :
elif [ -e "$SYSTEM_CONF" ] || [ -L "$SYSTEM_CONF" ]; then
  say "$SYSTEM_CONF exists and is not ours: left alone; use  export SLURM_CONF=$CONF"
else
  mkdir -p "$(dirname "$SYSTEM_CONF")"
  ln -s "$CONF" "$SYSTEM_CONF"
fi

# --- wait for the node to take jobs -----------------------------------------------------------------------------
state=""
for _ in $(seq 120); do
  state=$(sinfo -h -n "$HOST" -o %t 2>/dev/null | head -1 || true)
  case "$state" in
    idle|mix|mixed|alloc|allocated) break ;;
    down*|drain*|drng*) scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true ;;
  esac
  sleep 0.5
done
case "$state" in
  idle|mix|mixed|alloc|allocated) ;;
  *) die "node $HOST is '${state:-not answering}' after 60 s; see $DIR/log/slurmctld.log and slurmd.log" ;;
esac
say "cluster up: partition $(sinfo -h -o %P | head -1), node $HOST $state"
