/*-------------------------------------------------------------------------
 *
 * transform.c
 *	  Validating and running the SQL transforms of a pipeline.
 *
 * A transform is one INSERT, UPDATE, DELETE, MERGE or SELECT statement.  It
 * is parsed, analysed, planned and permission-checked when it is added, as
 * the pipeline's owner under the search_path of that moment, so that bad SQL
 * is refused before anything is stored: the tables it reads and writes, the
 * functions and operators it calls, and targets whose constraints could not
 * be checked inside a batch.  It runs through the user-code primitive
 * (usercode.c), as the owner under the same search_path: no transform ever
 * has more rights than the role that owns the pipeline, nor leaves a
 * setting behind.
 *
 * Each backend prepares a transform once (transform rows are only ever
 * added and removed) and keeps its plan while batches keep about the same
 * size; the plan cache also plans it again when a relation it uses changes
 * or is analysed.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_inherits.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/nodeFuncs.h"
#include "nodes/parsenodes.h"
#include "nodes/plannodes.h"
#include "parser/parser.h"
#include "parser/parsetree.h"
#include "tcop/tcopprot.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
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

/* The layers, in the order a batch runs them */
const char *const mb_layers[MB_NLAYERS] = {"bronze", "silver", "gold"};

/* Context of an error raised inside a transform */
typedef struct MbTransformContext
{
	const MbPipeline *pipeline;
	const MbTransform *transform;
	int64		batch_id;
} MbTransformContext;

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
 * Report positions of errors in a transform's (or a check's) text against
 * that text, not against the statement that called the API function (as SPI
 * does).
 */
void
mb_parse_error_context(void *arg)
{
	MbParseContext *context = arg;
	int			position = geterrposition();

	if (position > 0)
	{
		errposition(0);
		internalerrposition(position);
		internalerrquery(context->text);
	}
	errcontext("%s", context->what);
}

/* The owner must be able to execute every function a transform calls */
static bool
mb_check_execute(Oid funcid, void *context)
{
	Oid			owner = *(Oid *) context;

	if (pg_proc_aclcheck(funcid, owner, ACL_EXECUTE) != ACLCHECK_OK)
		aclcheck_error(ACLCHECK_NO_PRIV, OBJECT_FUNCTION, get_func_name(funcid));
	return false;
}

static bool
mb_execute_walker(Node *node, void *context)
{
	if (node == NULL)
		return false;
	if (IsA(node, Query))
		return query_tree_walker((Query *) node, mb_execute_walker, context, 0);
	(void) check_functions_in_node(node, mb_check_execute, context);
	return expression_tree_walker(node, mb_execute_walker, context);
}

/* Refuse an analysed query or expression that calls a function owner may not */
void
mb_check_executable(Node *node, Oid owner)
{
	(void) mb_execute_walker(node, &owner);
}

/*
 * A transform runs in a security-restricted operation, where PostgreSQL
 * refuses to queue trigger events for commit time ("cannot fire deferred
 * trigger within security-restricted operation"), so a target table must
 * have no INITIALLY DEFERRED constraint of its own, nor be referenced by one
 * (its foreign key's triggers fire on the referenced table too).
 */
static void
mb_check_no_deferred_constraints(List *targets)
{
	Datum	   *elems;
	int			n = 0;
	ListCell   *lc;
	Oid			types[1] = {OIDARRAYOID};
	Datum		values[1];

	if (targets == NIL)
		return;
	elems = palloc(sizeof(Datum) * list_length(targets));
	foreach(lc, targets)
		elems[n++] = ObjectIdGetDatum(lfirst_oid(lc));
	values[0] = PointerGetDatum(construct_array(elems, n, OIDOID, sizeof(Oid),
												true, TYPALIGN_INT));
	if (SPI_execute_with_args("SELECT c.conname::pg_catalog.text, "
							  "c.conrelid::pg_catalog.regclass::pg_catalog.text "
							  "FROM pg_catalog.pg_constraint c "
							  "WHERE (c.conrelid OPERATOR(pg_catalog.=) ANY ($1) "
							  "OR c.confrelid OPERATOR(pg_catalog.=) ANY ($1)) "
							  "AND c.condeferred ORDER BY 2, 1 LIMIT 1",
							  1, types, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read the constraints of the transform's targets");
	if (SPI_processed > 0)
	{
		char	   *name = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
		char	   *table = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);

		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("a transform cannot write to a table with an INITIALLY DEFERRED constraint"),
				 errdetail("Constraint \"%s\" of table %s is checked at commit; transforms run in a security-restricted operation, where PostgreSQL cannot queue checks for commit time.",
						   name, table),
				 errhint("Declare the constraint INITIALLY IMMEDIATE or NOT DEFERRABLE: it is then checked when each transform's statement ends.")));
	}
}

