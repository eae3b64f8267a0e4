#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-only
# Installs what `cargo xtask build-kmod` and `cargo xtask vmtest` need on a Debian 12 host:
# QEMU, the guest tools copied into the test initramfs, the kernel build helpers, and the Rust
# pieces for the kernel target. Idempotent, and quick when everything is already there.
set -euo pipefail

packages=(
	# Booting the test kernels (TCG; the firmware comes with it).
	qemu-system-x86
	# Guest tools: busybox runs /init; the rest are copied with their libraries (ipset and
	# nftables: the peers of the benchmarks).
	busybox-static iproute2 iptables kmod conntrack tcpdump ipset nftables
	# Unpacking Debian kernels and their modules, and inspecting objects.
	dpkg xz-utils zstd cpio binutils debian-archive-keyring
	# kbuild for out-of-tree modules (pahole: BTF of modules on 6.12, whose headers ship vmlinux).
	make gcc libelf-dev bc flex bison dwarves
	# Building the iptables extension against the real xtables.h.
	libxtables-dev pkg-config
	# The Rust-for-Linux kernel (rfl-6.12): LLVM 19 with libclang for bindgen, and patch for the
	# bindings patch kept in seng-kmod-rfl/kernel/.
	clang-19 lld-19 llvm-19 libclang-19-dev patch
	# The VM test client that talks to seng.ko through libnl as the original SENG library does.
	libnl-genl-3-dev
	# `cargo xtask deb`: debhelper with dh_dkms, lintian, and CMake and g++ for user-library/
	# and the C++ consumer; `--test` makes its Debian root with debootstrap.
	dpkg-dev debhelper dh-dkms lintian cmake g++ debootstrap
	# `seng agent` (issue 16): the etcd its VM tests start in the guest, etcdctl that drives
	# them, and protoc with the well-known types for the agent's etcd client.
	etcd-server etcd-client protobuf-compiler libprotobuf-dev
)

sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)

missing=()
for pkg in "${packages[@]}"; do
	status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
	[ "$status" = "install ok installed" ] || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "setup-host: installing ${missing[*]}"
	"${sudo[@]}" apt-get update -q
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The Rust object of seng.ko is built for x86_64-unknown-none with -Zbuild-std (rust-src).
rustup target add x86_64-unknown-none
rustup component add rust-src
# The Rust-for-Linux kernel generates its bindings with bindgen (0.73 is known to work).
command -v bindgen >/dev/null || cargo install --locked bindgen-cli@0.73.2
