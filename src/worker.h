/*-------------------------------------------------------------------------
 *
 * worker.h
 *	  Background processes: launcher, per-database schedulers, batch workers.
 *
 * src/shmem.c		the shared memory segment: slots and hash tables
 * src/wakeup.c		wake-ups of schedulers and the launcher at commit
 * src/status.c		what the views show of it: next runs, workers, shortages
 * src/launcher.c	one scheduler per database that has the extension
 * src/scheduler.c	when each pipeline runs, and on which batch worker
 * src/worker.c		batch workers: run the batches they are handed
 *
 *-------------------------------------------------------------------------
 */
#ifndef MICROBATCH_WORKER_H
#define MICROBATCH_WORKER_H

#include "port/atomics.h"
#include "postmaster/bgworker.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "utils/hsearch.h"

#include "microbatch.h"

typedef enum MbSlotKind
{
	MB_SLOT_UNUSED = 0,
	MB_SLOT_SCHEDULER,
	MB_SLOT_WORKER
} MbSlotKind;

typedef enum MbSlotState
{
	MB_STATE_STARTING,			/* registered, not attached yet */
	MB_STATE_IDLE,
	MB_STATE_ASSIGNED,			/* handed a pipeline, not started on it yet */
	MB_STATE_RUNNING,
	MB_STATE_LEFT				/* exited in the middle of a batch, or before
								 * its scheduler read the last outcome: the
								 * slot is the scheduler's to free, once it
								 * read it */
} MbSlotState;

/* Commits into the tables of one source hierarchy, by its root */
typedef struct MbSourceKey
{
	Oid			dboid;
	Oid			root;
} MbSourceKey;

typedef struct MbSourceCommits
{
	MbSourceKey key;
	pg_atomic_uint64 commits;
	pg_atomic_uint32 wanted;	/* a pipeline of it waits for a commit */
} MbSourceCommits;

/*
 * One scheduler or batch worker.  The fields are protected by the lock,
 * except the atomics.
 */
typedef struct MbSlot
{
	MbSlotKind	kind;
	MbSlotState state;
	pid_t		pid;
	Oid			dboid;
	Latch	   *latch;
	TimestampTz since;			/* of the current state */
	uint64		generation;		/* bumped each time the slot is claimed */
	bool		exit_requested; /* leave when idle: the slot is wanted */

	/* batch workers: the pipeline handed over, and the batch being run */
	int32		pipeline_id;
	char		pipeline_name[NAMEDATALEN];
	Oid			pipeline_owner;
	int			batch_timeout_ms;	/* 0: none */
	MbSourceCommits *source_commits;	/* its source's counter, or NULL */
	bool		continuous;		/* batch_interval 0 */
	bool		keep_running;	/* may run the pipeline's next batches itself;
								 * the scheduler clears it before it reloads */
	int64		batch_id;

	/* batch workers: outcome of the last batch, for the scheduler */
	bool		result_ready;
	int32		result_pipeline_id;
	MbBatchStatus result_status;
	int32		result_failures;	/* -1: left in the middle of the batch,
									 * nothing recorded */
	TimestampTz result_started_at;
	bool		result_capped;
	int			result_batches; /* run in a row before handing it back */
	uint64		result_commits_covered; /* source commits its window has */
	bool		result_timed_out;	/* left in the middle of the batch, at its
									 * batch_timeout */
	int			result_sqlerrcode;	/* left on this error, if known, or 0 */
	char		result_message[256];

	/* schedulers */
	pid_t		retention_pid;	/* the retention worker of the database, or 0 */
	int			waiting;		/* due pipelines no worker could take */
	TimestampTz starved_since;	/* pipelines with rows to process wait for a
								 * worker, since then or since the last batch
								 * started; 0: none wait */
	pg_atomic_uint64 db_commits;	/* commits into any source of the database */
	pg_atomic_uint32 wants_source_commits;	/* a pipeline without a counter of
											 * its own waits for a commit */
	pg_atomic_uint32 reload_requested;
} MbSlot;