/* The tables a plan writes, with their partitions */
static List *
mb_plan_targets(PlannedStmt *plan)
{
	List	   *targets = NIL;
	ListCell   *lc;

	foreach(lc, plan->resultRelations)
	{
		Oid			relid = rt_fetch(lfirst_int(lc), plan->rtable)->relid;

		targets = list_concat_unique_oid(targets,
										 mb_hierarchy_members(relid, NoLock));
	}
	return targets;
}

/*
 * Refuse a transform that is not exactly one plannable DML or SELECT
 * statement the owner may run.  Errors leave nothing behind: the caller has
 * stored nothing yet.
 */
void
mb_transform_validate(const char *command, Oid owner, const char *search_path,
					  const char *what)
{
	MbParseContext parse_context = {command, what};
	List	   *raw_statements;
	RawStmt    *raw;
	List	   *queries;
	List	   *plans;
	List	   *targets = NIL;
	ListCell   *lc;
	MbUserCode	uc;
	ErrorContextCallback callback;

	callback.callback = mb_parse_error_context;
	callback.arg = &parse_context;
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

	mb_user_code_begin(&uc, owner, search_path);

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
		mb_check_executable((Node *) query, owner);
	}

	plans = pg_plan_queries(queries, command, CURSOR_OPT_PARALLEL_OK, NULL);
	foreach(lc, plans)
	{
		PlannedStmt *plan = lfirst_node(PlannedStmt, lc);

		if (mb_command_kind(plan->commandType) == NULL)
			continue;
		(void) ExecCheckRTPerms(plan->rtable, true);
		targets = list_concat_unique_oid(targets, mb_plan_targets(plan));
	}
	mb_check_no_deferred_constraints(targets);

	mb_user_code_end(&uc);
	error_context_stack = callback.previous;
}

/*
 * Plans over a batch view are made for the window of the batch being
 * planned: the window functions are stable, so the planner estimates with
 * their values, and rightly picks a sequential scan for a window holding
 * most of the table (a first batch, or one after a pause) but an index scan
 * for the next, small one.  A plan is therefore kept only while batches stay
 * within a factor of ten of the size it was made for (below 1,000 rows,
 * sizes do not change plans).  A sequential scan also costs the table's
 * size, which grows without invalidating plans until the table is analysed:
 * one picked while the table was small (a pipeline's first batches) would be
 * kept for small batches over a table that has grown large.  So a plan is
 * made again when the source has doubled in size (or halved) since, and
 * after a minute at most.
 */
#define MB_PLAN_SIZE_FACTOR 10
#define MB_PLAN_SMALL_ROWS 1000
#define MB_PLAN_PAGES_FACTOR 2
#define MB_PLAN_SMALL_PAGES 8
#define MB_PLAN_MAX_AGE_MS (60 * 1000)

