/*-------------------------------------------------------------------------
 *
 * stats.c
 *	  Cumulative statistics of pipelines, in shared memory, in the style of
 *	  pg_stat_statements: microbatch.stat_pipelines and stat_reset().
 *
 * A batch leaves its outcome here when its transaction commits (an xact
 * callback), so the counts agree with the ledger: a batch rolled back, by
 * its caller or by a crash, counted nothing.  Counting costs no catalog
 * write and no lock held across a batch: the table's lock is held only to
 * find an entry, and each entry has a spinlock of its own.  The commit time
 * of a batch, which its ledger row cannot hold, is known only here.
 *
 * Statistics start at zero at server start, as after a crash; Prometheus
 * and rate() take counter resets in their stride.  An entry goes with its
 * pipeline (drop_pipeline, CREATE EXTENSION, a dropped database); when the
 * table (microbatch.max_pipelines entries, fixed) is full, new pipelines are
 * not counted.  A batch, or a drop, in a prepared transaction is not
 * counted: its outcome is known only to the session that commits it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "microbatch.h"
#include "worker.h"

PG_FUNCTION_INFO_V1(microbatch_stat_pipelines);
PG_FUNCTION_INFO_V1(microbatch_stat_reset);

/* Upper bounds, in seconds, of the histogram buckets; the last is +Inf */
static const double mb_duration_bounds[] =
{0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60};
static const double mb_latency_bounds[] =
{0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600};

#define MB_DURATION_BUCKETS lengthof(mb_duration_bounds)
#define MB_LATENCY_BUCKETS lengthof(mb_latency_bounds)

typedef struct MbStatsKey
{
	Oid			dboid;
	int32		pipeline_id;
} MbStatsKey;

typedef struct MbStatsCounters
{
	int64		batches;		/* committed */
	int64		failures;		/* failed attempts */
	int64		rows_in;
	int64		rows_written;
	int64		rows_dropped;
	double		total_time;		/* milliseconds, start to commit */
	double		max_time;
	double		total_lock_wait_time;
	double		total_commit_time;	/* writing the ledger and committing */
	int64		duration_counts[MB_DURATION_BUCKETS + 1];	/* not cumulative */
	int64		latency_counts[MB_LATENCY_BUCKETS + 1];
	int64		latency_count;
	double		latency_sum;	/* seconds */
	TimestampTz last_batch_at;
	TimestampTz stats_reset;
} MbStatsCounters;

typedef struct MbStatsEntry
{
	MbStatsKey	key;
	slock_t		mutex;
	MbStatsCounters counters;
} MbStatsEntry;

/* A batch's outcome, or a dropped pipeline, waiting for its commit */
typedef enum MbStatsPendingKind
{
	MB_STATS_COUNT,				/* a batch attempt */
	MB_STATS_FORGET_PIPELINE,	/* the pipeline was dropped */
	MB_STATS_FORGET_DATABASE	/* the extension was created anew */
} MbStatsPendingKind;

typedef struct MbStatsPending
{
	SubTransactionId subid;
	MbStatsPendingKind kind;
	int32		pipeline_id;
	MbBatchOutcome outcome;
} MbStatsPending;

static HTAB *mb_stats_hash = NULL;
static LWLock *mb_stats_lock = NULL;
static List *pending = NIL;
static bool callbacks_registered = false;

static Size
mb_stats_shmem_size(void)
{
	return hash_estimate_size(mb_max_pipelines, sizeof(MbStatsEntry));
}

void
mb_stats_shmem_request(void)
{
	RequestAddinShmemSpace(mb_stats_shmem_size());
	RequestNamedLWLockTranche("microbatch stats", 1);
}

