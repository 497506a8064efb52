/*-------------------------------------------------------------------------
 *
 * retention.c
 *	  Retention: removing the staging rows every pipeline has processed, and
 *	  the batch history older than it is kept; the retention worker.
 *
 * A staging row may go once no batch still within the retention, and no
 * batch to come, can read it.  Rows carry the id of the transaction that
 * wrote them, and a window only holds rows not visible in its lower
 * snapshot, so each batch has a lowest id its rows can have (the lower
 * snapshot's xmin, or the window's cut); so does the next window, which
 * starts at the pipeline's position.  A pipeline's horizon is the lowest of
 * these over its next window and every batch that finished within the
 * retention or that a running backfill has still to replay; a table's
 * horizon is the lowest over the pipelines that read it, those on it and on
 * the tables above it.  Every row below the horizon has been processed by
 * every pipeline, in batches older than the retention: a paused or failed
 * pipeline, whose position stays, holds its tables' rows, as does a
 * transaction that stays open (it keeps snapshots' xmin down).  Removal
 * uses the tracking index and never waits for loaders: a row below the
 * horizon was committed before any transaction still writing began.
 *
 * Replays and resets hold a pipeline's history lock in share mode (see
 * catalog.c); a removal step takes it exclusively for every pipeline that
 * reads the table, so no replay sees its rows go half-way.  The highest
 * horizon rows were removed below is kept with the setting: a replay of a
 * window that reaches below it is refused rather than run over fewer rows.
 *
 * A leaf partition whose range (on one date or timestamp column) ended
 * before now, so no loader can write into it, and that has no row at or
 * above the horizon, is detached and dropped instead, with a short
 * lock_timeout: DETACH takes its parent's ACCESS EXCLUSIVE lock.
 *
 * Background removal runs on one worker per database, started by the
 * scheduler: steps of at most microbatch.retention_step_rows rows, each a
 * transaction of its own, back to back while rows are removable, and every
 * naptime otherwise.  The same worker trims the batch history.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/partition.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lmgr.h"
#include "tcop/tcopprot.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "microbatch.h"
#include "worker.h"

/* How long DETACH PARTITION may wait for its parent's lock */
#define MB_DETACH_LOCK_TIMEOUT "100ms"

/* A table's owner, or InvalidOid if it is gone */
static Oid
mb_rel_owner(Oid relid)
{
	HeapTuple	tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	Oid			owner;

	if (!HeapTupleIsValid(tuple))
		return InvalidOid;
	owner = ((Form_pg_class) GETSTRUCT(tuple))->relowner;
	ReleaseSysCache(tuple);
	return owner;
}

/* The first batch of a pipeline a running backfill has still to replay */
static int64
mb_hold_of(int32 pipeline_id)
{
	int64		hold = mb_backfill_hold(MyDatabaseId, pipeline_id);

	return hold > 0 ? hold : PG_INT64_MAX;
}

static TimestampTz
mb_now_minus(const Interval *retain)
{
	return DatumGetTimestampTz(DirectFunctionCall2(timestamptz_mi_interval,
												   TimestampTzGetDatum(GetCurrentTransactionStartTimestamp()),
												   IntervalPGetDatum(retain)));
}

/*
 * The horizon of one pipeline for a retention of retain; 0 when nothing may
 * go (no batch yet, or a history from another cluster).
 */
static uint64
mb_pipeline_horizon(const MbPipeline *pipeline, const Interval *retain,
					int64 hold)
{
	MbLedgerBatch position;
	MbWindow	next;
	uint64		horizon;
	uint64		lowest;
	int64		last_old;

	if (pipeline->system_identifier != GetSystemIdentifier() ||
		!mb_ledger_position(pipeline->id, &position))
		return 0;
	mb_window_init(&next, pipeline->id, 0, position.lower_datum,
				   position.upper_datum, 0, 0);
	/* the window after the position, and the rest of a cut one */
	horizon = next.upper.xmin;
	if (position.xid_to != 0)
		horizon = Min(horizon, Max(position.xid_to, next.lower.xmin));

	last_old = mb_ledger_last_finished_before(pipeline->id,
											  mb_now_minus(retain), hold);
	if (mb_ledger_lowest_xid(pipeline->id, last_old + 1, PG_INT64_MAX, false,
							 &lowest))
		horizon = Min(horizon, lowest);
	return horizon;
}