static bool
mb_batch_plan_fits(const MbBatchPlan *entry, int64 rows, int64 source_pages)
{
	int64		planned = Max(entry->planned_rows, MB_PLAN_SMALL_ROWS);

	rows = Max(rows, MB_PLAN_SMALL_ROWS);
	if (rows / MB_PLAN_SIZE_FACTOR >= planned ||
		planned / MB_PLAN_SIZE_FACTOR >= rows)
		return false;
	if (source_pages >= 0)
	{
		int64		planned_pages = Max(entry->planned_pages, MB_PLAN_SMALL_PAGES);

		source_pages = Max(source_pages, MB_PLAN_SMALL_PAGES);
		if (source_pages / MB_PLAN_PAGES_FACTOR >= planned_pages ||
			planned_pages / MB_PLAN_PAGES_FACTOR >= source_pages)
			return false;
	}
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
 * The plan of sql for a window of rows rows over a source of source_pages
 * pages, prepared again when the kept one does not fit; rows -1 for a plan
 * that does not depend on the window's size, source_pages -1 when not known.
 */
SPIPlanPtr
mb_batch_plan(MbBatchPlan *entry, const char *sql, int nargs, Oid *argtypes,
			  int64 rows, int64 source_pages)
{
	if (entry->plan != NULL &&
		(strcmp(entry->sql, sql) != 0 ||
		 (rows >= 0 && !mb_batch_plan_fits(entry, rows, source_pages))))
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
		entry->planned_pages = source_pages;
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

/* While a preview runs (batch.c): fail checks report, not raise */
bool		mb_previewing = false;

/* The log the steps of the running batch go to, if any */
static MbStepLog *step_log = NULL;

/*
 * Start logging steps into log, in the given context.  A batch run by a
 * transform of another batch logs into its own log: the outer log comes
 * back with mb_steps_end().
 */
void
mb_steps_begin(MbStepLog *log, MemoryContext context)
{
	log->context = context;
	log->steps = NIL;
	log->outer = step_log;
	step_log = log;
}

/* Stop logging into log; also on the error path */
void
mb_steps_end(MbStepLog *log)
{
	step_log = log->outer;
}

/* When a step starts: 0 when no step is logged */
TimestampTz
mb_step_start(void)
{
	return step_log != NULL ? GetCurrentTimestamp() : 0;
}

void
mb_step_record(const char *kind, const char *name, const char *layer,
			   int64 rows, TimestampTz started)
{
	MemoryContext old;
	MbStep	   *step;

	if (step_log == NULL)
		return;
	old = MemoryContextSwitchTo(step_log->context);
	step = palloc(sizeof(MbStep));
	step->kind = kind;
	step->name = name ? pstrdup(name) : NULL;
	step->layer = layer ? pstrdup(layer) : NULL;
	step->rows = rows;
	step->usecs = GetCurrentTimestamp() - started;
	step_log->steps = lappend(step_log->steps, step);
	MemoryContextSwitchTo(old);
}

/* The rows a statement inserted, updated or deleted: none for a SELECT */
static int64
mb_rows_written_by(int rc)
{
	switch (rc)
	{
		case SPI_OK_INSERT:
		case SPI_OK_UPDATE:
		case SPI_OK_DELETE:
		case SPI_OK_INSERT_RETURNING:
		case SPI_OK_UPDATE_RETURNING:
		case SPI_OK_DELETE_RETURNING:
		case SPI_OK_MERGE:
			return (int64) SPI_processed;
		default:
			return 0;
	}
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
 * Run the transforms of a batch of rows rows, in order, each as the
 * pipeline's owner through the user-code primitive, so that nothing one
 * sets reaches the next; after the last transform of each layer, the
 * layer's audits.  The batch window must be active.  Errors propagate: the
 * caller rolls the batch back.
 */
void
mb_transforms_run(const MbPipeline *pipeline, List *transforms, List *audits,
				  const MbWindow *window, int64 rows)
{
	MbUserCode	uc;
	ListCell   *lc = list_head(transforms);
	MbTransformContext context;
	ErrorContextCallback callback;

	context.pipeline = pipeline;
	context.batch_id = window->batch_id;
	callback.callback = mb_transform_error_context;
	callback.arg = &context;
	callback.previous = error_context_stack;
	error_context_stack = &callback;

	/* transforms come in layer order */
	for (int layer = 0; layer < MB_NLAYERS; layer++)
	{
		for (; lc != NULL; lc = lnext(transforms, lc))
		{
			MbTransform *transform = lfirst(lc);
			SPIPlanPtr	plan;
			int			rc;
			TimestampTz started = mb_step_start();

			if (strcmp(transform->layer, mb_layers[layer]) != 0)
				break;
			CHECK_FOR_INTERRUPTS();
			context.transform = transform;
			mb_user_code_begin(&uc, pipeline->owner, transform->search_path);
			/* batch statements are short and planned for small inputs: JIT never pays */
			mb_user_code_set(&uc, "jit", "off");
			plan = mb_batch_plan(mb_batch_plan_slot(MB_PLAN_TRANSFORM, transform->id),
								 transform->command, 0, NULL, rows,
								 window->source_pages);
			rc = SPI_execute_plan(plan, NULL, NULL, false, 0);
			if (rc < 0)
				elog(ERROR, "SPI_execute_plan failed: %s", SPI_result_code_string(rc));
			mb_step_record("transform", transform->name, transform->layer,
						   mb_rows_written_by(rc), started);
			SPI_freetuptable(SPI_tuptable);
			mb_user_code_end(&uc);
		}
		error_context_stack = callback.previous;
		mb_audits_run(pipeline, audits, mb_layers[layer], window, rows);
		error_context_stack = &callback;
	}

	error_context_stack = callback.previous;
}