/* Caller holds AddinShmemInitLock */
void
mb_stats_shmem_startup(void)
{
	HASHCTL		ctl;

	ctl.keysize = sizeof(MbStatsKey);
	ctl.entrysize = sizeof(MbStatsEntry);
	/* fixed: the spare shared memory is the lock table's */
	mb_stats_hash = ShmemInitHash("microbatch pipeline stats", mb_max_pipelines,
								  mb_max_pipelines, &ctl,
								  HASH_ELEM | HASH_BLOBS | HASH_FIXED_SIZE);
	mb_stats_lock = &(GetNamedLWLockTranche("microbatch stats"))->lock;
}

static MbStatsKey
mb_stats_key(Oid dboid, int32 pipeline_id)
{
	MbStatsKey	key;

	memset(&key, 0, sizeof(key));	/* HASH_BLOBS hashes its bytes */
	key.dboid = dboid;
	key.pipeline_id = pipeline_id;
	return key;
}

static void
mb_stats_counters_reset(MbStatsCounters *counters)
{
	memset(counters, 0, sizeof(*counters));
	counters->stats_reset = GetCurrentTimestamp();
}

static int
mb_bucket(const double *bounds, int nbounds, double seconds)
{
	int			i;

	for (i = 0; i < nbounds; i++)
		if (seconds <= bounds[i])
			break;
	return i;
}

/* Add a committed outcome; commit_time is when its transaction committed */
static void
mb_stats_apply(int32 pipeline_id, const MbBatchOutcome *outcome,
			   TimestampTz commit_time)
{
	MbStatsKey	key;
	MbStatsEntry *entry;
	bool		found;
	double		ms = (commit_time - outcome->started_at) / 1000.0;

	key = mb_stats_key(MyDatabaseId, pipeline_id);

	/* the common case, an entry that exists, needs the shared lock only */
	LWLockAcquire(mb_stats_lock, LW_SHARED);
	entry = hash_search(mb_stats_hash, &key, HASH_FIND, NULL);
	if (entry == NULL)
	{
		LWLockRelease(mb_stats_lock);
		LWLockAcquire(mb_stats_lock, LW_EXCLUSIVE);
		entry = hash_search(mb_stats_hash, &key, HASH_ENTER_NULL, &found);
		if (entry == NULL)
		{
			LWLockRelease(mb_stats_lock);
			return;
		}
		if (!found)
		{
			SpinLockInit(&entry->mutex);
			mb_stats_counters_reset(&entry->counters);
		}
	}

	SpinLockAcquire(&entry->mutex);
	{
		MbStatsCounters *c = &entry->counters;

		/* rows count once, when the batch that processed them commits */
		if (outcome->committed)
		{
			c->batches++;
			c->rows_in += outcome->rows_in;
			c->rows_written += outcome->rows_written;
			c->rows_dropped += Max(outcome->rows_dropped, 0);
		}
		else
			c->failures++;
		c->total_time += ms;
		c->max_time = Max(c->max_time, ms);
		c->total_lock_wait_time += outcome->lock_wait_us / 1000.0;
		if (outcome->ledger_started_at != 0)
			c->total_commit_time += (commit_time - outcome->ledger_started_at) / 1000.0;
		c->duration_counts[mb_bucket(mb_duration_bounds, MB_DURATION_BUCKETS,
									 ms / 1000.0)]++;
		if (outcome->committed && outcome->oldest_row_committed_at != 0)
		{
			double		latency = (commit_time - outcome->oldest_row_committed_at) / 1000000.0;

			c->latency_counts[mb_bucket(mb_latency_bounds, MB_LATENCY_BUCKETS,
										latency)]++;
			c->latency_count++;
			c->latency_sum += latency;
		}
		c->last_batch_at = commit_time;
	}
	SpinLockRelease(&entry->mutex);
	LWLockRelease(mb_stats_lock);
}

static void
mb_stats_remove(Oid dboid, int32 pipeline_id)
{
	MbStatsKey	key;

	key = mb_stats_key(dboid, pipeline_id);
	LWLockAcquire(mb_stats_lock, LW_EXCLUSIVE);
	hash_search(mb_stats_hash, &key, HASH_REMOVE, NULL);
	LWLockRelease(mb_stats_lock);
}

