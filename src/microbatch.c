/*-------------------------------------------------------------------------
 *
 * microbatch.c
 *	  Module initialisation: settings, shared memory, the launcher.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "postmaster/postmaster.h"
#include "utils/guc.h"

#include "microbatch.h"
#include "worker.h"

PG_MODULE_MAGIC;

bool		mb_enabled = true;
int			mb_max_workers = 4;
int			mb_naptime = 5000;
int			mb_max_retries = 5;
int			mb_max_retry_delay = 300000;
int			mb_coalesce_delay = 2;
int			mb_max_pipelines = 1024;
int			mb_batch_timeout = 60 * 60 * 1000;
int			mb_history_retention = -1;
int			mb_retention_step_rows = 10000;
int			mb_backfill_delay = 10;
static int	mb_synchronous_commit = SYNCHRONOUS_COMMIT_OFF;

/* The values synchronous_commit takes, hidden aliases included */
static const struct config_enum_entry mb_synchronous_commit_options[] = {
	{"local", SYNCHRONOUS_COMMIT_LOCAL_FLUSH, false},
	{"remote_write", SYNCHRONOUS_COMMIT_REMOTE_WRITE, false},
	{"remote_apply", SYNCHRONOUS_COMMIT_REMOTE_APPLY, false},
	{"on", SYNCHRONOUS_COMMIT_ON, false},
	{"off", SYNCHRONOUS_COMMIT_OFF, false},
	{"true", SYNCHRONOUS_COMMIT_ON, true},
	{"false", SYNCHRONOUS_COMMIT_OFF, true},
	{"yes", SYNCHRONOUS_COMMIT_ON, true},
	{"no", SYNCHRONOUS_COMMIT_OFF, true},
	{"1", SYNCHRONOUS_COMMIT_ON, true},
	{"0", SYNCHRONOUS_COMMIT_OFF, true},
	{NULL, 0, false}
};

void		_PG_init(void);

void
_PG_init(void)
{
	DefineCustomBoolVariable("microbatch.enabled",
							 "Whether background workers run the batches of enabled pipelines.",
							 NULL, &mb_enabled, true,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("microbatch.max_workers",
							"Maximum number of batch workers running at once, in all databases.",
							"Each scheduler (one per database with the extension) takes a background worker slot as well.",
							&mb_max_workers, 4, 1, MAX_BACKENDS,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("microbatch.naptime",
							"Time between checks of the catalog when nothing wakes a scheduler.",
							"Changes made through the microbatch functions wake the schedulers at once.",
							&mb_naptime, 5000, 100, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("microbatch.max_retries",
							"Consecutive failed batches after which a pipeline is marked failed.",
							NULL, &mb_max_retries, 5, 1, INT_MAX,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("microbatch.max_retry_delay",
							"Longest wait before a failed batch is retried.",
							"Retries back off exponentially from one second, with jitter, up to this delay.",
							&mb_max_retry_delay, 300000, 1000, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);

	DefineCustomIntVariable("microbatch.coalesce_delay",
							"Shortest time between the starts of two batches of a pipeline with batch_interval 0.",
							"Rows committed meanwhile share the next batch: under a stream of small transactions, fewer, larger batches cost less.",
							&mb_coalesce_delay, 2, 0, 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);

	DefineCustomIntVariable("microbatch.batch_timeout",
							"Longest a background batch may run, waiting for locks included; 0 means no limit.",
							"A batch that runs longer is cancelled and counted as a failed batch. Pipelines can have a timeout of their own.",
							&mb_batch_timeout, 60 * 60 * 1000, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);

	/*
	 * A batch whose commit is lost in a crash is simply run again over the
	 * same rows: the sources' rows are durable, and the batch's writes and
	 * ledger row go together.  So batches need not wait for WAL flushes.
	 */
	DefineCustomEnumVariable("microbatch.synchronous_commit",
							 "synchronous_commit of the transactions of background batches.",
							 "A batch lost in a crash, or on failover, is run again from its source rows.",
							 &mb_synchronous_commit, SYNCHRONOUS_COMMIT_OFF,
							 mb_synchronous_commit_options,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("microbatch.history_retention",
							"How long the batch history of a pipeline is kept; -1 keeps it forever.",
							"The batch each pipeline's next batch starts from is always kept. microbatch.set_history_retention() overrides it for a pipeline.",
							&mb_history_retention, -1, -1, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("microbatch.retention_step_rows",
							"Most rows one step of retention removes, in one transaction.",
							NULL, &mb_retention_step_rows, 10000, 1, INT_MAX,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("microbatch.backfill_delay",
							"Pause of a background backfill between two batches.",
							"Live batches of the pipeline come first in any case.",
							&mb_backfill_delay, 10, 0, 3600 * 1000,
							PGC_USERSET, GUC_UNIT_MS, NULL, NULL, NULL);
	mb_register_xact_callback();
	mb_object_access_hook_install();
	mb_citus_init();

	/* Without the preload there are no workers, and nothing to size */
	if (!process_shared_preload_libraries_in_progress)
	{
		MarkGUCPrefixReserved("microbatch");
		return;
	}
	DefineCustomIntVariable("microbatch.max_pipelines",
							"Number of pipelines, in all databases, whose next run time and statistics are kept in shared memory.",
							NULL, &mb_max_pipelines, 1024, 16, 1000000,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);
	MarkGUCPrefixReserved("microbatch");
	mb_shmem_init();
	mb_utility_hook_install();
	mb_launcher_register();
}