/* The tables whose pipelines read a table's rows, and whose rows it has */
static List *
mb_tables_sharing_rows(Oid relid, LOCKMODE lockmode, List **members)
{
	*members = mb_hierarchy_members(relid, lockmode);
	return list_concat_unique_oid(list_copy(*members),
								  mb_table_and_ancestors(relid));
}

/*
 * The horizon of a retention setting, and the pipeline that holds it
 * lowest, with why.  0 when nothing may go; no pipeline reads the table
 * keeps everything as well, for a pipeline created again later.
 */
static uint64
mb_retention_horizon(const MbRetention *retention, List *readers,
					 const MbPipeline **holder, const char **why)
{
	uint64		horizon = 0;
	ListCell   *lc;

	*holder = NULL;
	*why = NULL;
	if (retention->retain == NULL)
		return 0;
	foreach(lc, readers)
	{
		MbPipeline *pipeline = lfirst(lc);
		int64		hold = mb_hold_of(pipeline->id);
		uint64		mine = mb_pipeline_horizon(pipeline, retention->retain, hold);

		if (*holder == NULL || mine < horizon)
		{
			horizon = mine;
			*holder = pipeline;
			*why = pipeline->state;
			if (hold != PG_INT64_MAX &&
				mine < mb_pipeline_horizon(pipeline, retention->retain,
										   PG_INT64_MAX))
				*why = "backfill";
		}
	}
	return horizon;
}

/*
 * Whether no row can be written into a partition any more: its range, on
 * one date or timestamp column, ended before now.
 */
static bool
mb_partition_expired(Oid relid)
{
	HeapTuple	tuple;
	Datum		datum;
	bool		isnull;
	PartitionBoundSpec *spec;
	PartitionRangeDatum *upper;
	Const	   *bound;
	TimestampTz end;
	int			overflow = 0;

	if (!get_rel_relispartition(relid))
		return false;
	tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(tuple))
		return false;
	datum = SysCacheGetAttr(RELOID, tuple, Anum_pg_class_relpartbound, &isnull);
	spec = isnull ? NULL :
		castNode(PartitionBoundSpec, stringToNode(TextDatumGetCString(datum)));
	ReleaseSysCache(tuple);
	if (spec == NULL || spec->is_default ||
		spec->strategy != PARTITION_STRATEGY_RANGE ||
		list_length(spec->upperdatums) != 1)
		return false;
	upper = linitial_node(PartitionRangeDatum, spec->upperdatums);
	if (upper->kind != PARTITION_RANGE_DATUM_VALUE || !IsA(upper->value, Const))
		return false;
	bound = (Const *) upper->value;
	if (bound->constisnull)
		return false;
	switch (bound->consttype)
	{
		case DATEOID:
			end = date2timestamptz_opt_overflow(DatumGetDateADT(bound->constvalue),
												&overflow);
			break;
		case TIMESTAMPOID:
			end = timestamp2timestamptz_opt_overflow(DatumGetTimestamp(bound->constvalue),
													 &overflow);
			break;
		case TIMESTAMPTZOID:
			end = DatumGetTimestampTz(bound->constvalue);
			break;
		default:
			return false;
	}
	return overflow <= 0 && end <= GetCurrentTransactionStartTimestamp();
}

static int64
mb_count_of(const char *sql)
{
	bool		isnull;

	if (SPI_execute(sql, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not run \"%s\"", sql);
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
									   SPI_tuptable->tupdesc, 1, &isnull));
}

