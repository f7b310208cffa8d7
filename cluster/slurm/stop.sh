#!/usr/bin/env bash
# Stop the SLURM cluster that cluster/slurm/start.sh DIR started: cancel its jobs, then stop
# slurmd, slurmctld and munged by their pid files in DIR (never by name) and wait for each to
# exit. Idempotent: a daemon that is not running is skipped.
set -euo pipefail

die() { echo "stop.sh: $*" >&2; exit 1; }

[[ $# -eq 1 ]] || die "usage: cluster/slurm/stop.sh DIR (the directory given to start.sh)"
[[ -d $1 ]] || die "$1: no such directory"
DIR=$(cd "$1" && pwd)
export SLURM_CONF=$DIR/slurm.conf

# The pid in a pid file, if it is alive and runs NAME (a stale file or a reused pid is not ours).
pid_of() { # NAME PIDFILE
    local pid
    [[ -s $2 ]] || return 1
    pid=$(<"$2")
    [[ $pid =~ ^[0-9]+$ ]] && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$1" ]] && echo "$pid"
}

# Jobs first, while slurmctld and slurmd can still end them: slurmd leaves running jobs alone
# when it stops, and their processes would outlive the cluster.
if pid_of slurmctld "$DIR/slurmctld.pid" >/dev/null && [[ -s $SLURM_CONF ]]; then
    scancel --quiet --partition=debug 2>/dev/null || true
    deadline=$((SECONDS + 30))
    while [[ -n $(squeue -h -o %i 2>/dev/null) ]] && (( SECONDS < deadline )); do sleep 0.5; done
    [[ -z $(squeue -h -o %i 2>/dev/null) ]] || echo "stop.sh: jobs still listed: $(squeue -h 2>&1)" >&2
fi

# Alive and not a zombie (pid 1 of a container may be slow to reap, or never reap, orphans).
running() { [[ -e /proc/$1 ]] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }

stop() { # NAME PIDFILE LOG
    local pid deadline
    pid=$(pid_of "$1" "$2") || { rm -f "$2"; return 0; }
    kill -TERM "$pid"
    deadline=$((SECONDS + 30))
    while running "$pid" && (( SECONDS < deadline )); do sleep 0.2; done
    if running "$pid"; then
        echo "stop.sh: $1 (pid $pid) ignored SIGTERM for 30 s, killing it; see $3" >&2
        kill -KILL "$pid" 2>/dev/null || true
        while running "$pid"; do sleep 0.2; done
    fi
    rm -f "$2"
}

stop slurmd "$DIR/slurmd.pid" "$DIR/log/slurmd.log"
stop slurmctld "$DIR/slurmctld.pid" "$DIR/log/slurmctld.log"
stop munged "$DIR/munge/munged.pid" "$DIR/log/munged.log"
echo "stop.sh: SLURM in $DIR stopped" >&2
