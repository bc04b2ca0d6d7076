#!/usr/bin/env bash
# Runs the virtio guest scenarios (c-virtio.elf, and c-machine.elf's rng) under QEMU with TCG,
# against QEMU's own modern virtio PCI devices, and says PASS or FAIL for each: the reference the
# guest drivers were developed against on hosts without /dev/kvm. Under nodevisor the same guests
# run in test/kvm/virtio-devices.test.mjs.
#
#   guests/tests/qemu-check.sh [SCENARIO...]      (default: all; see `list` below)
#
# Needs qemu-system-x86_64 and node (the agent check drives the guest with dist/runner, so build
# with `npx tsc -p tsconfig.json` first). The net checks need root, iproute2 and /dev/net/tun: they
# run QEMU inside a network namespace of their own (nvq-PID) with a tap, nvqtap0, at 10.0.2.1/24;
# the namespace is always deleted. Every QEMU run is bounded by `timeout` (TIMEOUT, default 120 s).
# Logs of each run stay in $KEEP (if set) instead of a temporary folder removed at the end.
set -u
cd "$(dirname "$0")"
HERE=$PWD
QEMU=${QEMU:-qemu-system-x86_64}
# QEMU_ACCEL=kvm where KVM is hardware-like (VMX/SVM, or nested); TCG otherwise (a PVM host's KVM
# cannot run QEMU's firmware).
if [ "${QEMU_ACCEL:-tcg}" = kvm ]; then ACCEL=(-accel kvm -cpu host); else ACCEL=(-accel tcg); fi
TIMEOUT=${TIMEOUT:-120}
TMP=$(mktemp -d /tmp/nvq.XXXXXX)
NS=nvq-$$
TAP=nvqtap0
pass=0
failed=()
skipped=()

