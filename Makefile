# pgcanvas: `make demo` runs the voter-roll job on the embedded database; `make test` runs the tests.
SHELL := /bin/bash
SWIFT ?= swift
CONFIG ?= release
BIN = .build/$(CONFIG)
DB_URL = $(shell scripts/pgdev.sh url)

.PHONY: deps db db-stop build test shell-tests browser-test soak soak-10m demo bench clean format

deps:
	@scripts/deps.sh

db: deps
	@scripts/pgdev.sh start
	@echo "DATABASE_URL=$(DB_URL)"

db-stop:
	@scripts/pgdev.sh stop

build: deps
	$(SWIFT) build -c $(CONFIG)

# Tests use DATABASE_URL when it is set; otherwise they start the embedded server and stop it after.
# Then the example application (Examples/hello, a package of its own) is built and run end to end,
# the dashboard is driven in headless Chromium (scripts/browser-test.sh; screenshots in
# .build/browser-screenshots/), and the shell tests run: each starts PostgreSQL clusters and
# workers of its own (SHELL_TESTS).
SHELL_TESTS = scripts/failover-test.sh scripts/netns-test.sh
test: deps
	@$(SWIFT) build --build-tests
	@$(SWIFT) build --package-path Examples/hello
	@if [ -n "$$DATABASE_URL" ]; then \
		$(SWIFT) test --skip-build --parallel && scripts/example-test.sh && scripts/browser-test.sh \
			&& $(MAKE) -s shell-tests; \
	else \
		started=0; scripts/pgdev.sh status >/dev/null 2>&1 || { scripts/pgdev.sh start && started=1; }; \
		export DATABASE_URL="$$(scripts/pgdev.sh url)"; \
		$(SWIFT) test --skip-build --parallel && scripts/example-test.sh && scripts/browser-test.sh \
			&& $(MAKE) -s shell-tests; rc=$$?; \
		[ $$started = 1 ] && scripts/pgdev.sh stop; exit $$rc; \
	fi

# The dashboard in headless Chromium alone (part of `make test`).
browser-test: deps
	@$(SWIFT) build --build-tests
	@if [ -n "$$DATABASE_URL" ]; then scripts/browser-test.sh; else \
		started=0; scripts/pgdev.sh status >/dev/null 2>&1 || { scripts/pgdev.sh start && started=1; }; \
		DATABASE_URL="$$(scripts/pgdev.sh url)" scripts/browser-test.sh; rc=$$?; \
		[ $$started = 1 ] && scripts/pgdev.sh stop; exit $$rc; \
	fi

# Needs the debug build (`swift build --build-tests`); stops at the first failure.
shell-tests:
	@for t in $(SHELL_TESTS); do echo "== $$t"; $$t || exit 1; done

# The fault test of `make test` at length: 10,000 random canvases while pool processes and whole
# workers are killed, PostgreSQL restarts once (a private cluster of the test's own), and canvases
# are cancelled, retried and purged; then the invariants are checked (docs/benchmarks.md).
# PGCANVAS_FAULT_SEED=n replays a run, PGCANVAS_FAULT_CANVASES=n changes its length.
soak: deps
	@$(SWIFT) build --build-tests
	@PGCANVAS_FAULT_CANVASES=$${PGCANVAS_FAULT_CANVASES:-10000} \
		$(SWIFT) test --skip-build --filter 'FaultTests/(randomCanvasesUnderRandomFaults|inProcessPoolsUnderRandomFaults)'

# Flat over time (docs/benchmarks.md): SOAK_JOBS (10,000,000) no-op jobs through one
# `pgworker -c 8 --prune-after 10`, the queue kept fed at steady state, sampled every second; prints
# the first million against the last and the sizes of canvas.jobs, and draws
# docs/images/soak-10m.png with SOAK_PYTHON (a Python with matplotlib: see bench/soak_plot.py).
# Not part of `make test` or `make bench`: 10 to 20 minutes on 2 cores. Runs in a database of its
# own, pgcanvas_soak on the embedded server (made and migrated here), or SOAK_DATABASE_URL.
SOAK_JOBS ?= 10000000
SOAK_PYTHON ?= python3
soak-10m: build
	@set -e; url="$${SOAK_DATABASE_URL:-}"; \
	if [ -z "$$url" ]; then \
		$(MAKE) -s db >/dev/null; \
		url="$$(PGCANVAS_DBNAME=pgcanvas_soak scripts/pgdev.sh url)"; \
		psql "$(DB_URL)" -qAtX -c "SELECT 1 FROM pg_database WHERE datname = 'pgcanvas_soak'" | grep -q 1 \
			|| psql "$(DB_URL)" -qX -c "CREATE DATABASE pgcanvas_soak"; \
	fi; \
	DATABASE_URL="$$url" $(BIN)/voteradmin migrate >/dev/null; \
	DATABASE_URL="$$url" BIN=$(BIN) CSV=.build/soak-10m.csv bench/soak.sh $(SOAK_JOBS) 8; \
	$(SOAK_PYTHON) bench/soak_plot.py .build/soak-10m.csv docs/images/soak-10m.png \
		--title "one pgworker -c 8 --prune-after 10, 200,000-225,000 kept queued ($$(date -u +%F))"

# The whole job on the embedded database: migrate, seed 10,000 voters, install the original's
# debug-every-30-seconds schedule, start a worker with 8 pool processes and beat, generate every
# station list with the station chord, stop the worker. PDFs: output/.
demo: build db
	@export DATABASE_URL="$(DB_URL)"; set -e; \
	$(BIN)/voteradmin migrate; \
	$(BIN)/voteradmin seed 10000; \
	rm -f output/center_*.pdf; \
	$(BIN)/voteradmin schedule list | grep -q '^debug-every-30-seconds ' || \
		$(BIN)/voteradmin schedule add debug-every-30-seconds --task debug_task --every 30s; \
	$(BIN)/pgworker --concurrency 8 --beat --loglevel warning --output-dir output >.build/demo-pgworker.log 2>&1 & \
	worker=$$!; trap 'kill -TERM $$worker 2>/dev/null; wait $$worker' EXIT; \
	sleep 0.5; \
	$(BIN)/voteradmin enqueue assign_stations_and_generate_lists_with_chord --wait; \
	echo "Station lists: $$(ls output/*.pdf | wc -l) PDFs in output/ (worker log: .build/demo-pgworker.log)"

bench: build db
	@DATABASE_URL="$(DB_URL)" $(BIN)/voteradmin migrate
	@DATABASE_URL="$(DB_URL)" BIN=$(BIN) bench/run.sh

format:
	$(SWIFT) format --in-place --recursive Sources Tests Package.swift

clean:
	-scripts/pgdev.sh stop
	rm -rf .build .pgdata output
