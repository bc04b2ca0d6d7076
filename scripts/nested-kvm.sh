#!/usr/bin/env bash
# Runs a command on a real KVM when this machine has none: inside a QEMU virtual machine (software
# emulation, TCG) whose emulated CPU has AMD SVM, booting the guest kit's Debian kernel, which loads
# kvm and kvm_amd and so has a working /dev/kvm. The VM sees this machine's whole file system over
# virtio-9p and runs the command chrooted into it, in the current directory, with the same PATH and
# a few variables passed through (CI, NODEVISOR_*); its exit status is returned.
#
#   scripts/nested-kvm.sh [--mem MiB] [--cpus N] [--timeout SECONDS] [--quiet-limit SECONDS] -- COMMAND [ARGS...]
#
# Everything in the VM runs at software-emulation speed (roughly 10-50x slower than native), and the
# guests nodevisor starts in there run on KVM's nested SVM, itself emulated: it is for correctness
# (tests), never for speed. Exit status: the command's; 125 when the VM could not run it; 75 when the
# emulated VM's own kernel panicked, or when the VM wedged (its kernel reported a CPU stuck for
# NESTED_KVM_WEDGED_AFTER seconds, 240 by default) or printed nothing for --quiet-limit seconds (for
# a command known to print regularly), and was stopped, after printing its CPUs' state (QMP `info
# registers -a`, to find out some day what wedges it); 124 when --timeout passed first (the VM is stopped then too). The QMP socket is
# NESTED_KVM_QMP if set (to look inside a VM that hangs), else a private one. Needs
# qemu-system-x86_64, cpio, gzip, python3 (for the QMP dump) and the guest kit (kernel, modules and
# busybox initramfs: guests/kit/build.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
kit=${NODEVISOR_KIT_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/nodevisor/kit}
mem=8192
cpus=$(nproc)
timeout=0
quiet_limit=0
while [ $# -gt 0 ]; do
  case "$1" in
    --mem) mem=$2; shift 2 ;;
    --cpus) cpus=$2; shift 2 ;;
    --timeout) timeout=$2; shift 2 ;;
    --quiet-limit) quiet_limit=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "nested-kvm.sh: unknown option $1 (usage: nested-kvm.sh [--mem MiB] [--cpus N] [--timeout SECONDS] [--quiet-limit SECONDS] -- COMMAND...)" >&2; exit 2 ;;
  esac
done
[ $# -gt 0 ] || { echo "nested-kvm.sh: no command" >&2; exit 2; }
for f in "$kit/stock/vmlinuz" "$kit/initramfs.cpio.gz"; do
  [ -f "$f" ] || { echo "nested-kvm.sh: $f is missing (run guests/kit/build.sh)" >&2; exit 2; }
done
command -v qemu-system-x86_64 >/dev/null || { echo "nested-kvm.sh: qemu-system-x86_64 is not installed" >&2; exit 2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/nv-nested.XXXXXX")
trap 'rm -rf "$work"' EXIT
root="$work/root"
mkdir -p "$root"
(cd "$root" && gzip -dc "$kit/initramfs.cpio.gz" | cpio -idm --quiet)
# KVM (and what it needs) and tun for the network tests, from the kit's Debian modules.
for m in irqbypass kvm ccp kvm-amd tun; do
  f=$(find "$kit/stock/modules" -name "$m.ko*" | head -1)
  [ -n "$f" ] || { echo "nested-kvm.sh: module $m not found in the kit" >&2; exit 2; }
  case "$f" in *.xz) xz -dc "$f" > "$root/lib/modules/$m.ko" ;; *) cp "$f" "$root/lib/modules/$m.ko" ;; esac
