# SPDX-License-Identifier: Apache-2.0
# shellcheck shell=bash
#
# Helpers shared by the usertools scripts: source this file, do not run it.
#
# Environment:
#   VUB_BUILD_DIR          build directory (default: <repo>/build)
#   VUB_MESON_SETUP_ARGS   extra arguments for the first `meson setup` (e.g. -Db_sanitize=address)
#   VUB_NR_HUGEPAGES       2 MiB hugepages to reserve (default: 1024)

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
)

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

# Print the packages of VUB_DEB_PACKAGES that are not installed, one a line.
vub_missing_packages()
{
	local pkg status
	for pkg in "${VUB_DEB_PACKAGES[@]}"; do
		status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null) || status=
		[[ $status == "install ok installed" ]] || echo "$pkg"
	done
}

# Install the missing packages. Touches apt only when something is missing; as a user other
# than root, prints the command to run and fails.
vub_install_deps()
{
	command -v dpkg-query >/dev/null 2>&1 ||
		vub_die "dpkg-query not found: vub's tools expect Debian 12 (install: ${VUB_DEB_PACKAGES[*]})"
	local missing
	mapfile -t missing < <(vub_missing_packages)
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
	ninja -C "$VUB_BUILD_DIR"
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