static char *
mb_below_sql(uint64 horizon)
{
	return psprintf("s.%s OPERATOR(pg_catalog.<) '" UINT64_FORMAT "'::pg_catalog.xid8",
					MB_TRACKING_COLUMN, horizon);
}

/*
 * Detach and drop a partition that expired and holds no row at or above
 * the horizon, if its lock and its parent's can be had at once or within
 * the lock_timeout.  Returns the rows it held, or -1 if it stays.  Run as
 * the owner of both, who may do it by hand; no pipeline may read it alone.
 */
static int64
mb_partition_try_drop(Oid relid, uint64 horizon, List *readers)
{
	Oid			parent;
	volatile Oid owner = mb_rel_owner(relid);
	const char *table;
	MemoryContext context = CurrentMemoryContext;
	ResourceOwner resowner = CurrentResourceOwner;
	volatile int64 rows = -1;
	ListCell   *lc;

	if (!mb_partition_expired(relid))
		return -1;
	parent = get_partition_parent(relid, false);
	/* a late row goes to the default partition, not to an error */
	if (!OidIsValid(get_default_partition_oid(parent)))
		return -1;
	if (!OidIsValid(owner) || owner != mb_rel_owner(parent))
		return -1;
	foreach(lc, readers)
		if (((MbPipeline *) lfirst(lc))->source == relid)
			return -1;
	table = mb_qualified_relname(relid);

	/* a lock not granted in time leaves the partition for the next step */
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(context);
	PG_TRY();
	{
		MbUserCode	uc;

		mb_user_code_begin(&uc, owner, NULL);
		mb_user_code_set(&uc, "lock_timeout", MB_DETACH_LOCK_TIMEOUT);
		LockRelationOid(parent, AccessExclusiveLock);
		LockRelationOid(relid, AccessExclusiveLock);
		/* under the lock, every writer is gone: a fresh look sees all */
		if (mb_count_of(psprintf("SELECT pg_catalog.count(*) FROM ONLY %s AS s WHERE NOT (%s)",
								 table, mb_below_sql(horizon))) == 0)
		{
			rows = mb_count_of(psprintf("SELECT pg_catalog.count(*) FROM ONLY %s", table));
			if (SPI_execute(psprintf("ALTER TABLE %s DETACH PARTITION %s",
									 mb_qualified_relname(parent), table),
							false, 0) != SPI_OK_UTILITY ||
				SPI_execute(psprintf("DROP TABLE %s", table), false, 0) != SPI_OK_UTILITY)
				elog(ERROR, "could not drop partition %s", table);
		}
		mb_user_code_end(&uc);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(context);
		CurrentResourceOwner = resowner;
	}
	PG_CATCH();
	{
		ErrorData  *error = mb_subtransaction_error(context, resowner);

		/* the partition stays, and its rows are deleted instead */
		if (error->sqlerrcode == ERRCODE_QUERY_CANCELED ||
			error->sqlerrcode == ERRCODE_ADMIN_SHUTDOWN)
			ReThrowError(error);
		if (error->sqlerrcode != ERRCODE_LOCK_NOT_AVAILABLE)
			ereport(LOG,
					(errmsg("microbatch could not drop expired partition %s: %s",
							table, error->message)));
		FreeErrorData(error);
		rows = -1;
	}
	PG_END_TRY();
	return rows;
}

/*
 * One step of a retention setting: lock the pipelines' histories (without
 * waiting when wait is false: -1 if one is busy), find the horizon, then
 * remove up to limit rows below it (partitions whole).  Returns the rows
 * removed; *more says whether there may be more to remove now.
 */