/* Forget every pipeline of a database: dropped, or its extension created anew */
void
mb_stats_forget_database(Oid dboid)
{
	HASH_SEQ_STATUS status;
	MbStatsEntry *entry;

	if (mb_stats_hash == NULL)
		return;					/* not preloaded: nothing is counted */
	LWLockAcquire(mb_stats_lock, LW_EXCLUSIVE);
	hash_seq_init(&status, mb_stats_hash);
	while ((entry = hash_seq_search(&status)) != NULL)
		if (entry->key.dboid == dboid)
			hash_search(mb_stats_hash, &entry->key, HASH_REMOVE, NULL);
	LWLockRelease(mb_stats_lock);
}

/*
 * At commit, what the transaction's batches did counts; at abort, or at
 * PREPARE (a prepared batch commits elsewhere, uncounted), nothing does.
 * Nothing here may fail: the transaction has committed.
 */
static void
mb_stats_xact_callback(XactEvent event, void *arg)
{
	ListCell   *lc;
	TimestampTz committed_at;

	if (pending == NIL)
		return;
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			committed_at = GetCurrentTimestamp();
			foreach(lc, pending)
			{
				MbStatsPending *p = lfirst(lc);

				if (p->kind == MB_STATS_COUNT)
					mb_stats_apply(p->pipeline_id, &p->outcome, committed_at);
				else if (p->kind == MB_STATS_FORGET_PIPELINE)
					mb_stats_remove(MyDatabaseId, p->pipeline_id);
				else
					mb_stats_forget_database(MyDatabaseId);
			}
			pending = NIL;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			/* the list was in the transaction's memory */
			pending = NIL;
			break;
		default:
			break;
	}
}

/* A savepoint rolled back takes its batches with it */
static void
mb_stats_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						  SubTransactionId parentSubid, void *arg)
{
	ListCell   *lc;

	foreach(lc, pending)
	{
		MbStatsPending *p = lfirst(lc);

		if (p->subid != mySubid)
			continue;
		if (event == SUBXACT_EVENT_COMMIT_SUB)
			p->subid = parentSubid;
		else if (event == SUBXACT_EVENT_ABORT_SUB)
			pending = foreach_delete_current(pending, lc);
	}
}

static void
mb_stats_queue(MbStatsPendingKind kind, int32 pipeline_id,
			   const MbBatchOutcome *outcome)
{
	MemoryContext old;
	MbStatsPending *p;

	if (mb_stats_hash == NULL)
		return;
	if (!callbacks_registered)
	{
		RegisterXactCallback(mb_stats_xact_callback, NULL);
		RegisterSubXactCallback(mb_stats_subxact_callback, NULL);
		callbacks_registered = true;
	}
	old = MemoryContextSwitchTo(TopTransactionContext);
	p = palloc0(sizeof(MbStatsPending));
	p->subid = GetCurrentSubTransactionId();
	p->kind = kind;
	p->pipeline_id = pipeline_id;
	if (outcome != NULL)
		p->outcome = *outcome;
	pending = lappend(pending, p);
	MemoryContextSwitchTo(old);
}

/* Count a batch attempt when the current transaction commits */
void
mb_stats_count_batch(int32 pipeline_id, const MbBatchOutcome *outcome)
{
	mb_stats_queue(MB_STATS_COUNT, pipeline_id, outcome);
}

/* Forget a dropped pipeline when the current transaction commits */
void
mb_stats_forget_pipeline(int32 pipeline_id)
{
	mb_stats_queue(MB_STATS_FORGET_PIPELINE, pipeline_id, NULL);
}

/*
 * Forget this database's pipelines when the current transaction commits:
 * CREATE EXTENSION starts pipeline ids again at 1
 */
