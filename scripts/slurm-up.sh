#!/usr/bin/env bash
# Single-node Slurm for tests and CI (Debian 12, root, with or without systemd): installs the
# Debian packages if missing, writes /etc/slurm/slurm.conf and gres.conf (one fake GPU), starts
# munged, slurmctld and slurmd if they are not running, and waits until the node is idle.
# Safe to rerun: it installs only what is missing, rewrites configs only when they change and
# restarts daemons only then. Stop with scripts/slurm-down.sh.
#   SLURM_BASE  state/spool/log/pid folder (default /var/tmp/slurm-ci)
#   FAKE_GPUS   1 (default) = advertise one gres/gpu backed by /dev/null, so GPU requests schedule
#   WITH_DBD    1 = also MariaDB + slurmdbd, so that sacct works (about 11 s more)
# The config must be at the default path /etc/slurm: the Slurm executor's jobstep strips
# SLURM_CONF from the inner srun, which then fails with "Could not establish a configuration source".
set -euo pipefail
SLURM_ETC=/etc/slurm
BASE=${SLURM_BASE:-/var/tmp/slurm-ci}
FAKE_GPUS=${FAKE_GPUS:-1}
WITH_DBD=${WITH_DBD:-0}
DBD_PORT=${DBD_PORT:-6819}
DB_PORT=${DB_PORT:-3306}
export DEBIAN_FRONTEND=noninteractive

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

pkgs=()
command -v slurmctld >/dev/null || pkgs+=(slurmctld)
command -v slurmd >/dev/null || pkgs+=(slurmd)
command -v sbatch >/dev/null || pkgs+=(slurm-client)
command -v munged >/dev/null || pkgs+=(munge)
if [ "$WITH_DBD" = 1 ]; then
  command -v slurmdbd >/dev/null || pkgs+=(slurmdbd)
  command -v mariadbd >/dev/null || pkgs+=(mariadb-server)