static int64
mb_retention_step(const MbRetention *retention, bool wait, int64 limit,
				  bool *more)
{
	List	   *members;
	List	   *readers;
	const MbPipeline *holder;
	const char *why;
	uint64		horizon;
	int64		removed = 0;
	int64		partitions = 0;
	ListCell   *lc;

	Oid			owner = mb_rel_owner(retention->source);

	*more = false;
	if (retention->retain == NULL)
		return 0;
	foreach(lc, mb_hierarchy_roots(retention->source))
		if (!mb_lock_hierarchy_retention(lfirst_oid(lc), ExclusiveLock, wait))
			return -1;
	readers = mb_pipelines_on_sources(mb_tables_sharing_rows(retention->source,
															 RowExclusiveLock,
															 &members));
	foreach(lc, readers)
		if (!mb_lock_history(((MbPipeline *) lfirst(lc))->id, ExclusiveLock, wait))
			return -1;
	horizon = mb_retention_horizon(retention, readers, &holder, &why);
	if (horizon <= U64FromFullTransactionId(FirstNormalFullTransactionId))
		return 0;

	foreach(lc, members)
	{
		Oid			member = lfirst_oid(lc);
		int64		dropped;
		MbUserCode	uc;

		if (removed >= limit)
			break;
		/*
		 * Rows are removed with the rights of the table that has the
		 * retention: a member another role owns (a partition a superuser
		 * added, whose triggers the table's owner may have written) keeps
		 * its rows.
		 */
		if (get_rel_relkind(member) != RELKIND_RELATION ||
			mb_rel_owner(member) != owner)
			continue;
		CHECK_FOR_INTERRUPTS();
		dropped = mb_partition_try_drop(member, horizon, readers);
		if (dropped >= 0)
		{
			/* the parent's lock goes with the step: end it now */
			removed += dropped;
			partitions++;
			*more = true;
			break;
		}

		/* as the owner: its triggers and policies are its own */
		mb_user_code_begin(&uc, owner, NULL);
		mb_user_code_set(&uc, "enable_seqscan", "off");
		if (SPI_execute(psprintf("DELETE FROM ONLY %s WHERE ctid OPERATOR(pg_catalog.=) ANY (ARRAY("
								 "SELECT s.ctid FROM ONLY %s AS s WHERE %s LIMIT " INT64_FORMAT "))",
								 mb_qualified_relname(member), mb_qualified_relname(member),
								 mb_below_sql(horizon), limit - removed),
						false, 0) != SPI_OK_DELETE)
			elog(ERROR, "could not remove rows of %s", mb_qualified_relname(member));
		removed += (int64) SPI_processed;
		mb_user_code_end(&uc);
	}
	if (removed > 0 || partitions > 0)
		mb_retention_record(retention->source, horizon, removed, partitions);
	*more = *more || removed >= limit;
	return removed;
}

/* Remove now, in this transaction, everything the retention allows */
int64
mb_retention_now(Oid source, Oid caller)
{
	List	   *retentions = mb_retention_list(list_make1_oid(source));
	int64		total = 0;
	bool		more;

	if (!pg_class_ownercheck(source, caller))
		aclcheck_error(ACLCHECK_NOT_OWNER, OBJECT_TABLE, get_rel_name(source));
	if (retentions == NIL || ((MbRetention *) linitial(retentions))->retain == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("table \"%s\" has no retention", get_rel_name(source)),
				 errhint("Set one with microbatch.set_retention().")));
	do
	{
		CHECK_FOR_INTERRUPTS();
		total += mb_retention_step(linitial(retentions), true,
								   mb_retention_step_rows, &more);
	} while (more);
	return total;
}

/*
 * What the view microbatch.retention shows of a setting; false when the
 * table is gone.
 */