done
mkdir -p "$root/host"
# The command, its directory and environment, as a script the VM runs inside the chroot.
{
  echo '#!/bin/bash'
  echo "cd $(printf '%q' "$PWD")"
  echo "export PATH=$(printf '%q' "$PATH") HOME=$(printf '%q' "$HOME")"
  { env | grep -E '^(CI|NODEVISOR_[A-Z_]*|XDG_CACHE_HOME)=' || true; } | while IFS= read -r kv; do echo "export $(printf '%q' "$kv")"; done
  # Tells the tests that their KVM is nested SVM emulated by TCG (test/helpers/kvm.mjs).
  echo "export NODEVISOR_EMULATED_SVM=1"
  printf '%q ' "$@"
  echo
} > "$root/cmd.sh"
# The first folder below /tmp on the way to the current directory, if it is under /tmp.
cwd_top=
case "$PWD" in /tmp/?*) rel=${PWD#/tmp/}; cwd_top=${rel%%/*} ;; esac
cat > "$root/init" <<INIT
#!/bin/sh
export PATH=/bin:/sbin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for pass in 1 2; do while read -r m; do grep -q "^\$m " /proc/modules || insmod /lib/modules/\$m.ko 2>/dev/null; done < /lib/modules/load-order; done
for m in irqbypass kvm ccp kvm-amd tun; do insmod /lib/modules/\$m.ko 2>/dev/null; done
[ -c /dev/kvm ] || { echo "nested-kvm: no /dev/kvm in the VM (kvm_amd did not load)"; echo "NESTED-STATUS 125"; poweroff -f; }
mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288,cache=loose host /host || { echo "NESTED-STATUS 125"; poweroff -f; }
for d in dev proc sys; do mount --bind /\$d /host/\$d; done
mkdir -p /host/dev/pts && mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /host/dev/pts
# /tmp is a tmpfs of the VM's own (unix sockets and FIFOs do not work over 9p); if the command's
# directory is under the host's /tmp, it is carried over into the new /tmp by a bind mount.
mkdir -p /hosttmp && mount --bind /host/tmp /hosttmp
mount -t tmpfs tmp /host/tmp
[ -n "$cwd_top" ] && mkdir -p "/host/tmp/$cwd_top" && mount --bind "/hosttmp/$cwd_top" "/host/tmp/$cwd_top"
cp /cmd.sh /host/tmp/nested-cmd.sh
mount -t tmpfs run /host/run 2>/dev/null
ip link set lo up 2>/dev/null
# A VM that is never run, with an in-kernel APIC left software-disabled, held for the whole session:
# it keeps KVM's apic_sw_disabled static key from dropping to zero, and back, each time the last VM
# of a test goes and the next one comes. Each such flip rewrites kernel code on the fly (int3, then
# the new instruction, with IPIs between), and TCG's multi-threaded mode sometimes lets another CPU
# go on executing its stale copy of the int3: that CPU then loops between the int3 and the kernel's
# "breakpoint already gone, retry" handler, interrupts off, for good. The wedges seen had one CPU in
# exc_int3 and another in __schedule or a static-call trampoline, at the end of a test.
chroot /host python3 -c '
import fcntl, os, signal
kvm = os.open("/dev/kvm", os.O_RDWR)
vm = fcntl.ioctl(kvm, 0xAE01, 0)  # KVM_CREATE_VM
fcntl.ioctl(vm, 0xAE60, 0)        # KVM_CREATE_IRQCHIP
fcntl.ioctl(vm, 0xAE41, 0)        # KVM_CREATE_VCPU 0, never run
signal.pause()' </dev/null >/dev/null 2>&1 &
echo NESTED-BEGIN
chroot /host /bin/bash /tmp/nested-cmd.sh
echo "NESTED-STATUS \$?"
poweroff -f
INIT
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) > "$work/initramfs.gz"

