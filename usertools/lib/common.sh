# SPDX-License-Identifier: Apache-2.0
# shellcheck shell=bash
#
# Helpers shared by the usertools scripts: source this file, do not run it.
#
# Environment:
#   VUB_BUILD_DIR          build directory (default: <repo>/build)
#   VUB_MESON_SETUP_ARGS   extra arguments for the first `meson setup` (e.g. -Db_sanitize=address)
#   VUB_NR_HUGEPAGES       2 MiB hugepages to reserve (default: 1024)
#   VUB_BUILD_JOBS         parallel jobs for ninja (default: ninja's own, CPUs + 2)

VUB_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VUB_BUILD_DIR=${VUB_BUILD_DIR:-$VUB_ROOT/build}
VUB_NR_HUGEPAGES=${VUB_NR_HUGEPAGES:-1024}
VUB_HUGEPAGE_DIR=/dev/hugepages
# Hugepages a testpmd front-end needs free (512 MiB, as tests/integration asks for).
VUB_MIN_FREE_HUGEPAGES=256

# The Debian 12 packages vub builds, tests and runs with.
VUB_DEB_PACKAGES=(
	meson ninja-build g++ pkg-config
	libhwloc-dev libnuma-dev libiniparser-dev
	libgtest-dev libbenchmark-dev
	dpdk dpdk-dev libdpdk-dev
	python3 clang-format clang-tidy
	clang libclang-rt-14-dev
	qemu-system-x86 busybox-static
)

# Packages only some tools use, installed when that tool needs them (vub_install_packages):
# hwloc's lstopo for `vub-setup layout`; gnuplot (without X) for vub-perf's chart.
# shellcheck disable=SC2034 # used by the scripts that source this file
VUB_DEB_TOOL_PACKAGES=(hwloc)
# shellcheck disable=SC2034
VUB_DEB_PERF_PACKAGES=(gnuplot-nox)