bool
mb_retention_state(Oid source, uint64 *horizon, char **held_back_by,
				   const char **held_back_state, int64 *removable)
{
	List	   *retentions;
	List	   *members;
	List	   *readers;
	const MbPipeline *holder;
	ListCell   *lc;
	MbUserCode	uc;

	if (get_rel_name(source) == NULL)
		return false;
	retentions = mb_retention_list(list_make1_oid(source));
	if (retentions == NIL)
		return false;
	readers = mb_pipelines_on_sources(mb_tables_sharing_rows(source,
															 AccessShareLock,
															 &members));
	*horizon = mb_retention_horizon(linitial(retentions), readers, &holder,
									held_back_state);
	*held_back_by = holder ? holder->name : NULL;
	*removable = 0;
	if (*horizon <= U64FromFullTransactionId(FirstNormalFullTransactionId))
		return true;

	/* engine SQL over plain tables, as the catalog's owner */
	mb_user_code_begin(&uc, GetUserId(), NULL);
	mb_user_code_set(&uc, "enable_seqscan", "off");
	foreach(lc, members)
	{
		Oid			member = lfirst_oid(lc);

		if (get_rel_relkind(member) != RELKIND_RELATION)
			continue;
		*removable += mb_count_of(psprintf("SELECT pg_catalog.count(*) FROM ONLY %s AS s WHERE %s",
										   mb_qualified_relname(member),
										   mb_below_sql(*horizon)));
	}
	mb_user_code_end(&uc);
	return true;
}

/*
 * Refuse to replay batches whose rows retention may have removed, or that
 * history retention removed, before anything is replayed; and hold the
 * history lock, so that no retention step removes them while they are.
 * The error names the first batch of the range: windows only move up, so
 * if any batch of the range reaches below the horizon, the first does.
 */
void
mb_retention_check_replayable(const MbPipeline *pipeline, int64 from_batch,
							  int64 to_batch)
{
	List	   *members;
	List	   *tables = mb_tables_sharing_rows(pipeline->source, AccessShareLock,
												&members);
	int64		first = mb_ledger_first_batch(pipeline->id);
	uint64		lowest;
	ListCell   *lc;

	mb_lock_history(pipeline->id, ShareLock, true);
	if (first > 1 && from_batch < first)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("batch " INT64_FORMAT " of pipeline \"%s\" is no longer in its history",
						from_batch, pipeline->name),
				 errdetail("Its history starts at batch " INT64_FORMAT ".", first),
				 errhint("History retention removes older batches; see microbatch.history_retention and microbatch.set_history_retention().")));
	if (!mb_ledger_lowest_xid(pipeline->id, from_batch, to_batch, true, &lowest))
		return;
	foreach(lc, mb_retention_list(tables))
	{
		MbRetention *retention = lfirst(lc);

		if (retention->removed_below == 0 ||
			retention->system_identifier != GetSystemIdentifier() ||
			lowest >= retention->removed_below)
			continue;
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("batch " INT64_FORMAT " of pipeline \"%s\" is outside the retention of table \"%s\"",
						from_batch, pipeline->name, get_rel_name(retention->source)),
				 retention->retain == NULL ?
				 errdetail("Rows of its window were removed by a retention the table no longer has.") :
				 errdetail("Rows processed by batches that finished more than %s ago may have been removed.",
						   DatumGetCString(DirectFunctionCall1(interval_out,
															   IntervalPGetDatum(retention->retain)))),
				 errhint("Replay batches within the retention, or keep rows longer with microbatch.set_retention().")));
	}
}

/* A pipeline's history retention in effect, or NULL: kept forever */
static Interval *
mb_history_retention_of(const MbPipeline *pipeline)
{
	Interval   *retain;

	if (pipeline->history_retention != NULL)
		return pipeline->history_retention;
	if (mb_history_retention < 0)
		return NULL;
	retain = palloc0(sizeof(Interval));
	retain->time = (int64) mb_history_retention * USECS_PER_SEC;
	return retain;
}

/*
 * One step of history retention for a pipeline: at most limit rows of each
 * of its tables.  The position, and what follows it, always stay.  Returns
 * the rows removed, or -1 when wait is false and a replay holds the
 * history.
 */