echo "nested-kvm: running on KVM inside a QEMU (TCG, emulated AMD SVM) VM: $*" >&2
status=125
begun=
# The VM's kernel reports when one of its CPUs has been stuck in kernel mode ("soft lockup ... stuck
# for Ns"). Under TCG a short stall can be the host being busy, and passes; a CPU stuck for minutes
# means the emulated machine itself has wedged (seen once in CI: a CPU looping in the VM's kernel for
# an hour, in KVM's nested-SVM path under TCG). Then nothing the command does can finish, so the VM
# is stopped and the status says so (75), apart from the command's own failures.
wedged_after=${NESTED_KVM_WEDGED_AFTER:-240}
stop_vm() { [ -s "$work/qemu.pid" ] && kill "$(cat "$work/qemu.pid")" 2>/dev/null || true; }
qmp=${NESTED_KVM_QMP:-$work/qmp.sock}
# Prints where the VM's CPUs are (QMP human monitor), then stops the VM: status 75.
wedged() {
  echo "nested-kvm: the emulated VM has wedged ($1): its CPUs' state follows; stopping it; status 75" >&2
  timeout 30 python3 - "$qmp" <<'PY' 2>&1 | sed 's/^/nested-kvm: qmp: /' >&2 || true
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
f = s.makefile('rw')
def cmd(name, **args):
    f.write(json.dumps({'execute': name, **({'arguments': args} if args else {})}) + '\n')
    f.flush()
    while True:
        r = json.loads(f.readline())
        if 'return' in r or 'error' in r:
            return r.get('return', r)
f.readline()
cmd('qmp_capabilities')
for line in ('info cpus', 'info registers -a'):
    print(f'== {line}')
    print(cmd('human-monitor-command', **{'command-line': line}))
PY
  status=75
  stop_vm
}
trap 'stop_vm; [ -z "${timer:-}" ] || kill "$timer" 2>/dev/null || true; rm -rf "$work"' EXIT
# A whole-run deadline, so that a caller with a budget (CI) gets a clear failure in time.
timer=
if [ "$timeout" -gt 0 ] 2>/dev/null; then
  (trap 'kill "$nap" 2>/dev/null; exit 0' TERM; sleep "$timeout" & nap=$!; wait "$nap" && touch "$work/timed-out" && stop_vm) &
  timer=$!
fi
# The VM's serial console carries the command's output (firmware noise before it is dropped); the
# status comes back as a line of its own.
# (QEMU's output is read straight, line by line: a filter such as tr would hold it back in blocks.)
# With --quiet-limit, a silence that long also counts as wedged: the caller's command prints more
# often than that while it is alive (npm test: a line per finished test, the slowest about a minute).
read_opts=()
[ "$quiet_limit" -gt 0 ] 2>/dev/null && read_opts=(-t "$quiet_limit")
while true; do
  if ! IFS= read -r "${read_opts[@]}" line; then
    # read returns >128 on a time-out, 1 at the end of QEMU's output.
    if [ "${#read_opts[@]}" -gt 0 ] && [ -s "$work/qemu.pid" ] && kill -0 "$(cat "$work/qemu.pid")" 2>/dev/null && [ ! -e "$work/timed-out" ]; then
      wedged "nothing printed for ${quiet_limit}s"
    fi
    break
  fi
  line=${line%$'\r'}
  case "$line" in
    *NESTED-BEGIN) begun=1 ;;
    *"NESTED-STATUS "*) status=${line##*NESTED-STATUS }; begun= ;;
    "["*"] Kernel panic - not syncing"*)
      # The VM's own kernel died (seen: a stack overflow of page faults in its exc_page_fault, its GS
      # base lost on the way back from running a guest): nothing the command does can finish. Its
      # console lines start with the printk time stamp; the command's output (guests' kernel logs
      # included) comes indented or prefixed.
      printf '%s\n' "$line"
      echo "nested-kvm: the emulated VM's own kernel panicked: stopping it; status 75" >&2
      status=75
      stop_vm ;;
    *"soft lockup - CPU#"*"stuck for "*)
      printf '%s\n' "$line"
      stuck=${line##*stuck for }; stuck=${stuck%%s*}
      if [ "${stuck:-0}" -ge "$wedged_after" ] 2>/dev/null; then
        wedged "a CPU stuck in its kernel for ${stuck}s"
      fi ;;
    *) if [ -n "$begun" ]; then printf '%s\n' "$line"; fi ;;
  esac
done < <(qemu-system-x86_64 -M q35 -accel "tcg,thread=${NESTED_KVM_TCG_THREAD:-multi}" -cpu max -smp "$cpus" -m "$mem" -nographic -no-reboot \
  -pidfile "$work/qemu.pid" -qmp "unix:$qmp,server=on,wait=off" \
  -kernel "$kit/stock/vmlinuz" -initrd "$work/initramfs.gz" -append "console=ttyS0 panic=-1 quiet loglevel=${NESTED_KVM_LOGLEVEL:-1}" \
  -fsdev local,id=host,path=/,security_model=passthrough,multidevs=remap -device virtio-9p-pci,fsdev=host,mount_tag=host,disable-legacy=on </dev/null 2>&1)
if [ -e "$work/timed-out" ]; then
  echo "nested-kvm: --timeout $timeout passed: the VM was stopped; status 124" >&2
  status=124
fi
exit "$status"