fi
if [ ${#pkgs[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "slurm-up: missing ${pkgs[*]}; run as root to install them" >&2; exit 1; }
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${pkgs[@]}"
fi
[ "$(id -u)" = 0 ] || { echo "slurm-up: the daemons run as root (SlurmUser=root); run as root" >&2; exit 1; }

NODE=$(hostname -s)
# the topology exactly as slurmd detects it (a mismatch drains the node); RealMemory 80% of it
NODELINE=$(slurmd -C | head -1)
MEM=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$NODELINE")
NODELINE=$(sed "s/RealMemory=[0-9]*/RealMemory=$((MEM * 8 / 10))/" <<<"$NODELINE")
GRES_NODE=""; GRES_TYPES=""
# DebugFlags=Gres: slurmctld logs each job's GPU allocation (the tests read it; tracking gres in
# AccountingStorageTRES would need slurmdbd)
if [ "$FAKE_GPUS" = 1 ]; then GRES_NODE=" Gres=gpu:1"; GRES_TYPES="GresTypes=gpu
DebugFlags=Gres"; fi
if [ "$WITH_DBD" = 1 ]; then
  ACCT="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
JobAcctGatherType=jobacct_gather/linux"
else
  ACCT="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
fi

mkdir -p "$SLURM_ETC" "$BASE"/{state,spool,log,run}
# MinJobAge=300: finished jobs stay visible to squeue (the profile's status command) for 5 min.
# DefMemPerCPU: a job without --mem would otherwise take the whole node's memory.
tmp=$(mktemp)
cat >"$tmp" <<CONF
ClusterName=ci
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
SchedulerType=sched/backfill
ReturnToService=2
MinJobAge=300
StateSaveLocation=$BASE/state
SlurmdSpoolDir=$BASE/spool
SlurmctldPidFile=$BASE/run/slurmctld.pid
SlurmdPidFile=$BASE/run/slurmd.pid
SlurmctldLogFile=$BASE/log/slurmctld.log
SlurmdLogFile=$BASE/log/slurmd.log
$ACCT
JobCompType=jobcomp/filetxt
JobCompLoc=$BASE/log/jobcomp.log
$GRES_TYPES
$NODELINE NodeAddr=127.0.0.1$GRES_NODE State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
changed=0
cmp -s "$tmp" "$SLURM_ETC/slurm.conf" || { mv "$tmp" "$SLURM_ETC/slurm.conf"; changed=1; }
rm -f "$tmp"
# a GPU without File= is discarded by the gpu plugin and the node goes INVAL
printf 'AutoDetect=off\n%s\n' "$([ "$FAKE_GPUS" = 1 ] && echo "NodeName=$NODE Name=gpu File=/dev/null")" \
  >"$SLURM_ETC/gres.conf"
chmod 644 "$SLURM_ETC/slurm.conf" "$SLURM_ETC/gres.conf"
if [ "$changed" = 1 ]; then  # config changed: restart the daemons that run
  for d in slurmd slurmctld; do
    if alive "$BASE/run/$d.pid"; then
      pid=$(cat "$BASE/run/$d.pid"); kill "$pid"
      while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
    fi
  done
fi

# munge: the Debian postinst creates the key but not /run/munge, and policy-rc.d starts nothing
[ -s /etc/munge/munge.key ] || { mungekey --create --keyfile=/etc/munge/munge.key; chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key; }
install -d -o munge -g munge -m 0755 /run/munge
if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
  runuser -u munge -- /usr/sbin/munged
  for _ in $(seq 50); do munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.2; done
fi

if [ "$WITH_DBD" = 1 ]; then
  DB=$BASE/mysql; SOCK=$BASE/run/mysql/mysqld.sock  # the socket folder must belong to mysql
  install -d -o mysql -g mysql "$BASE/run/mysql"
  [ -d "$DB/mysql" ] || mariadb-install-db --user=mysql --datadir="$DB" --skip-test-db >"$BASE/log/mariadb-install.log" 2>&1
  if ! mariadb-admin --socket="$SOCK" ping >/dev/null 2>&1; then
    runuser -u mysql -- /usr/sbin/mariadbd --no-defaults --datadir="$DB" --socket="$SOCK" \
      --pid-file="$BASE/run/mysql/mysqld.pid" --port="$DB_PORT" --bind-address=127.0.0.1 \
      --innodb-buffer-pool-size=128M --log-error="$BASE/run/mysql/mariadb.err" </dev/null >/dev/null 2>&1 &
    for _ in $(seq 100); do mariadb-admin --socket="$SOCK" ping >/dev/null 2>&1 && break; sleep 0.3; done
  fi
  mariadb --socket="$SOCK" -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
  cat >"$SLURM_ETC/slurmdbd.conf" <<CONF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
LogFile=$BASE/log/slurmdbd.log
PidFile=$BASE/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
CONF
  chmod 600 "$SLURM_ETC/slurmdbd.conf"
  if ! alive "$BASE/run/slurmdbd.pid"; then
    /usr/sbin/slurmdbd
    for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$DBD_PORT) 2>/dev/null && break; sleep 0.2; done
  fi
fi

alive "$BASE/run/slurmctld.pid" || /usr/sbin/slurmctld
alive "$BASE/run/slurmd.pid" || /usr/sbin/slurmd

# wait until the node is idle (resume it if a drain or an earlier bad config left it unusable);
# a daemon that died (e.g. a fatal config error) ends the wait at once with its log
fail() { echo "slurm-up: $1" >&2; tail -n 20 "$BASE"/log/slurmctld.log "$BASE"/log/slurmd.log >&2 || true; exit 1; }
# (a daemon writes its pid file a moment after it forks, and an old file may still name a dead
# process: a daemon counts as dead only if it is still not alive after 5 s; checking at once
# failed once on a loaded machine)
st=""
for i in $(seq 120); do
  if [ "$i" -gt 10 ]; then
    alive "$BASE/run/slurmctld.pid" || fail "slurmctld is not running"
    alive "$BASE/run/slurmd.pid" || fail "slurmd is not running"
  fi
  st=$(timeout 10 sinfo -h -n "$NODE" -o %T 2>/dev/null || true)
  case "$st" in
    idle|mixed|allocated) echo "slurm up: node $NODE $st"; exit 0 ;;
    *drain*|*inval*|*down*) timeout 10 scontrol update NodeName="$NODE" State=RESUME 2>/dev/null || true ;;
  esac
  sleep 0.5
done
fail "the node did not become idle within 60 s (state '${st}')"
