# shellcheck shell=bash
# Shared by scripts/test, scripts/demo and bench/*: install what is missing,
# build and install cdp, and run throwaway PostgreSQL clusters owned by the
# postgres OS user.  Source it; do not run it.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PG_MAJOR=15
# PG_CONFIG picks the server (default: Debian's PostgreSQL 15); everything
# else -- binaries, install directories -- follows from it.
export PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/$PG_MAJOR/bin/pg_config}
PG_BINDIR=$("$PG_CONFIG" --bindir 2>/dev/null || echo /usr/lib/postgresql/$PG_MAJOR/bin)

# Warnings are errors; -Wextra without the checks PostgreSQL's own headers
# and fmgr conventions trip over.
STRICT_COPT='-Werror -Wextra -Wno-unused-parameter -Wno-missing-field-initializers -Wno-sign-compare -Wvla'

PACKAGES=(
	postgresql-$PG_MAJOR postgresql-server-dev-$PG_MAJOR
	libicu-dev libssl-dev libcurl4-openssl-dev libphonenumber-dev
	libipc-run-perl g++ make pkg-config python3 ca-certificates
)

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_pg() { runuser -u postgres -- "$@"; }

# Install the Debian packages cdp needs, once: a second run finds them all
# installed and touches nothing.
ensure_packages() {
	local missing=() p
	for p in "${PACKAGES[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	((${#missing[@]} == 0)) && return 0
	[ "$(id -u)" = 0 ] || die "missing packages: ${missing[*]} (run as root, or install them yourself)"
	say "installing ${missing[*]}"
	apt-get update -q >/dev/null
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

# Build with warnings as errors and install into the server's directories.
build_install() {
	[ "$(id -u)" = 0 ] || die "installing the extension needs root (it writes to $($PG_CONFIG --pkglibdir))"
	say "building cdp"
	# PGXS reads PROFILE as extra compiler flags; the benchmarks use the name
	# for their own switch, so it never reaches make.
	env -u PROFILE make -C "$ROOT" -s -j"$(nproc)" COPT="$STRICT_COPT" PG_CONFIG="$PG_CONFIG" >/dev/null
	env -u PROFILE make -C "$ROOT" -s install PG_CONFIG="$PG_CONFIG" >/dev/null
}

# A directory the postgres OS user owns; every parent must be traversable.
pg_dir() {
	local dir=$1
	mkdir -p "$dir"
	chown postgres: "$dir"
	as_pg test -w "$dir" ||
		die "the postgres OS user cannot reach $dir (a parent directory is not traversable); move the checkout or set CDP_WORK_DIR"
}

# start_cluster DIR PORT [extra postgresql.conf lines...]
# Creates the cluster on first use; always (re)starts it so that a freshly
# installed library is the one loaded.
start_cluster() {
	local dir=$1 port=$2 line
	shift 2
	pg_dir "$dir"
	if [ ! -f "$dir/data/PG_VERSION" ]; then
		as_pg "$PG_BINDIR/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
		{
			echo "# cdp throwaway cluster"
			echo "port = $port"
			echo "listen_addresses = '127.0.0.1'"
			echo "unix_socket_directories = '$dir'"
			echo "shared_preload_libraries = 'cdp'"
			echo "max_connections = 40"
			echo "logging_collector = off"
			for line in "$@"; do echo "$line"; done
		} | as_pg tee -a "$dir/data/postgresql.conf" >/dev/null
	fi
	stop_cluster "$dir"
	as_pg "$PG_BINDIR/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null ||
		{ tail -20 "$dir/server.log" >&2; die "the cluster in $dir did not start"; }
}

stop_cluster() {
	local dir=$1
	if [ -f "$dir/data/postmaster.pid" ]; then
		as_pg "$PG_BINDIR/pg_ctl" -D "$dir/data" -w -t 60 -m fast stop >/dev/null 2>&1 || true
	fi
}

# psql against a cluster started by start_cluster: cluster_psql DIR PORT DB args...
cluster_psql() {
	local dir=$1 port=$2 db=$3
	shift 3
	as_pg "$PG_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -d "$db" "$@"
}
