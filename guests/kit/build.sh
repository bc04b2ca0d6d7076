#!/usr/bin/env bash
# Builds nodevisor's Linux guest kit from Debian packages, cached so that a second run is instant:
#   small/vmlinux, small/bzImage  the small kernel (linux-source-6.1 + small-kernel.config)
#   stock/vmlinuz, stock/modules  Debian's linux-image-*-amd64 (fetched, never installed)
#   initramfs.cpio.gz             busybox-static with an /init that loads the virtio/9p modules
# Usage: build.sh [--what small|stock|initramfs|all]   (default all)
# Output: $NODEVISOR_KIT_DIR, or ${XDG_CACHE_HOME:-~/.cache}/nodevisor/kit
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
kit=${NODEVISOR_KIT_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/nodevisor/kit}
what=all
while [ $# -gt 0 ]; do
  case "$1" in
    --what) what=$2; shift 2 ;;
    *) echo "build.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
case "$what" in small|stock|initramfs|all) ;; *) echo "build.sh: --what must be small, stock, initramfs or all" >&2; exit 2 ;; esac
mkdir -p "$kit"
say() { echo "nodevisor: $*" >&2; }

apt_updated=
apt_update_once() { [ -n "$apt_updated" ] || { apt-get update -qq; apt_updated=1; }; }