# Print the calling script's header comment (its usage), without the SPDX and shellcheck lines.
vub_usage()
{
	awk 'NR <= 2 { next } !/^#/ { exit } /SPDX|shellcheck/ { next }
		{ sub(/^# ?/, ""); if (started || $0 != "") { started = 1; print } }' "$0"
}

vub_log()
{
	printf '%s: %s\n' "${0##*/}" "$*" >&2
}

vub_die()
{
	vub_log "error: $*"
	exit 1
}

vub_is_root()
{
	[[ $(id -u) -eq 0 ]]
}

# Print the packages of VUB_DEB_PACKAGES (or of the arguments) that are not installed, one a line.
vub_missing_packages()
{
	local pkg status
	local -a pkgs=("$@")
	[[ $# -gt 0 ]] || pkgs=("${VUB_DEB_PACKAGES[@]}")
	for pkg in "${pkgs[@]}"; do
		status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null) || status=
		[[ $status == "install ok installed" ]] || echo "$pkg"
	done
}

# Install those of the given packages that are missing. Touches apt only when something is
# missing; as a user other than root, prints the command to run and fails.
vub_install_packages()
{
	command -v dpkg-query >/dev/null 2>&1 ||
		vub_die "dpkg-query not found: vub's tools expect Debian 12 (install: $*)"
	local missing
	mapfile -t missing < <(vub_missing_packages "$@")
	if [[ ${#missing[@]} -eq 0 ]]; then
		return 0
	fi
	if ! vub_is_root; then
		vub_log "missing packages: ${missing[*]}"
		vub_log "install them as root:"
		echo "  apt-get update && apt-get install -y --no-install-recommends ${missing[*]}" >&2
		return 1
	fi
	vub_log "installing: ${missing[*]}"
	apt-get update &&
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
}

# Install the missing packages of VUB_DEB_PACKAGES (see vub_install_packages).
vub_install_deps()
{
	vub_install_packages "${VUB_DEB_PACKAGES[@]}"
}

# Configure VUB_BUILD_DIR if it is not (meson setup), then build it (ninja).
vub_build()
{
	if [[ ! -f $VUB_BUILD_DIR/build.ninja ]]; then
		local -a setup=(meson setup)
		# A directory left by an interrupted setup: start it over.
		[[ -d $VUB_BUILD_DIR/meson-private ]] && setup+=(--wipe)
		# shellcheck disable=SC2206 # word splitting of the extra arguments is wanted
		setup+=(${VUB_MESON_SETUP_ARGS:-} "$VUB_BUILD_DIR" "$VUB_ROOT")
		vub_log "${setup[*]}"
		"${setup[@]}" || return 1
	fi
	ninja -C "$VUB_BUILD_DIR" ${VUB_BUILD_JOBS:+-j "$VUB_BUILD_JOBS"}
}

# Free 2 MiB hugepages now (0 when there is no pool).
vub_free_hugepages()
{
	local f=/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages
	if [[ -r $f ]]; then
		cat "$f"
	else
		echo 0
	fi
}

vub_hugetlbfs_mounted()
{
	awk -v dir="$VUB_HUGEPAGE_DIR" '$2 == dir && $3 == "hugetlbfs" { found = 1 } END { exit !found }' \
		/proc/mounts
}

# As root: reserve VUB_NR_HUGEPAGES 2 MiB hugepages (never fewer than are reserved already)
# and mount hugetlbfs on /dev/hugepages. Returns 0 when hugepages are usable afterwards;
# otherwise says so and returns 1, and callers fall back to memfd memory (DPDK --no-huge).
vub_setup_hugepages()
{
	local nr_path=/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages
	# The default size is 2 MiB on x86-64: then this is the file the kernel docs name.
	if grep -q '^Hugepagesize:[[:space:]]*2048 kB' /proc/meminfo 2>/dev/null; then
		nr_path=/proc/sys/vm/nr_hugepages
	fi
	if [[ ! -e /sys/kernel/mm/hugepages/hugepages-2048kB ]]; then
		vub_log "this kernel has no 2 MiB hugepages: falling back to memfd memory (--no-huge)"
		return 1
	fi

	if vub_is_root; then
		local current
		current=$(cat "$nr_path" 2>/dev/null || echo 0)
		if ((current < VUB_NR_HUGEPAGES)); then
			if ! echo "$VUB_NR_HUGEPAGES" >"$nr_path" 2>/dev/null; then
				vub_log "cannot write $nr_path (read-only /proc or /sys in a container?)"
			fi
			current=$(cat "$nr_path" 2>/dev/null || echo 0)
			((current >= VUB_NR_HUGEPAGES)) ||
				vub_log "reserved $current of $VUB_NR_HUGEPAGES hugepages (memory fragmented or short)"
		fi
		if ! vub_hugetlbfs_mounted; then
			if ! { mkdir -p "$VUB_HUGEPAGE_DIR" &&
				mount -t hugetlbfs -o pagesize=2M nodev "$VUB_HUGEPAGE_DIR" 2>/dev/null; }; then
				vub_log "cannot mount hugetlbfs on $VUB_HUGEPAGE_DIR"
			fi
		fi
	fi

	local free
	free=$(vub_free_hugepages)
	if ((free < VUB_MIN_FREE_HUGEPAGES)) || ! vub_hugetlbfs_mounted; then
		vub_log "hugepages not usable ($free free 2 MiB pages, need $VUB_MIN_FREE_HUGEPAGES;" \
			"hugetlbfs on $VUB_HUGEPAGE_DIR: $(vub_hugetlbfs_mounted && echo yes || echo no))"
		vub_log "falling back to memfd memory: DPDK front-ends run with --no-huge -m 1024"
		return 1
	fi
	vub_log "hugepages: $free free 2 MiB pages, hugetlbfs on $VUB_HUGEPAGE_DIR"
	return 0
}

# Print (and create, mode 0700) the runtime directory for sockets: /run/vub as root, else
# $XDG_RUNTIME_DIR/vub, else /tmp/vub.
vub_runtime_dir()
{
	local dir
	if vub_is_root; then
		dir=/run/vub
	elif [[ -n ${XDG_RUNTIME_DIR:-} && -d ${XDG_RUNTIME_DIR:-} ]]; then
		dir=$XDG_RUNTIME_DIR/vub
	else
		dir=/tmp/vub
	fi
	# The parent exists (/run, $XDG_RUNTIME_DIR, /tmp): -m applies to $dir itself.
	# shellcheck disable=SC2174
	mkdir -p -m 0700 "$dir" || return 1
	[[ -O $dir ]] || vub_die "$dir belongs to another user"
	echo "$dir"
}

# Expand a kernel CPU list ("0-3,8,10-11") into one CPU number a line.
vub_expand_cpu_list()
{
	local part
	local -a parts
	IFS=, read -ra parts <<<"$1"
	for part in "${parts[@]}"; do
		[[ -n $part ]] || continue
		if [[ $part == *-* ]]; then
			seq "${part%-*}" "${part#*-}"
		else
			echo "$part"
		fi
	done
}

# The CPUs this script may run on (its affinity, a cgroup's cpuset included), one a line.
vub_allowed_cpus()
{
	local list
	list=$(awk '/^Cpus_allowed_list:/ { print $2 }' /proc/self/status 2>/dev/null) || list=
	[[ -n $list ]] || list=$(cat /sys/devices/system/cpu/online 2>/dev/null) || list=0
	vub_expand_cpu_list "$list"
}

# The hardware threads sharing a core with CPU $1 (itself included), one a line.
vub_cpu_siblings()
{
	local f=/sys/devices/system/cpu/cpu$1/topology/thread_siblings_list
	if [[ -r $f ]]; then
		vub_expand_cpu_list "$(cat "$f")"
	else
		echo "$1"
	fi
}

# The NUMA node of CPU $1 (0 when the kernel shows none).
vub_cpu_node()
{
	local node
	for node in /sys/devices/system/cpu/cpu"$1"/node[0-9]*; do
		[[ -e $node ]] && {
			echo "${node##*/node}"
			return 0
		}
	done
	echo 0
}

# Print the inode of the listening unix socket bound to path $1, from /proc/net/unix (so
# nothing connects to it); return 1 when none listens there.
vub_socket_listener()
{
	# Flags 00010000: __SO_ACCEPTCON, a listening socket. The path is the last field.
	awk -v path="$1" 'NR > 1 && $4 == "00010000" && $NF == path { print $7; found = 1; exit }
		END { exit !found }' /proc/net/unix 2>/dev/null
}

# Print "PID COMMAND" of the processes holding socket inode $1, one a line.
vub_socket_owners()
{
	local fd pid
	# find fails on the processes that end while it runs: what it found still counts.
	{ find /proc/[0-9]*/fd -maxdepth 1 -lname "socket:\\[$1\\]" 2>/dev/null || true; } |
		while read -r fd; do
			pid=${fd#/proc/}
			pid=${pid%%/*}
			echo "$pid $(cat "/proc/$pid/comm" 2>/dev/null)"
		done | sort -u
}

# Return 0 when DPDK can take $1 2 MiB hugepages now: hugetlbfs mounted and that many free.
vub_hugepages_usable()
{
	vub_hugetlbfs_mounted && (($(vub_free_hugepages) >= $1))
}
