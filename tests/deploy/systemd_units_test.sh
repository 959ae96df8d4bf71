#!/bin/sh
# systemd_units_test.sh FABRICD SOURCE_DIR: deploy/systemd's units, checked offline by
# systemd itself. `systemd-analyze verify` must accept both units (with the build's fabricd
# and the example environment files in place of the installed ones) and refuse a broken
# copy, and `systemd-analyze security` must rate their sandboxing at most 2.0 (coordinator)
# and 5.0 (agent, whose ranks need CUDA, NCCL and JIT compilers) on its 0-10 exposure scale.
set -eu
fabricd=$1
units=$2/deploy/systemd
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for unit in fabricd-coordinator.service fabricd-agent.service; do
  sed -e "s|/usr/bin/fabricd|$fabricd|" -e "s|EnvironmentFile=/etc/fabricd/|EnvironmentFile=$units/|" \
    "$units/$unit" >"$work/$unit"
done
mkdir "$work/fabricd-agent.service.d"
cp "$units/fabricd-agent.service.d/gpu.conf" "$work/fabricd-agent.service.d/"

systemd-analyze verify "$work/fabricd-coordinator.service" "$work/fabricd-agent.service"

# The etcd drop-in, applied: one ExecStart (the unit's cleared), on etcd, proclaiming an
# address, and still accepted. systemd expands the variables only when it starts the unit.
mkdir "$work/fabricd-coordinator.service.d"
sed "s|/usr/bin/fabricd|$fabricd|" "$units/fabricd-coordinator.service.d/etcd.conf" \
  >"$work/fabricd-coordinator.service.d/etcd.conf"
systemd-analyze verify "$work/fabricd-coordinator.service"
starts=$(grep -c '^ExecStart=.' "$work/fabricd-coordinator.service.d/etcd.conf")
[ "$starts" -eq 1 ] && grep -q '^ExecStart=$' "$work/fabricd-coordinator.service.d/etcd.conf" ||
  { echo "etcd.conf must clear the unit's ExecStart and set one of its own" >&2; exit 1; }
grep '^ExecStart=.' "$work/fabricd-coordinator.service.d/etcd.conf" |
  grep -q -- '--store ${FABRICD_STORE} --advertise ${FABRICD_ADVERTISE}' ||
  { echo "etcd.conf must run serve on \$FABRICD_STORE and proclaim \$FABRICD_ADVERTISE" >&2; exit 1; }
grep '^ExecStart=.' "$work/fabricd-coordinator.service.d/etcd.conf" | grep -q -- '--state' &&
  { echo "etcd.conf must not pass --state (it excludes --store)" >&2; exit 1; }

# The check can fail: a unit whose program does not exist is refused.
sed "s|$fabricd|$work/no-such-fabricd|" "$work/fabricd-agent.service" >"$work/broken.service"
if systemd-analyze verify "$work/broken.service" 2>/dev/null; then
  echo "systemd-analyze verify accepted a unit whose program does not exist" >&2
  exit 1
fi

exposure() {  # the overall exposure level systemd-analyze security gives the unit
  systemd-analyze security --offline=yes "$work/$1" 2>/dev/null |
    sed -n "s/.*Overall exposure level for $1: \([0-9.]*\).*/\1/p"
}
for check in fabricd-coordinator.service:2.0 fabricd-agent.service:5.0; do
  unit=${check%%:*} limit=${check##*:}
  level=$(exposure "$unit")
  [ -n "$level" ] || { echo "no exposure level for $unit" >&2; exit 1; }
  echo "$unit: exposure $level (at most $limit)"
  awk -v level="$level" -v limit="$limit" 'BEGIN { exit !(level <= limit) }' ||
    { echo "$unit is exposed $level, more than $limit" >&2; exit 1; }
done
for unit in fabricd-coordinator.service fabricd-agent.service; do
  grep -q '^Restart=on-failure$' "$work/$unit" || { echo "$unit does not restart on failure" >&2; exit 1; }
done
grep -q '^KillMode=mixed$' "$work/fabricd-agent.service" ||
  { echo "the agent's unit must stop fabricd first and let it stop its ranks (KillMode=mixed)" >&2; exit 1; }