typedef struct MbShared
{
	LWLock	   *lock;
	Latch	   *launcher_latch;
	uint64		extensions_created; /* CREATE EXTENSION commits, for the launcher */
	int			nslots;
	MbSlot		slots[FLEXIBLE_ARRAY_MEMBER];
} MbShared;

typedef struct MbScheduleKey
{
	Oid			dboid;
	int32		pipeline_id;
} MbScheduleKey;

typedef struct MbScheduleEntry
{
	MbScheduleKey key;
	TimestampTz next_run_at;
} MbScheduleEntry;

/*
 * A prepared transaction that wrote into sources: whoever commits it, with
 * COMMIT PREPARED or a logical replication apply worker, runs none of the
 * preparing session's callbacks, so the next commit of any backend wakes
 * its pipelines once it is committed.
 */
#define MB_PREPARED_ROOTS 8

typedef struct MbPreparedWake
{
	FullTransactionId xid;		/* invalid: the entry is free */
	Oid			dboid;
	bool		extension_created;	/* it ran CREATE EXTENSION microbatch */
	int			nroots;			/* -1: too many roots, wake them all */
	Oid			roots[MB_PREPARED_ROOTS];
} MbPreparedWake;

typedef struct MbPreparedWakes
{
	pg_atomic_uint32 used;		/* entries in use, read without the lock */
	int			size;
	MbPreparedWake entries[FLEXIBLE_ARRAY_MEMBER];
} MbPreparedWakes;

/* Per database: since when no background worker could be started for it */
typedef struct MbDatabaseStatus
{
	Oid			dboid;
	TimestampTz no_scheduler_since; /* the launcher found no free slot */
	TimestampTz no_worker_since;	/* its scheduler found none */
} MbDatabaseStatus;

/* How long a batch cancelled at its timeout has to end before its worker is */
#define MB_BATCH_CANCEL_GRACE_MS 1000

/* Settings (microbatch.c) */
extern bool mb_enabled;
extern int	mb_max_workers;
extern int	mb_naptime;
extern int	mb_max_retry_delay;
extern int	mb_coalesce_delay;
extern int	mb_max_pipelines;

/* shmem.c */
extern MbShared *mb_shared;
extern MbPreparedWakes *mb_prepared_wakes;
extern HTAB *mb_schedule_hash;
extern HTAB *mb_source_hash;
extern HTAB *mb_database_hash;
extern void mb_shmem_init(void);
extern MbSlot *mb_scheduler_slot(Oid dboid);
extern void mb_latch_waiting_schedulers(void);
extern bool mb_start_dynamic_worker(const char *role, Oid dboid, Datum arg,
									BackgroundWorkerHandle **handle);
extern void mb_background_session_defaults(bool as_superuser);

/* wakeup.c */
extern void mb_register_xact_callback(void);
extern MbSourceCommits *mb_source_commits(Oid dboid, Oid root);
extern void mb_source_commits_forget_database(Oid dboid);

/* status.c */
extern void mb_schedule_publish(Oid dboid, int32 pipeline_id,
								TimestampTz next_run_at);
extern void mb_schedule_forget_database(Oid dboid);
extern void mb_database_report(Oid dboid, bool scheduler, bool starved);

/* launcher.c */
extern void mb_launcher_register(void);
extern PGDLLEXPORT void microbatch_launcher_main(Datum arg);

/* scheduler.c */
extern PGDLLEXPORT void microbatch_scheduler_main(Datum arg);

/* retention.c */
extern PGDLLEXPORT void microbatch_retention_main(Datum arg);

/* stats.c */
extern void mb_stats_shmem_request(void);
extern void mb_stats_shmem_startup(void);

/* backfill.c */
extern void mb_backfill_shmem_request(void);
extern void mb_backfill_shmem_startup(void);
extern int	mb_backfill_release_database(Oid dboid);
extern PGDLLEXPORT void microbatch_backfill_main(Datum arg);

/* worker.c */
extern PGDLLEXPORT void microbatch_worker_main(Datum arg);

#endif							/* MICROBATCH_WORKER_H */
