#!/usr/bin/env bash
# A real one-node Slurm cluster for the tests, without systemd: munged, slurmctld and slurmd
# from Debian's packages (slurm-wlm), started as this user's processes with a minimal
# configuration (proctrack/linuxproc, task/none) under one folder.
#   tests/slurm/cluster.sh start DIR   writes DIR/slurm.conf, starts the daemons, waits until
#                                      the node is idle; prints `export SLURM_CONF=…`
#   tests/slurm/cluster.sh stop DIR    stops them
# Fails loudly (non-zero, the daemons' logs on stderr) when the cluster does not come up.
set -euo pipefail
cmd=${1:?usage: cluster.sh start|stop DIR}
dir=$(realpath -m "${2:?usage: cluster.sh start|stop DIR}")
conf=$dir/slurm.conf

stop() {
    for p in slurmd slurmctld munged; do
        [ -f "$dir/$p.pid" ] && kill "$(cat "$dir/$p.pid")" 2>/dev/null || true
    done
    sleep 0.5
    for p in slurmd slurmctld munged; do
        [ -f "$dir/$p.pid" ] && kill -9 "$(cat "$dir/$p.pid")" 2>/dev/null || true
        rm -f "$dir/$p.pid"
    done
}

if [ "$cmd" = stop ]; then stop; exit 0; fi
[ "$cmd" = start ] || { echo "unknown command $cmd (start|stop)" >&2; exit 2; }
for bin in munged slurmctld slurmd sinfo; do
    command -v $bin >/dev/null || { echo "$bin is not installed (apt-get install slurmctld slurmd slurm-client munge)" >&2; exit 1; }
done
mkdir -p "$dir"/{state,spool,munge,log}
chmod 700 "$dir/munge"
user=$(id -un)
host=$(hostname -s)
cpus=$(nproc)
mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2 ))
# Ports: a free pair, so that a leftover cluster of another run cannot answer.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
dport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$conf" <<CONF
ClusterName=lrid-test
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$dport
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldTimeout=30
SlurmdTimeout=30
MaxArraySize=10000
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
CONF
export SLURM_CONF=$conf
stop
# The cluster's own munge key (the package's /etc/munge/munge.key is not needed).
[ -f "$dir/munge/munge.key" ] || { head -c 1024 /dev/urandom > "$dir/munge/munge.key"; chmod 400 "$dir/munge/munge.key"; }
munged --socket="$dir/munge/munge.socket" --pid-file="$dir/munged.pid" \
    --key-file="$dir/munge/munge.key" --log-file="$dir/log/munged.log" \
    --seed-file="$dir/munge/seed" --force
# Slurm's munge plugin finds the socket through AuthInfo.
sed -i "s|^AuthType=auth/munge|AuthType=auth/munge\nAuthInfo=socket=$dir/munge/munge.socket|" "$conf"
slurmctld -c -f "$conf"
slurmd -f "$conf"
for _ in $(seq 100); do
    if sinfo -h -o '%T' 2>/dev/null | grep -qx idle; then
        echo "export SLURM_CONF=$conf"
        exit 0
    fi
    sleep 0.2
done
echo "the Slurm cluster in $dir did not come up; sinfo says: $(sinfo 2>&1 | tr '\n' ' ')" >&2
for f in "$dir"/log/*.log; do echo "== $f" >&2; tail -20 "$f" >&2; done
exit 1
