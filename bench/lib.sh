# shellcheck shell=bash
# Shared by the benchmarks: a throwaway cluster per benchmark under
# bench/.run/NAME, set up like scripts/test, and helpers to time SQL.

source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"

# bench_cluster NAME PORT: build, install, start; sets BENCH_DIR, BENCH_PORT.
# CDP_BENCH_PORT_OFFSET (default 0) shifts the port, so that two checkouts
# can run the same benchmark at once.
bench_cluster() {
	BENCH_DIR=${CDP_BENCH_DIR:-$ROOT/bench/.run}/$1
	BENCH_PORT=$(($2 + ${CDP_BENCH_PORT_OFFSET:-0}))
	ensure_packages
	build_install
	pg_dir "$(dirname "$BENCH_DIR")"
	stop_cluster "$BENCH_DIR"
	rm -rf "$BENCH_DIR"
	trap 'stop_cluster "$BENCH_DIR"; release_huge_pages' EXIT
	bench_start "shared_buffers = 1GB" "work_mem = 64MB" \
		"max_wal_size = 8GB" "checkpoint_timeout = 30min" "jit = off" "huge_pages = try"
	bench_psql postgres -c "CREATE DATABASE bench"
	bench_psql bench -c "CREATE EXTENSION cdp"
}

# reserve_huge_pages SIZE: make sure SIZE (plus 10 %) of huge pages is free
# for the cluster's shared memory, raising vm.nr_hugepages if need be (as
# the PostgreSQL documentation recommends for shared_buffers of this size).
# Without them every backend maps each 4 kB page of the buffer pool it
# touches on first use, a page fault each -- about 50 us on this VM -- so a
# young backend pays several times more per buffer than one that has run
# for hours, like the audience worker; the measurements would then say more
# about a session's age than about the work.  BENCH_HUGEPAGES=0 skips this;
# the cluster falls back to normal pages when there are none (huge_pages =
# try).  release_huge_pages gives back what was added.
reserve_huge_pages() {
	local bytes want free total page_kb
	[ "${BENCH_HUGEPAGES:-1}" = 1 ] || return 0
	bytes=$(numfmt --from=iec "${1%B}")
	page_kb=$(awk '/^Hugepagesize:/ {print $2}' /proc/meminfo)
	[ -n "$page_kb" ] || return 0
	want=$((bytes * 11 / 10 / (page_kb * 1024) + 1))
	# free and not promised to a mapping already (reserved pages count as free)
	free=$(awk '/^HugePages_Free:/ {f = $2} /^HugePages_Rsvd:/ {r = $2} END {print f - r}' /proc/meminfo)
	total=$(awk '/^HugePages_Total:/ {print $2}' /proc/meminfo)   # surplus pages included
	((free >= want)) && return 0
	if echo $((total + want - free)) 2>/dev/null >/proc/sys/vm/nr_hugepages; then
		HUGEPAGES_ADDED=$((want - free))
		say "reserved $HUGEPAGES_ADDED huge pages of $page_kb kB for shared buffers (vm.nr_hugepages)"
	else
		say "could not reserve huge pages (vm.nr_hugepages); the cluster uses normal pages"
	fi
}

release_huge_pages() {
	local total
	[ -n "${HUGEPAGES_ADDED:-}" ] || return 0
	total=$(cat /proc/sys/vm/nr_hugepages)
	echo $((total > HUGEPAGES_ADDED ? total - HUGEPAGES_ADDED : 0)) >/proc/sys/vm/nr_hugepages 2>/dev/null || true
	HUGEPAGES_ADDED=
}

# bench_start [SETTINGS...]: (re)start the benchmark's cluster, huge pages
# reserved first (other clusters on the machine may have taken the free
# ones since), and say whether its shared memory got them.
bench_start() {
	local pid
	stop_cluster "$BENCH_DIR"
	reserve_huge_pages 1GB
	start_cluster "$BENCH_DIR" "$BENCH_PORT" "$@"
	pid=$(head -1 "$BENCH_DIR/data/postmaster.pid")
	if awk '/^[0-9a-f]+-[0-9a-f]+ .*(zero|anon_hugepage)/ {m = 1; next}
	        m && /^KernelPageSize:/ {if ($2 >= 2048) h = 1; m = 0}
	        END {exit !h}' "/proc/$pid/smaps" 2>/dev/null; then
		say "shared memory on huge pages"
	else
		say "shared memory on normal pages (no huge pages free): expect slower random access"
	fi
}

bench_psql() {
	local db=$1
	shift
	cluster_psql "$BENCH_DIR" "$BENCH_PORT" "$db" "$@"
}

# best_ms SQL [RUNS]: the fastest of RUNS executions of SQL, in milliseconds
# (server-side time, so client transfer does not count).
best_ms() {
	local sql=$1 runs=${2:-3}
	bench_psql bench -At -c "
		CREATE OR REPLACE FUNCTION pg_temp.best_ms(q text, runs int) RETURNS numeric LANGUAGE plpgsql AS \$\$
		DECLARE t0 timestamptz; best numeric;
		BEGIN
		  FOR i IN 1..runs LOOP
		    t0 := clock_timestamp();
		    EXECUTE q;
		    best := least(best, extract(epoch FROM clock_timestamp() - t0) * 1000);
		  END LOOP;
		  RETURN round(best, 1);
		END \$\$;
		SELECT pg_temp.best_ms(\$q\$$sql\$q\$, $runs);"
}

# result BENCH METRIC VALUE UNIT BASELINE: the closing line format.
result() {
	printf 'result: %s %s %s %s baseline=%s ratio=%s\n' "$1" "$2" "$3" "$4" "$5" \
		"$(python3 -c "print(f'{$3 / $5:.3f}')")"
}

# A long-lived session, like the background worker's backend: plpgsql
# compiled, catalog caches and cached plans warm.  Timing the first call of
# a fresh connection would add ~0.1-0.2 s of such one-off costs.
# bench_session_open DB; bench_session_query SQL (prints the -At result
# lines of the statements in SQL); bench_session_close.
bench_session_open() {
	coproc BENCH_SESSION { cluster_psql "$BENCH_DIR" "$BENCH_PORT" "$1" -At 2>&1; }
}

bench_session_query() {
	local line
	printf '%s\n\\echo __cdp_bench_done__\n' "$1" >&"${BENCH_SESSION[1]}"
	while IFS= read -r line <&"${BENCH_SESSION[0]}"; do
		[ "$line" = __cdp_bench_done__ ] && return 0
		printf '%s\n' "$line"
	done
	die "the benchmark session ended: $1"
}

bench_session_close() {
	printf '\\q\n' >&"${BENCH_SESSION[1]}"
	wait "$BENCH_SESSION_PID" 2>/dev/null || true
}
