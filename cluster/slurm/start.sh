#!/usr/bin/env bash
# Start a single-node SLURM cluster on loopback, every file of it in DIR:
#
#   cluster/slurm/start.sh DIR        # then: export SLURM_CONF=DIR/slurm.conf (printed last)
#   cluster/slurm/stop.sh DIR
#
# munged (its own key and socket), slurmctld and slurmd, from Debian's packages (`make slurm`),
# configured for a container (no cgroups): see slurm.conf.in next to this script. One node with
# this machine's CPUs (`nproc`) and memory (MemTotal less 5 %), one partition `debug`.
# Idempotent: daemons already running from DIR are kept; the others are started.
# Ports: free ones picked at the first start, or CEN_SLURMCTLD_PORT / CEN_SLURMD_PORT.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
NODE=cen-node

die() { echo "start.sh: $*" >&2; exit 1; }

[[ $# -eq 1 ]] || die "usage: cluster/slurm/start.sh DIR (a directory for the cluster's files)"
for bin in munged mungekey munge slurmctld slurmd sinfo; do
    command -v "$bin" >/dev/null || die "$bin not found: install munge and slurm-wlm with \`make slurm\`"
done
mkdir -p "$1"
DIR=$(cd "$1" && pwd)
CONF=$DIR/slurm.conf
# A unix socket path has at most 107 bytes.
(( ${#DIR} < 80 )) || die "$DIR is too long for munge's socket path; use a shorter DIR"

# True if the pid file names a live process with this command name (a stale file, or a pid
# reused by another program, does not count).
alive() { # NAME PIDFILE
    local pid
    [[ -s $2 ]] || return 1
    pid=$(<"$2")
    [[ $pid =~ ^[0-9]+$ ]] && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$1" ]]
}

# Wait up to $1 seconds for the command after it to succeed.
wait_for() { # SECONDS COMMAND...
    local deadline=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        (( SECONDS < deadline )) || return 1
        sleep 0.5
    done
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The last lines of a daemon's log, for an error message.
fail() { # NAME LOG
    echo "start.sh: $1 did not start; its log is $2:" >&2
    tail -n 20 "$2" >&2 2>/dev/null || echo "  (no log written)" >&2
    exit 1
}

mkdir -p "$DIR/munge" "$DIR/log" "$DIR/state" "$DIR/spool"
# munged wants its socket's directory and every one above it searchable by all, writable only
# by their owners; --force (below) lets a private temporary directory above DIR pass too.
chmod 755 "$DIR/munge"

running=0
for d in munged:munge/munged.pid slurmctld:slurmctld.pid slurmd:slurmd.pid; do
    alive "${d%%:*}" "$DIR/${d#*:}" && running=$((running + 1))
done

# The configuration: rewritten only while nothing runs from DIR (a running daemon keeps its ports).
if (( running == 0 )) || [[ ! -s $CONF ]]; then
    # nproc alone honours OMP_NUM_THREADS, which Dask sets to 1 in processes that started a
    # LocalCluster: the node would then offer one CPU, and a second worker job never starts.
    cpus=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)
    mem_mb=$(awk '/^MemTotal:/ {print int($2 / 1024 * 0.95)}' /proc/meminfo)
    ctld_port=${CEN_SLURMCTLD_PORT:-$(free_port)}
    slurmd_port=${CEN_SLURMD_PORT:-$(free_port)}
    while [[ $slurmd_port == "$ctld_port" ]]; do slurmd_port=$(free_port); done
    sed -e "s|@DIR@|$DIR|g" -e "s|@NODE@|$NODE|g" -e "s|@CPUS@|$cpus|g" \
        -e "s|@MEMORY_MB@|$mem_mb|g" -e "s|@CTLD_PORT@|$ctld_port|g" \
        -e "s|@SLURMD_PORT@|$slurmd_port|g" "$HERE/slurm.conf.in" >"$CONF.tmp"
    mv "$CONF.tmp" "$CONF"
fi
export SLURM_CONF=$CONF

# munge: a key of this cluster's own, a daemon on a socket in DIR.
SOCKET=$DIR/munge/munge.socket
[[ -s $DIR/munge/munge.key ]] || mungekey --create --keyfile="$DIR/munge/munge.key"
chmod 600 "$DIR/munge/munge.key"
if ! alive munged "$DIR/munge/munged.pid"; then
    rm -f "$SOCKET" "$SOCKET.lock"
    munged --force --socket="$SOCKET" --key-file="$DIR/munge/munge.key" \
        --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/log/munged.log" \
        --seed-file="$DIR/munge/munged.seed" || fail munged "$DIR/log/munged.log"
fi
munge_ok() { munge -n -S "$SOCKET" | unmunge -S "$SOCKET"; }
wait_for 10 munge_ok || fail munged "$DIR/log/munged.log"

if ! alive slurmctld "$DIR/slurmctld.pid"; then
    slurmctld -f "$CONF" || fail slurmctld "$DIR/log/slurmctld.log"
fi
wait_for 30 alive slurmctld "$DIR/slurmctld.pid" || fail slurmctld "$DIR/log/slurmctld.log"
wait_for 30 sinfo -h || fail slurmctld "$DIR/log/slurmctld.log"

if ! alive slurmd "$DIR/slurmd.pid"; then
    slurmd -f "$CONF" -N "$NODE" || fail slurmd "$DIR/log/slurmd.log"
fi
wait_for 30 alive slurmd "$DIR/slurmd.pid" || fail slurmd "$DIR/log/slurmd.log"

# Ready when the node has registered and takes jobs (idle, or running some already).
node_ready() { sinfo -h -N -n "$NODE" -o %T | grep -Eq '^(idle|mixed|allocated)$'; }
if ! wait_for 60 node_ready; then
    echo "start.sh: node $NODE is not idle: $(sinfo -h -N -n "$NODE" -o '%T %E' 2>&1)" >&2
    fail slurmd "$DIR/log/slurmd.log"
fi
sinfo >&2
echo "export SLURM_CONF=$CONF"
