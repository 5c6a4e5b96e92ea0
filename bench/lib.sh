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