# need PKG PATH-OR-COMMAND...: installs each Debian package whose command or file is missing.
need() {
  local missing=() pkg what
  while [ $# -gt 1 ]; do
    pkg=$1 what=$2
    shift 2
    case "$what" in
      /*) [ -e "$what" ] || missing+=("$pkg") ;;
      *) command -v "$what" >/dev/null 2>&1 || missing+=("$pkg") ;;
    esac
  done
  [ ${#missing[@]} -eq 0 ] && return
  say "installing build tools: ${missing[*]}"
  apt_update_once
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# Fetches a Debian package without installing it and unpacks it into $2.
fetch_deb() {
  local pkg=$1 dest=$2 tmp
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download -q "$pkg" >/dev/null 2>&1) || { apt_update_once; (cd "$tmp" && apt-get download -q "$pkg" >/dev/null); }
  dpkg-deb -x "$tmp"/*.deb "$dest"
  rm -rf "$tmp"
}

pkg_version() { apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2}'; }

build_small() {
  local key ver out="$kit/small"
  [ -n "$(pkg_version linux-source-6.1)" ] || apt_update_once
  ver=$(pkg_version linux-source-6.1)
  [ -n "$ver" ] && [ "$ver" != "(none)" ] || { echo "build.sh: Debian's linux-source-6.1 is not available from apt" >&2; exit 1; }
  key="linux-source-6.1=$ver $(sha256sum "$here/small-kernel.config" | cut -c1-16)"
  if [ -f "$out/key" ] && [ "$(cat "$out/key")" = "$key" ] && [ -f "$out/vmlinux" ] && [ -f "$out/bzImage" ]; then return; fi
  need make make gcc gcc flex flex bison bison bc bc xz-utils xz libelf-dev /usr/include/libelf.h libssl-dev /usr/include/openssl/ssl.h
  say "building the small kernel from Debian's linux-source-6.1 $ver (about 12 minutes on 2 cores)..."
  local work
  work=$(mktemp -d "$kit/.small.XXXXXX")
  fetch_deb linux-source-6.1 "$work/pkg"
  tar -C "$work" -xf "$work"/pkg/usr/src/linux-source-6.1.tar.xz
  local src="$work/linux-source-6.1"
  (cd "$src" && make -s tinyconfig >/dev/null && scripts/kconfig/merge_config.sh -m .config "$here/small-kernel.config" >/dev/null && make -s olddefconfig >/dev/null)
  # Every option the fragment asks for must survive olddefconfig, or the kernel is not what we test.
  local dropped=0
  while IFS= read -r line; do
    case "$line" in CONFIG_*=y) grep -qx "$line" "$src/.config" || { echo "build.sh: $line was dropped by olddefconfig" >&2; dropped=1; } ;; esac
  done < "$here/small-kernel.config"
  [ $dropped -eq 0 ] || exit 1
  (cd "$src" && make -s -j3 vmlinux bzImage >/dev/null)
  mkdir -p "$work/out"
  cp "$src/vmlinux" "$work/out/vmlinux"
  cp "$src/arch/x86/boot/bzImage" "$work/out/bzImage"
  cp "$src/.config" "$work/out/config"
  echo "$key" > "$work/out/key"
  rm -rf "$out"
  mv "$work/out" "$out"
  rm -rf "$work"
  say "small kernel ready: $out/vmlinux, $out/bzImage"
}

stock_version() {
  [ -n "$(pkg_version linux-image-amd64)" ] || apt_update_once
  apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'
}

build_stock() {
  local img out="$kit/stock"
  img=$(stock_version)
  [ -n "$img" ] || { echo "build.sh: cannot resolve linux-image-amd64's kernel package" >&2; exit 1; }
  if [ -f "$out/key" ] && [ "$(cat "$out/key")" = "$img" ]; then return; fi
  say "fetching Debian's stock kernel $img..."
  local work
  work=$(mktemp -d "$kit/.stock.XXXXXX")
  fetch_deb "$img" "$work/pkg"
  mkdir -p "$work/out"
  cp "$work"/pkg/boot/vmlinuz-* "$work/out/vmlinuz"
  mv "$work"/pkg/lib/modules/* "$work/out/modules"
  echo "$img" > "$work/out/key"
  rm -rf "$out"
  mv "$work/out" "$out"
  rm -rf "$work"
}

# The modules the init loads, in dependency order (those built into the kernel are simply absent).
MODULES="failover net_failover virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk virtio_net virtio_console virtio-rng netfs fscache 9pnet 9pnet_virtio 9p"

build_initramfs() {
  build_stock
  local key out="$kit/initramfs.cpio.gz" bbver
  [ -n "$(pkg_version busybox-static)" ] || apt_update_once
  bbver=$(pkg_version busybox-static)
  key="$(cat "$kit/stock/key") busybox-static=$bbver $(sha256sum "$here/init" | cut -c1-16) agent=$(sha256sum "$here/agent/nv-agent.c" | cut -c1-16)"
  if [ -f "$out" ] && [ -f "$kit/initramfs.key" ] && [ "$(cat "$kit/initramfs.key")" = "$key" ]; then return; fi
  need cpio cpio xz-utils xz
  say "building the busybox initramfs..."
  local work root
  work=$(mktemp -d "$kit/.initramfs.XXXXXX")
  fetch_deb busybox-static "$work/bb"
  root="$work/root"
  mkdir -p "$root"/{bin,sbin,dev,proc,sys,tmp,mnt,lib/modules,etc}
  cp "$work/bb/bin/busybox" "$root/bin/busybox"
  for app in $("$root/bin/busybox" --list); do [ -e "$root/bin/$app" ] || ln -s busybox "$root/bin/$app"; done
  cp "$here/init" "$root/init"
  chmod 755 "$root/init"
  # The command runner's agent (nodevisor run -- COMMAND), static so that it needs nothing else.
  gcc -static -O2 -s -Wall -Wextra -o "$root/bin/nv-agent" "$here/agent/nv-agent.c"
  local moddir
  moddir=$(ls -d "$kit"/stock/modules/*/ 2>/dev/null | head -1 || true)
  : > "$root/lib/modules/load-order"
  for m in $MODULES; do
    local f
    f=$(find "$moddir" -name "$m.ko*" 2>/dev/null | head -1 || true)
    [ -n "$f" ] || continue
    case "$f" in
      *.xz) xz -dc "$f" > "$root/lib/modules/$m.ko" ;;  # busybox insmod cannot read compressed modules
      *) cp "$f" "$root/lib/modules/$m.ko" ;;
    esac
    echo "$m" >> "$root/lib/modules/load-order"
  done
  (cd "$root" && find . | cpio -o -H newc --quiet | gzip -9) > "$work/initramfs.cpio.gz"
  mv "$work/initramfs.cpio.gz" "$out"
  echo "$key" > "$kit/initramfs.key"
  rm -rf "$work"
  say "initramfs ready: $out"
}

case "$what" in
  small) build_small ;;
  stock) build_stock ;;
  initramfs) build_initramfs ;;
  all) build_small; build_initramfs ;;
esac