static int64
mb_history_step(const MbPipeline *pipeline, bool wait, int64 limit)
{
	Interval   *retain = mb_history_retention_of(pipeline);
	MbLedgerBatch position;
	int64		through;
	int64		others;
	int64		ledger;
	List	   *members;
	ListCell   *lc;

	if (retain == NULL || !mb_ledger_position(pipeline->id, &position))
		return 0;
	if (!mb_lock_history(pipeline->id, ExclusiveLock, wait))
		return -1;
	/* a running backfill, or a staging retention, still needs batches */
	through = mb_ledger_last_finished_before(pipeline->id, mb_now_minus(retain),
											 Min(position.batch_id,
												 mb_hold_of(pipeline->id)));
	foreach(lc, mb_retention_list(mb_tables_sharing_rows(pipeline->source,
														 AccessShareLock,
														 &members)))
	{
		MbRetention *staging = lfirst(lc);

		if (staging->retain != NULL)
			through = Min(through,
						  mb_ledger_last_finished_before(pipeline->id,
														 mb_now_minus(staging->retain),
														 position.batch_id));
	}
	if (through == 0)
		return 0;
	ledger = mb_history_trim(pipeline->id, through, limit, &others);
	return ledger + others;
}

/* Remove now the history older than a pipeline's retention; ledger rows */
int64
mb_trim_history(const MbPipeline *pipeline)
{
	int64		total = 0;
	int64		removed;

	do
	{
		CHECK_FOR_INTERRUPTS();
		removed = mb_history_step(pipeline, true, mb_retention_step_rows);
		total += Max(removed, 0);
	} while (removed > 0);
	return total;
}

/*
 * Whether a database needs its retention worker: a staging table has a
 * retention, or some history is bounded.  Expects mb_call_begin().
 */
