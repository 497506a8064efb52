# microbatch: micro-batch pipelines inside PostgreSQL (PGXS build)

MODULE_big = microbatch
OBJS = \
	src/api.o \
	src/backfill.o \
	src/batch.o \
	src/batchview.o \
	src/catalog.o \
	src/citus.o \
	src/ddl.o \
	src/hierarchy.o \
	src/launcher.o \
	src/microbatch.o \
	src/quality.o \
	src/retention.o \
	src/scheduler.o \
	src/shmem.o \
	src/source.o \
	src/stats.o \
	src/status.o \
	src/tracking_index.o \
	src/transform.o \
	src/usercode.o \
	src/wakeup.o \
	src/window.o \
	src/worker.o
EXTENSION = microbatch
DATA = $(wildcard sql/microbatch--*.sql)
PGFILEDESC = "microbatch - micro-batch pipelines over staging tables"

# make installcheck runs the regress and isolation suites against the server
# at PGHOST/PGPORT, as PGXS users expect; it needs test/microbatch.conf's
# settings (docs/packaging.md).  MB_TEMP_INSTANCE=1 gives each of the two its
# own throwaway cluster instead (make test).  The TAP tests always start
# their own clusters.
MB_TEMP_CONFIG = $(srcdir)/test/microbatch.conf
REGRESS = setup pipeline transform batch window security attacks tracking brin partitions replay failure quality lifecycle monitoring distributed
ISOLATION = concurrent_batches capped_window capped_window_brin create_during_writes definitions_cache ddl_during_batch state_during_batch start_from_now ddl_waiting_rows detach_pending audit_publish retention_loaders stat_reset_snapshot
ISOLATION_OPTS = --inputdir=$(srcdir)/test/isolation --outputdir=output_iso
ifeq ($(MB_TEMP_INSTANCE),1)
REGRESS_OPTS = --temp-instance=tmp_check_regress --temp-config=$(MB_TEMP_CONFIG)
ISOLATION_OPTS += --temp-instance=tmp_check_iso --temp-config=$(MB_TEMP_CONFIG)
endif
TAP_TESTS = 1
PROVE_TESTS = test/t/*.pl

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# PGXS tracks no header dependencies; a stale object would disagree with the
# others about the layout of shared structures.
$(OBJS): src/microbatch.h src/worker.h

# The quick start's test command: installs what is missing, builds with
# warnings as errors, installs, and runs every suite.
.PHONY: test
test:
	bash test/run-tests.sh

# The quick start's first command: a live clickstream pipeline on a throwaway
# cluster in ./demo (stopped and removed by demo-stop).
.PHONY: demo demo-stop bench
demo:
	bash test/demo/run-demo.sh

demo-stop:
	bash test/demo/stop-demo.sh

# Benchmarks: regenerates docs/benchmarks.md from one run on one cluster.
bench:
	bash test/bench/run-bench.sh

# One node against a Citus coordinator and two workers on this machine:
# regenerates docs/benchmarks-citus.md.
.PHONY: bench-citus
bench-citus:
	bash test/bench/citus.sh

# Memory checker: the regression and isolation suites against an ASan+UBSan
# build (installed as root, then replaced by the normal build again).
.PHONY: sanitize
sanitize:
	bash test/sanitize.sh

# The Debian package postgresql-15-microbatch (debian/), built in a scratch
# copy of the tree, into DEB_DIR (by default next to the tree, where
# dpkg-buildpackage puts it).  test/package.sh (make test) also installs and
# tries it.
DEB_DIR ?= ..
.PHONY: deb
deb:
	bash test/package.sh --build $(DEB_DIR)
