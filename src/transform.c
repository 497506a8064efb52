/*-------------------------------------------------------------------------
 *
 * transform.c
 *	  Validating and running the SQL transforms of a pipeline.
 *
 * A transform is one INSERT, UPDATE, DELETE, MERGE or SELECT statement.  It
 * is parsed, analysed, planned and permission-checked when it is added, as
 * the pipeline's owner under the search_path of that moment, so that bad SQL
 * is refused before anything is stored.  It runs as the owner under the same
 * search_path (pg_temp last), inside a security-restricted operation: no
 * transform ever has more rights than the role that owns the pipeline.
 *
 * Each backend prepares a transform once (transform rows are only ever
 * added and removed) and keeps its plan while batches keep about the same
 * size; the plan cache also plans it again when a relation it uses changes
 * or is analysed.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "executor/executor.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "nodes/plannodes.h"
#include "parser/parser.h"
#include "tcop/tcopprot.h"
#include "tcop/utility.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "microbatch.h"

/*
 * The plans this backend keeps.  Each keeps its SQL too: ids restart when
 * the extension is created again.
 */
typedef struct MbPlanKey
{
	MbPlanKind	kind;
	int32		id;
} MbPlanKey;

typedef struct MbPlanEntry
{
	MbPlanKey	key;
	MbBatchPlan plan;
} MbPlanEntry;

static HTAB *kept_plans = NULL;

/* Context of an error raised inside a transform */
typedef struct MbTransformContext
{
	const MbPipeline *pipeline;
	const MbTransform *transform;
	int64		batch_id;
} MbTransformContext;

static void
mb_set_search_path(const char *search_path)
{
	(void) set_config_option("search_path",
							 psprintf("%s, pg_temp", search_path),
							 PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
}

static const char *
mb_command_kind(CmdType type)
{
	switch (type)
	{
		case CMD_SELECT:
			return "SELECT";
		case CMD_INSERT:
			return "INSERT";
		case CMD_UPDATE:
			return "UPDATE";
		case CMD_DELETE:
			return "DELETE";
		case CMD_MERGE:
			return "MERGE";
		default:
			return NULL;
	}
}

/*
 * Report positions of errors in a transform's text against that text, not
 * against the statement that called add_transform (as SPI does).
 */
static void
mb_transform_parse_error_context(void *arg)
{
	int			position = geterrposition();

	if (position > 0)
	{
		errposition(0);
		internalerrposition(position);
		internalerrquery((const char *) arg);
	}
	errcontext("transform command");
}

/*
 * Refuse a transform that is not exactly one plannable DML or SELECT
 * statement the owner may run.  Errors leave nothing behind: the caller has
 * stored nothing yet.
 */
void
mb_transform_validate(const char *command, Oid owner, const char *search_path)
{
	List	   *raw_statements;
	RawStmt    *raw;
	List	   *queries;
	List	   *plans;
	ListCell   *lc;
	Oid			saved_user;
	int			saved_sec_context;
	int			nest_level;
	ErrorContextCallback callback;

	callback.callback = mb_transform_parse_error_context;
	callback.arg = (void *) command;
	callback.previous = error_context_stack;
	error_context_stack = &callback;

	raw_statements = raw_parser(command, RAW_PARSE_DEFAULT);
	if (list_length(raw_statements) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a transform must be exactly one SQL statement"),
				 errdetail_plural("The command has %d statement.",
								  "The command has %d statements.",
								  list_length(raw_statements),
								  list_length(raw_statements)),
				 errhint("Add each statement as a transform of its own; they run in order, in one transaction.")));
	raw = linitial_node(RawStmt, raw_statements);

	mb_run_as(owner, &saved_user, &saved_sec_context);
	nest_level = NewGUCNestLevel();
	mb_set_search_path(search_path);

	queries = pg_analyze_and_rewrite_fixedparams(raw, command, NULL, 0, NULL);
	foreach(lc, queries)
	{
		Query	   *query = lfirst_node(Query, lc);

		if (query->commandType == CMD_UTILITY && query->canSetTag)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("a transform cannot be a %s statement",
							GetCommandTagName(CreateCommandTag(query->utilityStmt))),
					 errhint("A transform is one INSERT, UPDATE, DELETE, MERGE or SELECT statement.")));
	}

	plans = pg_plan_queries(queries, command, CURSOR_OPT_PARALLEL_OK, NULL);
	foreach(lc, plans)
	{
		PlannedStmt *plan = lfirst_node(PlannedStmt, lc);

		if (mb_command_kind(plan->commandType) != NULL)
			(void) ExecCheckRTPerms(plan->rtable, true);
	}

	AtEOXact_GUC(true, nest_level);
	mb_run_as_end(saved_user, saved_sec_context);
	error_context_stack = callback.previous;
}

/*
 * Plans over a batch view are made for the window of the batch being
 * planned: the window functions are stable, so the planner estimates with
 * their values, and rightly picks a sequential scan for a window holding
 * most of the table (a first batch, or one after a pause) but an index scan
 * for the next, small one.  A plan is therefore kept only while batches stay
 * within a factor of ten of the size it was made for (below 1,000 rows,
 * sizes do not change plans), and for a minute at most, since the tables
 * grow without invalidating plans until they are analysed.
 */