bool
mb_retention_wanted(void)
{
	bool		isnull;

	if (SPI_execute(psprintf("SELECT EXISTS (SELECT FROM microbatch.retention_setting WHERE retain IS NOT NULL) "
							 "OR EXISTS (SELECT FROM microbatch.pipeline "
							 "WHERE %s OR history_retention IS NOT NULL)",
							 mb_history_retention >= 0 ? "true" : "false"),
					true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read microbatch.retention_setting");
	return DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
									  SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * The retention worker: the steps of every setting and pipeline of its
 * database, each in a transaction of its own; an error is logged, and the
 * step tried again next time.
 */
typedef enum MbRetentionTask
{
	MB_TASK_STAGING,
	MB_TASK_HISTORY
} MbRetentionTask;

/*
 * Runs one step in its own transaction; returns whether there may be more
 * to remove now
 */
static bool
mb_background_step(MbRetentionTask task, Oid source, int32 pipeline_id)
{
	MemoryContext context = CurrentMemoryContext;
	volatile bool more = false;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	PG_TRY();
	{
		MbCall		call;

		mb_call_begin(&call);
		if (task == MB_TASK_STAGING)
		{
			List	   *retentions = mb_retention_list(list_make1_oid(source));

			if (retentions != NIL && get_rel_name(source) != NULL)
			{
				bool		again;

				pgstat_report_activity(STATE_RUNNING, psprintf("removing processed rows of %s",
															   mb_qualified_relname(source)));
				(void) mb_retention_step(linitial(retentions), false,
										 mb_retention_step_rows, &again);
				more = again;
			}
			else if (retentions != NIL)
				mb_retention_drop(source);	/* the table is gone */
		}
		else
		{
			MbPipeline	pipeline;

			if (mb_pipeline_by_id(pipeline_id, &pipeline))
			{
				pgstat_report_activity(STATE_RUNNING, psprintf("removing old history of pipeline %s",
															   pipeline.name));
				more = mb_history_step(&pipeline, false, mb_retention_step_rows) >=
					mb_retention_step_rows;
			}
		}
		mb_call_end(&call);
		PopActiveSnapshot();
		CommitTransactionCommand();
	}
	PG_CATCH();
	{
		ErrorData  *error;

		MemoryContextSwitchTo(context);
		error = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		if (error->sqlerrcode == ERRCODE_QUERY_CANCELED ||
			error->sqlerrcode == ERRCODE_ADMIN_SHUTDOWN)
			ReThrowError(error);
		/* a lock held elsewhere: the next round tries again */
		ereport(error->sqlerrcode == ERRCODE_LOCK_NOT_AVAILABLE ? DEBUG1 : WARNING,
				(errmsg("microbatch retention step failed: %s", error->message)));
		FreeErrorData(error);
		more = false;
	}
	PG_END_TRY();
	pgstat_report_activity(STATE_IDLE, NULL);
	MemoryContextSwitchTo(context);
	return more;
}

/*
 * One round over the database: each setting and pipeline in turn, one step
 * each.  Returns whether a step found more than it could remove, and sets
 * *wanted to whether the worker is still needed.
 */
static bool
mb_background_round(bool *wanted)
{
	List	   *sources = NIL;
	List	   *pipelines = NIL;
	bool		more = false;
	ListCell   *lc;
	MemoryContext round = AllocSetContextCreate(TopMemoryContext,
												"microbatch retention round",
												ALLOCSET_DEFAULT_SIZES);
	MemoryContext old = MemoryContextSwitchTo(round);

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	*wanted = OidIsValid(get_extension_oid("microbatch", true));
	if (*wanted)
	{
		MbCall		call;

		List	   *retentions;

		mb_call_begin(&call);
		*wanted = mb_retention_wanted();
		retentions = mb_retention_list(NIL);
		if (SPI_execute("SELECT pipeline_id FROM microbatch.pipeline ORDER BY 1",
						true, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not read microbatch.pipeline");

		/* SPI's memory goes with the call: what we keep goes in ours */
		MemoryContextSwitchTo(round);
		foreach(lc, retentions)
			sources = lappend_oid(sources, ((MbRetention *) lfirst(lc))->source);
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			bool		isnull;

			pipelines = lappend_int(pipelines,
									DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i],
																SPI_tuptable->tupdesc,
																1, &isnull)));
		}
		mb_call_end(&call);
	}
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(round);

	foreach(lc, sources)
		more |= mb_background_step(MB_TASK_STAGING, lfirst_oid(lc), 0);
	foreach(lc, pipelines)
		more |= mb_background_step(MB_TASK_HISTORY, InvalidOid, lfirst_int(lc));

	MemoryContextSwitchTo(old);
	MemoryContextDelete(round);
	return more;
}

/*
 * Tell the scheduler of the database who we are, so that DROP DATABASE
 * makes us leave with it; false once it is gone.
 */
static bool
mb_retention_publish(void)
{
	MbSlot	   *scheduler;

	LWLockAcquire(mb_shared->lock, LW_EXCLUSIVE);
	scheduler = mb_scheduler_slot(MyDatabaseId);
	if (scheduler != NULL)
		scheduler->retention_pid = MyProcPid;
	LWLockRelease(mb_shared->lock);
	return scheduler != NULL;
}

void
microbatch_retention_main(Datum arg)
{
	Oid			dboid = DatumGetObjectId(arg);

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	mb_background_session_defaults(true);
	pgstat_report_appname("microbatch retention");

	/* a lock another session holds makes a step wait a second at most */
	SetConfigOption("lock_timeout", "1000", PGC_SUSET, PGC_S_OVERRIDE);
	if (!mb_lock_retention_worker())
		proc_exit(0);

	for (;;)
	{
		bool		wanted;
		bool		more;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		if (!mb_retention_publish())
			proc_exit(0);
		more = mb_background_round(&wanted);
		if (!wanted)
			proc_exit(0);

		/* back to back while there is more, letting vacuum and loaders in */
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 more ? 10 : mb_naptime, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