void
mb_stats_forget_database_at_commit(void)
{
	mb_stats_queue(MB_STATS_FORGET_DATABASE, 0, NULL);
}

static Datum
mb_float8_array(const double *values, int n)
{
	Datum	   *datums = palloc(sizeof(Datum) * n);

	for (int i = 0; i < n; i++)
		datums[i] = Float8GetDatum(values[i]);
	return PointerGetDatum(construct_array(datums, n, FLOAT8OID, sizeof(float8),
										   FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}

/* Cumulative counts of the finite buckets, as Prometheus wants them */
static Datum
mb_cumulative_array(const int64 *counts, int n)
{
	Datum	   *datums = palloc(sizeof(Datum) * n);
	int64		sum = 0;

	for (int i = 0; i < n; i++)
	{
		sum += counts[i];
		datums[i] = Int64GetDatum(sum);
	}
	return PointerGetDatum(construct_array(datums, n, INT8OID, sizeof(int64),
										   FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}

/*
 * Which of the given pipeline ids are pipelines of this database the caller
 * may see the statistics of (monitoring roles too), or, with reset, may
 * reset (roles with the owner's privileges only)
 */
static void
mb_stats_visibility(List *ids, bool reset, bool *allowed)
{
	MbCall		call;
	ListCell   *lc;
	int			i = 0;

	mb_call_begin(&call);
	foreach(lc, ids)
	{
		MbPipeline	pipeline;

		allowed[i++] = mb_pipeline_by_id(lfirst_int(lc), &pipeline) &&
			(reset ? has_privs_of_role(call.caller, pipeline.owner) :
			 mb_may_monitor(call.caller, pipeline.owner));
	}
	mb_call_end(&call);
}

/* The ids of this database's entries, with a copy of their counters */
static List *
mb_stats_entries(List **copies)
{
	HASH_SEQ_STATUS status;
	MbStatsEntry *entry;
	List	   *ids = NIL;

	LWLockAcquire(mb_stats_lock, LW_SHARED);
	hash_seq_init(&status, mb_stats_hash);
	while ((entry = hash_seq_search(&status)) != NULL)
	{
		if (entry->key.dboid != MyDatabaseId)
			continue;
		if (copies != NULL)
		{
			MbStatsCounters *copy = palloc(sizeof(MbStatsCounters));

			SpinLockAcquire(&entry->mutex);
			*copy = entry->counters;
			SpinLockRelease(&entry->mutex);
			*copies = lappend(*copies, copy);
		}
		ids = lappend_int(ids, entry->key.pipeline_id);
	}
	LWLockRelease(mb_stats_lock);
	return ids;
}

/*
 * The statistics of this database's pipelines the caller may monitor, as
 * pg_stat_statements shows a role its own statements, and all of them to
 * pg_read_all_stats.
 */
Datum
microbatch_stat_pipelines(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	List	   *copies = NIL;
	List	   *ids;
	bool	   *visible;
	ListCell   *id_cell;
	ListCell   *copy_cell;
	int			n = 0;

	InitMaterializedSRF(fcinfo, 0);
	if (mb_stats_hash == NULL)
		return (Datum) 0;
	ids = mb_stats_entries(&copies);
	if (ids == NIL)
		return (Datum) 0;
	visible = palloc(sizeof(bool) * list_length(ids));
	mb_stats_visibility(ids, false, visible);

	forboth(id_cell, ids, copy_cell, copies)
	{
		MbStatsCounters *c = lfirst(copy_cell);
		Datum		values[19];
		bool		nulls[19];
		int			i = 0;
		int64		attempts = c->batches + c->failures;

		if (!visible[n++])
			continue;
		memset(nulls, false, sizeof(nulls));
		values[i++] = Int32GetDatum(lfirst_int(id_cell));
		values[i++] = Int64GetDatum(c->batches);
		values[i++] = Int64GetDatum(c->failures);
		values[i++] = Int64GetDatum(c->rows_in);
		values[i++] = Int64GetDatum(c->rows_written);
		values[i++] = Int64GetDatum(c->rows_dropped);
		values[i++] = Float8GetDatum(c->total_time);
		values[i++] = Float8GetDatum(c->max_time);
		nulls[i] = attempts == 0;
		values[i++] = Float8GetDatum(attempts > 0 ? c->total_time / attempts : 0);
		values[i++] = Float8GetDatum(c->total_lock_wait_time);
		values[i++] = Float8GetDatum(c->total_commit_time);
		nulls[i] = c->last_batch_at == 0;
		values[i++] = TimestampTzGetDatum(c->last_batch_at);
		values[i++] = mb_float8_array(mb_duration_bounds, MB_DURATION_BUCKETS);
		values[i++] = mb_cumulative_array(c->duration_counts, MB_DURATION_BUCKETS);
		values[i++] = mb_float8_array(mb_latency_bounds, MB_LATENCY_BUCKETS);
		values[i++] = mb_cumulative_array(c->latency_counts, MB_LATENCY_BUCKETS);
		values[i++] = Int64GetDatum(c->latency_count);
		values[i++] = Float8GetDatum(c->latency_sum);
		values[i++] = TimestampTzGetDatum(c->stats_reset);
		Assert(i == lengthof(values));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/* Zero an entry's counters */
static void
mb_stats_reset_entry(int32 pipeline_id)
{
	MbStatsKey	key;
	MbStatsEntry *entry;

	key = mb_stats_key(MyDatabaseId, pipeline_id);
	LWLockAcquire(mb_stats_lock, LW_SHARED);
	entry = hash_search(mb_stats_hash, &key, HASH_FIND, NULL);
	if (entry != NULL)
	{
		SpinLockAcquire(&entry->mutex);
		mb_stats_counters_reset(&entry->counters);
		SpinLockRelease(&entry->mutex);
	}
	LWLockRelease(mb_stats_lock);
}

/*
 * stat_reset(pipeline): one pipeline's statistics, with its owner's
 * privileges; with NULL, those of every pipeline of this database whose
 * owner's privileges the caller has (pg_read_all_stats, which may read
 * them, may not reset them).  Takes effect at once, like
 * pg_stat_statements_reset().  Entries go with their pipelines only, at
 * the commit that drops them: a pipeline this transaction's snapshot
 * cannot see may be one committed since.
 */
Datum
microbatch_stat_reset(PG_FUNCTION_ARGS)
{
	if (mb_stats_hash == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("microbatch statistics are not available"),
				 errhint("Add microbatch to shared_preload_libraries and restart the server.")));

	if (!PG_ARGISNULL(0))
	{
		char	   *name = NameStr(*PG_GETARG_NAME(0));
		MbCall		call;
		MbPipeline	pipeline;
		bool		exists;
		bool		allowed;

		mb_call_begin(&call);
		exists = mb_pipeline_by_name(name, &pipeline);
		allowed = exists && has_privs_of_role(call.caller, pipeline.owner);
		mb_call_end(&call);
		if (!exists)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("pipeline \"%s\" does not exist", name)));
		if (!allowed)
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied to reset the statistics of pipeline \"%s\"",
							name),
					 errdetail("Only roles with the privileges of its owner may.")));
		mb_stats_reset_entry(pipeline.id);
	}
	else
	{
		List	   *ids = mb_stats_entries(NULL);
		bool	   *allowed;
		ListCell   *lc;
		int			i = 0;

		if (ids == NIL)
			PG_RETURN_VOID();
		allowed = palloc(sizeof(bool) * list_length(ids));
		mb_stats_visibility(ids, true, allowed);
		foreach(lc, ids)
		{
			if (allowed[i++])
				mb_stats_reset_entry(lfirst_int(lc));
		}
	}
	PG_RETURN_VOID();
}