#define MB_PLAN_SIZE_FACTOR 10
#define MB_PLAN_SMALL_ROWS 1000
#define MB_PLAN_MAX_AGE_MS (60 * 1000)

static bool
mb_batch_plan_fits(const MbBatchPlan *entry, int64 rows)
{
	int64		planned = Max(entry->planned_rows, MB_PLAN_SMALL_ROWS);

	rows = Max(rows, MB_PLAN_SMALL_ROWS);
	if (rows / MB_PLAN_SIZE_FACTOR >= planned ||
		planned / MB_PLAN_SIZE_FACTOR >= rows)
		return false;
	return !TimestampDifferenceExceeds(entry->planned_at, GetCurrentTimestamp(),
									   MB_PLAN_MAX_AGE_MS);
}

static void
mb_batch_plan_forget(MbBatchPlan *entry)
{
	if (entry->plan != NULL)
		SPI_freeplan(entry->plan);
	if (entry->sql != NULL)
		pfree(entry->sql);
	entry->plan = NULL;
	entry->sql = NULL;
}

/*
 * The plan of sql for a window of rows rows, prepared again when the kept one
 * does not fit; rows -1 for a plan that does not depend on the window's size.
 */
SPIPlanPtr
mb_batch_plan(MbBatchPlan *entry, const char *sql, int nargs, Oid *argtypes,
			  int64 rows)
{
	if (entry->plan != NULL &&
		(strcmp(entry->sql, sql) != 0 ||
		 (rows >= 0 && !mb_batch_plan_fits(entry, rows))))
		mb_batch_plan_forget(entry);
	if (entry->plan == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare(sql, nargs, argtypes);

		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed for \"%s\": %s",
				 sql, SPI_result_code_string(SPI_result));
		if (SPI_keepplan(plan) != 0)
			elog(ERROR, "SPI_keepplan failed");
		entry->sql = MemoryContextStrdup(TopMemoryContext, sql);
		entry->plan = plan;
		entry->planned_rows = rows;
		entry->planned_at = GetCurrentTimestamp();
	}
	return entry->plan;
}

/* Where this backend keeps a plan; a new one starts empty */
MbBatchPlan *
mb_batch_plan_slot(MbPlanKind kind, int32 id)
{
	MbPlanKey	key;
	MbPlanEntry *entry;
	bool		found;

	if (kept_plans == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(MbPlanKey);
		ctl.entrysize = sizeof(MbPlanEntry);
		kept_plans = hash_create("microbatch plans", 64, &ctl,
								 HASH_ELEM | HASH_BLOBS);
	}

	memset(&key, 0, sizeof(key));
	key.kind = kind;
	key.id = id;
	entry = hash_search(kept_plans, &key, HASH_ENTER, &found);
	if (!found)
		memset(&entry->plan, 0, sizeof(entry->plan));
	return &entry->plan;
}

static void
mb_transform_error_context(void *arg)
{
	MbTransformContext *context = (MbTransformContext *) arg;

	errcontext("microbatch transform \"%s\" (%s) of pipeline \"%s\", batch " INT64_FORMAT,
			   context->transform->name, context->transform->layer,
			   context->pipeline->name, context->batch_id);
}

/*
 * Run the transforms of a batch of rows rows, in order, as the pipeline's
 * owner.  The batch window must be active.  Errors propagate: the caller
 * rolls the batch back.
 */
void
mb_transforms_run(const MbPipeline *pipeline, List *transforms, int64 batch_id,
				  int64 rows)
{
	Oid			saved_user;
	int			saved_sec_context;
	int			nest_level;
	ListCell   *lc;
	MbTransformContext context;
	ErrorContextCallback callback;

	mb_run_as(pipeline->owner, &saved_user, &saved_sec_context);
	nest_level = NewGUCNestLevel();

	context.pipeline = pipeline;
	context.batch_id = batch_id;
	callback.callback = mb_transform_error_context;
	callback.arg = &context;
	callback.previous = error_context_stack;
	error_context_stack = &callback;

	foreach(lc, transforms)
	{
		MbTransform *transform = lfirst(lc);
		SPIPlanPtr	plan;
		int			rc;

		CHECK_FOR_INTERRUPTS();
		context.transform = transform;
		mb_set_search_path(transform->search_path);
		plan = mb_batch_plan(mb_batch_plan_slot(MB_PLAN_TRANSFORM, transform->id),
							 transform->command, 0, NULL, rows);
		rc = SPI_execute_plan(plan, NULL, NULL, false, 0);
		if (rc < 0)
			elog(ERROR, "SPI_execute_plan failed: %s", SPI_result_code_string(rc));
		SPI_freetuptable(SPI_tuptable);
	}

	error_context_stack = callback.previous;
	AtEOXact_GUC(true, nest_level);
	mb_run_as_end(saved_user, saved_sec_context);
}
