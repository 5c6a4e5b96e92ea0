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
	start_cluster "$BENCH_DIR" "$BENCH_PORT" "shared_buffers = 1GB" "work_mem = 64MB" \
		"max_wal_size = 8GB" "checkpoint_timeout = 30min" "jit = off"
	trap 'stop_cluster "$BENCH_DIR"' EXIT
	bench_psql postgres -c "CREATE DATABASE bench"
	bench_psql bench -c "CREATE EXTENSION cdp"
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
