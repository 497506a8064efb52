/*-------------------------------------------------------------------------
 *
 * worker.h
 *	  Background processes: launcher, per-database schedulers, batch workers.
 *
 * src/shmem.c		shared state, wake-ups, the views over them
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
	MB_STATE_RUNNING
} MbSlotState;

typedef struct MbSlot
{
	MbSlotKind	kind;
	MbSlotState state;
	pid_t		pid;
	Oid			dboid;
	Latch	   *latch;
	TimestampTz since;			/* of the current state */

	/* batch workers: the pipeline handed over, and the batch being run */
	int32		pipeline_id;
	char		pipeline_name[NAMEDATALEN];
	int64		batch_id;

	/* batch workers: outcome of the last batch, for the scheduler */
	bool		result_ready;
	int32		result_pipeline_id;
	MbBatchStatus result_status;
	int32		result_failures;
	TimestampTz result_started_at;
	bool		result_capped;
	uint64		result_commits_covered; /* source commits its window has */

	/* schedulers: wake-ups from committing backends */
	pg_atomic_uint64 source_commits;
	pg_atomic_uint32 wants_source_commits;	/* set our latch for them too */
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

/* Settings (microbatch.c) */
extern bool mb_enabled;
extern int	mb_max_workers;
extern int	mb_naptime;
extern int	mb_max_retries;
extern int	mb_max_retry_delay;
extern int	mb_max_pipelines;

/* shmem.c */
extern MbShared *mb_shared;
extern void mb_shmem_init(void);
extern void mb_register_xact_callback(void);
extern void mb_schedule_publish(Oid dboid, int32 pipeline_id,
								TimestampTz next_run_at);
extern void mb_schedule_forget_database(Oid dboid);
extern bool mb_start_dynamic_worker(const char *role, Oid dboid, Datum arg,
									BackgroundWorkerHandle **handle);

/* launcher.c */
extern void mb_launcher_register(void);
extern void mb_utility_hook_install(void);
extern PGDLLEXPORT void microbatch_launcher_main(Datum arg);

/* scheduler.c */
extern PGDLLEXPORT void microbatch_scheduler_main(Datum arg);

/* worker.c */
extern PGDLLEXPORT void microbatch_worker_main(Datum arg);


#endif							/* MICROBATCH_WORKER_H */