cleanup() {
  ip netns pids "$NS" 2>/dev/null | xargs -r kill 2>/dev/null
  ip netns del "$NS" 2>/dev/null
  if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && cp -r "$TMP"/. "$KEEP"/; fi
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- running a guest ----------------------------------------------------------------------------

# A QEMU run that times out (status 124) is run once more, and the log says so: under nested KVM
# (CI on machines without KVM) the reference VMM itself stalls at times. A guest that hangs, hangs
# twice.
QEMU_TIMED_OUT="qemu-check: QEMU timed out; running it once more"

# qemu GUEST CMDLINE [ARGS...]: one bounded QEMU run, serial console on stdout.
qemu() {
  local guest=$1 cmdline=$2 status attempt
  shift 2
  for attempt in 1 2; do
    timeout "$TIMEOUT" "$QEMU" -M pc "${ACCEL[@]}" -m 256 -nographic -no-reboot -nic none -kernel "build/$guest" -append "$cmdline" \
      -device isa-debug-exit,iobase=0xf4,iosize=4 "$@"
    status=$?
    if [ "$status" = 124 ] && [ "$attempt" = 1 ]; then echo "$QEMU_TIMED_OUT"; continue; fi
    return "$status"
  done
}

# run NAME GUEST CMDLINE [ARGS...]: sets $log and $rc (QEMU's status: guest exit code v gives 2v+1).
run() {
  local name=$1
  shift
  log=$TMP/$name.log
  qemu "$@" >"$log" 2>&1 </dev/null
  rc=$?
}

problems=()
# want_rc N: the status QEMU must end with.
want_rc() { [ "$rc" = "$1" ] || problems+=("QEMU exit status $rc, expected $1 (guest code $(((rc - 1) / 2)))"); }
# want FILE REGEX...: lines the file must contain.
want() {
  local file=$1
  shift
  for re in "$@"; do grep -aqE -- "$re" "$file" || problems+=("missing in $(basename "$file"): $re"); done
}
# verdict NAME: PASS or FAIL with the reasons and the guest's own lines.
verdict() {
  local note=
  grep -qF "$QEMU_TIMED_OUT" "${log:-/dev/null}" 2>/dev/null && note=" (QEMU timed out once first)"
  if [ ${#problems[@]} -eq 0 ]; then
    echo "PASS $1$note"
    pass=$((pass + 1))
  else
    echo "FAIL $1"
    printf '  %s\n' "${problems[@]}"
    failed+=("$1")
  fi
  [ -n "${VERBOSE:-}" ] || [ ${#problems[@]} -gt 0 ] && guest_lines "$log"
  problems=()
}
guest_lines() { sed -e 's/.*Booting from ROM\.\.//' -e 's/\x1b\[[0-9;?]*[a-zA-Z]//g' "$1" | grep -aE '^[a-z0-9-]+: ' | sed 's/^/    | /'; }
skip() { echo "SKIP $1: $2"; skipped+=("$1"); }

# ---- scenarios ----------------------------------------------------------------------------------

# rng: QEMU's virtio-rng serves a request by MSI-X, but does not treat a device-readable buffer as
# a broken request (nodevisor sets NEEDS_RESET): the guest then stops at code 30 (status 61).
check_rng() {
  run rng c-machine.elf rng -device virtio-rng-pci,disable-legacy=on
  want_rc 61
  want "$log" 'rng: virtio-rng at 00:..\.0' 'rng: 64 random bytes by MSI-X: [0-9a-f]{2} '
  verdict "rng (c-machine; QEMU ignores the broken request: status 61 expected)"
}

check_blk() {
  truncate -s 1M "$TMP/rw.img"
  head -c 524288 /dev/urandom >"$TMP/ro.img"
  run blk c-virtio.elf blk \
    -drive file="$TMP/rw.img",if=none,id=d0,format=raw -device virtio-blk-pci,drive=d0,disable-legacy=on,serial=disk-one \
    -drive file="$TMP/ro.img",if=none,id=d1,format=raw,readonly=on -device virtio-blk-pci,drive=d1,disable-legacy=on
  want_rc 1
  want "$log" 'blk: vda 2048 sectors id=disk-one rw' 'blk: vdb 1024 sectors id=\(none\) ro' 'blk: flush ok' \
    'blk: wrote and read back 65536 bytes' 'blk: read past the end: IOERR' 'blk: marker written at sector 100' \
    'blk: read-only disk refused a write'
  # What the host sees after the guest is gone: the marker line, and the pattern around it.
  node -e '
    const b = require("fs").readFileSync(process.argv[1]);
    const pat = (o) => (o * 7 + (o >> 9)) & 0xff;
    if (b.subarray(51200, 51217).toString() !== "nodevisor-blk-ok\n") { console.log("marker missing at sector 100"); process.exit(1); }
    for (let o = 0; o < 65536; o++) if ((o < 51200 || o >= 51712) && b[o] !== pat(o)) { console.log(`pattern differs at byte ${o}`); process.exit(1); }
  ' "$TMP/rw.img" >"$TMP/blk-host.txt" || problems+=("host check of the disk image: $(cat "$TMP/blk-host.txt")")
  verdict blk
}

check_blk_broken() {
  truncate -s 1M "$TMP/broken.img"
  run blk-broken c-virtio.elf blk-broken -drive file="$TMP/broken.img",if=none,id=d0,format=raw -device virtio-blk-pci,drive=d0,disable-legacy=on
  want_rc 1
  want "$log" 'blk-broken: request without a status byte: device needs reset' 'blk-broken: 4-byte header: device needs reset'
  [ "$(grep -ac 'blk-broken: serving again after reset' "$log")" = 2 ] || problems+=("expected two recoveries")
  verdict blk-broken
}

check_blk_bench() {
  truncate -s 64M "$TMP/bench.img"
  run blk-bench c-virtio.elf 'blk-bench mb=32 ios=5000' -drive file="$TMP/bench.img",if=none,id=d0,format=raw,cache=writeback -device virtio-blk-pci,drive=d0,disable-legacy=on
  want_rc 1
  want "$log" 'bench: tsc-hz=[0-9]+ source=' 'bench: seq-write bytes=33554432 .*MBps=' 'bench: seq-read bytes=33554432 .*MBps=' 'bench: rand-read-4k .*ios=5000 .*IOPS='
  verdict "blk-bench (numbers from an emulator: not a benchmark of anything)"
}

# console: QEMU's pipe chardev reads BASE.in (a FIFO we feed) and writes BASE.out (a plain file).
check_console() {
  local base=$TMP/console
  mkfifo "$base.in"
  : >"$base.out"
  (sleep 1; printf 'abc\n' >"$base.in") &
  run console c-virtio.elf console -device virtio-serial-pci,disable-legacy=on -chardev pipe,id=c0,path="$base" -device virtconsole,chardev=c0
  wait
  want_rc 1
  want "$log" 'console: echoed 4 bytes'
  want "$base.out" '^console: hello over virtio$' '^ABC$'
  verdict "console (QEMU offers MULTIPORT, declined; no F_SIZE)"
}

# agent CASE STATUS [qemu-agent options] -- COMMAND...: one command through the agent.
agent() {
  local name=agent-$1 status=$2
  shift 2
  local base=$TMP/$name
  node "$HERE/qemu-agent.mjs" "$base" "$@" >"$TMP/$name.stdout" 2>"$TMP/$name.stderr" &
  local host=$!
  for _ in $(seq 100); do [ -f "$base.out" ] && break; sleep 0.05; done
  run "$name" c-virtio.elf agent -device virtio-serial-pci,disable-legacy=on -chardev pipe,id=c0,path="$base" -device virtconsole,chardev=c0
  wait $host
  local got=$?
  want_rc 1
  [ "$got" = "$status" ] || problems+=("command status $got, expected $status: $(head -c 300 "$TMP/$name.stderr")")
}

check_agent() {
  if [ ! -f ../../dist/runner/command-runner.js ]; then skip agent "dist/ is not built (npx tsc -p tsconfig.json)"; return; fi
  agent echo 0 -- echo hello world
  [ "$(cat "$TMP/agent-echo.stdout")" = "hello world" ] || problems+=("echo printed: $(cat "$TMP/agent-echo.stdout")")
  want "$log" 'agent: run echo \(2 arguments\)' 'agent: exit status 0 sent'
  verdict agent-echo
  agent exit 7 -- exit 7
  verdict agent-exit
  agent stderr 0 -- stderr to the error stream
  [ "$(cat "$TMP/agent-stderr.stderr")" = "to the error stream" ] || problems+=("stderr got: $(cat "$TMP/agent-stderr.stderr")")
  [ -s "$TMP/agent-stderr.stdout" ] && problems+=("stdout should be empty")
  verdict agent-stderr
  head -c 300000 /dev/urandom >"$TMP/stdin.bin"
  agent cat 0 --stdin-file "$TMP/stdin.bin" -- cat
  cmp -s "$TMP/stdin.bin" "$TMP/agent-cat.stdout" || problems+=("cat did not return its 300000 bytes of input")
  verdict "agent-cat (300000 bytes)"
  agent emit 0 -- emit 3000000
  seq 1 1000000 | head -c 3000000 | cmp -s - "$TMP/agent-emit.stdout" || problems+=("emit 3000000 differs from seq: $(wc -c <"$TMP/agent-emit.stdout") bytes")
  verdict "agent-emit (3000000 bytes)"
  agent unknown 127 -- frobnicate
  want "$TMP/agent-unknown.stderr" 'nv-agent: frobnicate: command not found'
  verdict agent-unknown
}

netns_problem() {
  [ "$(id -u)" = 0 ] || { echo "needs root"; return; }
  [ -e /dev/net/tun ] || { echo "/dev/net/tun is missing"; return; }
  command -v ip >/dev/null || { echo "iproute2 is missing"; return; }
}

netns_up() {
  ip netns add "$NS" && ip netns exec "$NS" sh -c "ip link set lo up && ip tuntap add $TAP mode tap && ip addr add 10.0.2.1/24 dev $TAP && ip link set $TAP up"
}

NETDEV=(-netdev "tap,id=n0,ifname=$TAP,script=no,downscript=no" -device virtio-net-pci,netdev=n0,disable-legacy=on,romfile=)

check_net() {
  local why
  why=$(netns_problem)
  if [ -n "$why" ]; then skip net "$why"; return; fi
  netns_up || { skip net "could not set up the network namespace"; return; }
  # The guest serves for 4 s after its own checks; meanwhile the host pings it (python3's raw
  # socket: iputils may be missing), which it must answer.
  log=$TMP/net.log
  : >"$log"
  for attempt in 1 2; do
    (
      # Ping until the guest answers (it serves until one ping is answered, or 30 s).
      for _ in $(seq 20); do
        sleep 1
        ip netns exec "$NS" python3 "$HERE/qemu-ping.py" 10.0.2.15 >"$TMP/ping.txt" 2>&1 && break
      done
    ) &
    ip netns exec "$NS" timeout "$TIMEOUT" "$QEMU" -M pc "${ACCEL[@]}" -m 256 -nographic -no-reboot -kernel build/c-virtio.elf -append 'net serve=30 pings=1' \
      -device isa-debug-exit,iobase=0xf4,iosize=4 "${NETDEV[@]}" >>"$log" 2>&1 </dev/null
    rc=$?
    wait
    if [ "$rc" = 124 ] && [ "$attempt" = 1 ]; then echo "$QEMU_TIMED_OUT" >>"$log"; continue; fi
    break
  done
  want_rc 1
  want "$log" 'net: mac 52:54:00:12:34:56' 'net: link up' 'net: arp reply from 10.0.2.1 at ([0-9a-f]{2}:){5}[0-9a-f]{2}' 'net: ping reply from 10.0.2.1' 'net: answered [0-9]+ ARP requests and [1-9][0-9]* pings'
  want "$TMP/ping.txt" 'reply from 10.0.2.15, payload ok'
  verdict net
  local before after
  before=$(ip netns exec "$NS" cat /sys/class/net/$TAP/statistics/rx_packets)
  log=$TMP/net-bench.log
  ip netns exec "$NS" timeout "$TIMEOUT" "$QEMU" -M pc -m 256 -nographic -no-reboot -kernel build/c-virtio.elf -append 'net-bench frames=20000' \
    -device isa-debug-exit,iobase=0xf4,iosize=4 "${NETDEV[@]}" >"$log" 2>&1 </dev/null
  rc=$?
  after=$(ip netns exec "$NS" cat /sys/class/net/$TAP/statistics/rx_packets)
  want_rc 1
  want "$log" 'bench: net-tx frames=20000 bytes=30280000 .*fps=.*MBps='
  [ $((after - before)) -ge 20000 ] || problems+=("the tap received $((after - before)) frames, fewer than 20000")
  verdict "net-bench (host counted $((after - before)) frames)"
  ip netns del "$NS"
}

check_9p() {
  local d=$TMP/share
  mkdir -p "$d"
  echo "hello from the host" >"$d/hello.txt"
  ln -s /etc/passwd "$d/escape"
  local dev=(-device virtio-9p-pci,fsdev=f0,mount_tag=share,disable-legacy=on)
  run 9p c-virtio.elf 9p -fsdev local,id=f0,path="$d",security_model=none "${dev[@]}"
  want_rc 1
  want "$log" '9p: tag share' '9p: hello.txt: hello from the host' '9p: created from-guest.txt' '9p: walk \.\. from the root stays at the root' '9p: escape refused \(errno 40\)'
  [ "$(cat "$d/from-guest.txt" 2>/dev/null)" = "written by the guest" ] || problems+=("from-guest.txt on the host: $(cat "$d/from-guest.txt" 2>&1)")
  verdict 9p
  rm -f "$d/from-guest.txt"
  run 9p-ro c-virtio.elf 9p-ro -fsdev local,id=f0,path="$d",security_model=none,readonly=on "${dev[@]}"
  want_rc 1
  want "$log" '9p: hello.txt: hello from the host' '9p: read-only share refused a create \(errno 30\)'
  [ -e "$d/from-guest.txt" ] && problems+=("from-guest.txt appeared on a read-only share")
  verdict 9p-ro
  run 9p-escape c-virtio.elf 9p-escape -fsdev local,id=f0,path="$d",security_model=none "${dev[@]}"
  want_rc 1
  want "$log" '9p: escape refused \(errno 40\)'
  verdict 9p-escape
}

# ---- main ---------------------------------------------------------------------------------------

list=(rng blk blk_broken blk_bench console agent net 9p)
command -v "$QEMU" >/dev/null || { echo "$QEMU not found"; exit 2; }
make -s -C "$HERE" >/dev/null || { echo "make failed"; exit 2; }
[ $# -gt 0 ] && list=("${@//-/_}")
for c in "${list[@]}"; do
  if ! declare -F "check_$c" >/dev/null; then echo "unknown scenario $c (known: rng blk blk-broken blk-bench console agent net 9p)"; exit 2; fi
  "check_$c"
done
echo "---- $pass passed, ${#failed[@]} failed, ${#skipped[@]} skipped"
[ ${#failed[@]} -eq 0 ]
