/*-------------------------------------------------------------------------
 *
 * quality.c
 *	  Expectations, audits and the quarantine.
 *
 * An expectation is a boolean expression over the columns of a pipeline's
 * batch rows.  It is parsed and analysed when it is added, as the owner
 * under the caller's search_path, against the batch view, and refused if it
 * refers to anything but the view's columns, contains a subquery, an
 * aggregate, a window or set-returning function, a volatile function (its
 * answer must not change while a batch is checked) or a temporary one.  It
 * is stored as PostgreSQL deparses it, with every name outside pg_catalog
 * qualified, and only if it reads back the same under search_path
 * pg_catalog, so that all of a pipeline's expectations are checked by one
 * query, in one pass over the batch's rows, before the transforms run.  A
 * row for which an expectation is not true (false or null) violates it.
 *
 * Rows that violate a drop expectation are quarantined and taken out of the
 * batch view: the view filters on microbatch.batch_row_kept(), which looks
 * the row up among those this pass took out.  Nothing in the catalog
 * changes from batch to batch, and the transforms see the kept rows as an
 * ordinary relation.  The check reads the rows as the pipeline's owner
 * through the user-code primitive; the quarantine and the results are
 * written as the catalog's owner, in the batch's transaction.
 *
 * An audit is a SELECT run as the owner after the transforms of a layer,
 * in the batch's transaction; every row it returns is a violation.  A
 * failing expectation or audit with action fail raises an error, which
 * rolls the whole batch back: its writes are never visible to anyone.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/relation.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/optimizer.h"
#include "parser/parse_coerce.h"
#include "parser/parse_collate.h"
#include "parser/parse_expr.h"
#include "parser/parse_relation.h"
#include "parser/parser.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/ruleutils.h"

#include "microbatch.h"

/*
 * Rows fetched at a time by the check, most bytes of quarantined rows
 * written at a time, and violating rows shown
 */
#define MB_CHECK_FETCH_ROWS 1000
#define MB_QUARANTINE_CHUNK_BYTES (16 * 1024 * 1024)
#define MB_SAMPLE_ROWS 3

const char *
mb_violation_action_name(MbViolationAction action)
{
	switch (action)
	{
		case MB_VIOLATION_WARN:
			return "warn";
		case MB_VIOLATION_DROP:
			return "drop";
		case MB_VIOLATION_FAIL:
			return "fail";
	}
	pg_unreachable();
}

/*
 * Settings under which a predicate is deparsed and read back, at validation
 * and in every batch: constants print and parse the same whatever the
 * session's DateStyle, IntervalStyle or standard_conforming_strings (as
 * pg_dump pins them).
 */
static void
mb_pin_constant_settings(MbUserCode *uc)
{
	mb_user_code_set(uc, "DateStyle", "ISO");
	mb_user_code_set(uc, "IntervalStyle", "postgres");
	mb_user_code_set(uc, "extra_float_digits", "3");
	mb_user_code_set(uc, "standard_conforming_strings", "on");
}

static void
mb_expectation_refuse(const char *message) pg_attribute_noreturn();

static void
mb_expectation_refuse(const char *message)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg_internal("%s", message),
			 errdetail("An expectation is a boolean expression over the columns of one input row."),
			 errhint("Check sets of rows, or the tables the transforms write, with microbatch.add_audit().")));
}

/* Refuse references to anything but the batch view's own columns */
static bool
mb_check_columns_walker(Node *node, void *context)
{
	if (node == NULL)
		return false;
	if (IsA(node, Var) && ((Var *) node)->varattno <= 0)
		mb_expectation_refuse(_("an expectation cannot refer to a whole row or a system column"));
	return expression_tree_walker(node, mb_check_columns_walker, context);
}

/* Temporary functions and operators exist in one session only */
static bool
mb_check_not_temporary(Oid funcid, void *context)
{
	if (isAnyTempNamespace(get_func_namespace(funcid)))
		mb_expectation_refuse(_("an expectation cannot call a temporary function or operator"));
	return false;
}

static bool
mb_check_temporary_walker(Node *node, void *context)
{
	if (node == NULL)
		return false;
	(void) check_functions_in_node(node, mb_check_not_temporary, context);
	return expression_tree_walker(node, mb_check_temporary_walker, context);
}

/*
 * The expression of a predicate: the text must parse as exactly one
 * expression, in parentheses, with nothing around it.
 */
static Node *
mb_expectation_parse(const char *sql)
{
	List	   *raw = raw_parser(sql, RAW_PARSE_DEFAULT);
	SelectStmt *select;
	ResTarget  *target;

	if (list_length(raw) != 1 ||
		!IsA(linitial_node(RawStmt, raw)->stmt, SelectStmt))
		select = NULL;
	else
		select = (SelectStmt *) linitial_node(RawStmt, raw)->stmt;
	if (select == NULL || select->op != SETOP_NONE ||
		list_length(select->targetList) != 1 ||
		select->distinctClause != NIL || select->intoClause != NULL ||
		select->fromClause != NIL || select->whereClause != NULL ||
		select->groupClause != NIL || select->havingClause != NULL ||
		select->windowClause != NIL || select->valuesLists != NIL ||
		select->sortClause != NIL || select->limitOffset != NULL ||
		select->limitCount != NULL || select->lockingClause != NIL ||
		select->withClause != NULL ||
		linitial_node(ResTarget, select->targetList)->name != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_SYNTAX_ERROR),
				 errmsg("an expectation must be one boolean expression")));
	target = linitial_node(ResTarget, select->targetList);
	return target->val;
}

/*
 * Parse and analyse a predicate's text against the batch view, under the
 * current search_path, and refuse what an expectation may not contain.
 */
static Node *
mb_expectation_analyze(Relation view, const char *predicate)
{
	/* the newline ends a trailing comment before the parenthesis */
	char	   *sql = psprintf("SELECT (%s\n)", predicate);
	MbParseContext check = {sql, "expectation predicate"};
	ErrorContextCallback callback;
	ParseState *pstate;
	ParseNamespaceItem *nsitem;
	Node	   *expr;

	callback.callback = mb_parse_error_context;
	callback.arg = &check;
	callback.previous = error_context_stack;
	error_context_stack = &callback;

	pstate = make_parsestate(NULL);
	pstate->p_sourcetext = sql;
	nsitem = addRangeTableEntryForRelation(pstate, view, AccessShareLock,
										   NULL, false, false);
	addNSItemToQuery(pstate, nsitem, false, true, true);
	expr = transformExpr(pstate, mb_expectation_parse(sql), EXPR_KIND_SELECT_TARGET);
	expr = coerce_to_boolean(pstate, expr, "an expectation");
	assign_expr_collations(pstate, expr);

	if (pstate->p_hasSubLinks)
		mb_expectation_refuse(_("an expectation cannot contain a subquery"));
	if (pstate->p_hasAggs)
		mb_expectation_refuse(_("an expectation cannot contain an aggregate function"));
	if (pstate->p_hasWindowFuncs)
		mb_expectation_refuse(_("an expectation cannot contain a window function"));
	if (pstate->p_hasTargetSRFs || expression_returns_set(expr))
		mb_expectation_refuse(_("an expectation cannot contain a set-returning function"));
	if (contain_volatile_functions(expr))
		mb_expectation_refuse(_("an expectation cannot contain a volatile function"));
	(void) mb_check_columns_walker(expr, NULL);
	(void) mb_check_temporary_walker(expr, NULL);
	free_parsestate(pstate);

	error_context_stack = callback.previous;
	return expr;
}

/*
 * Check a predicate as the owner would run it, against the columns of the
 * pipeline's batch view under the caller's search_path, and return it
 * deparsed with every name outside pg_catalog qualified.  The deparsed text
 * is what every batch runs, under search_path pg_catalog: it is read back
 * here the same way, and refused unless it means exactly what was
 * validated (IS DISTINCT FROM, NULLIF and CASE x WHEN do not print the
 * operator they use, so an operator of another schema would be lost).
 * Errors leave nothing behind.
 */
char *
mb_expectation_validate(const MbPipeline *pipeline, const char *predicate,
						Oid owner, const char *search_path)
{
	MbUserCode	uc;
	Relation	view;
	Node	   *expr;
	char	   *deparsed;

	view = relation_open(pipeline->batch_view, AccessShareLock);

	mb_user_code_begin(&uc, owner, search_path);
	mb_pin_constant_settings(&uc);
	expr = mb_expectation_analyze(view, predicate);
	mb_check_executable(expr, owner);
	mb_user_code_end(&uc);

	mb_user_code_begin(&uc, owner, NULL);
	mb_pin_constant_settings(&uc);
	deparsed = deparse_expression(expr,
								  deparse_context_for(RelationGetRelationName(view),
													  RelationGetRelid(view)),
								  false, false);
	if (!equal(expr, mb_expectation_analyze(view, deparsed)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("expectation predicate cannot be stored without changing its meaning"),
				 errdetail("Stored as \"%s\", which resolves to other operators or functions under search_path pg_catalog.",
						   deparsed),
				 errhint("IS DISTINCT FROM, NULLIF and CASE x WHEN use the = operator that the search_path finds; write the comparison with OPERATOR(schema.=) instead.")));
	mb_user_code_end(&uc);

	relation_close(view, NoLock);
	return deparsed;
}

/*
 * An audit is one SELECT statement, without data-modifying WITH queries
 * (PostgreSQL allows them only at the top level) or locking clauses, that
 * the owner may run.  Functions it calls are the owner's code and run as
 * such, whatever they do.
 */
void
mb_audit_validate(const char *query, Oid owner, const char *search_path)
{
	List	   *raw;
	SelectStmt *select = NULL;
	MbParseContext check = {query, "audit query"};
	ErrorContextCallback callback;
	ListCell   *lc;

	callback.callback = mb_parse_error_context;
	callback.arg = &check;
	callback.previous = error_context_stack;
	error_context_stack = &callback;

	raw = raw_parser(query, RAW_PARSE_DEFAULT);
	if (list_length(raw) == 1 && IsA(linitial_node(RawStmt, raw)->stmt, SelectStmt))
		select = (SelectStmt *) linitial_node(RawStmt, raw)->stmt;
	if (select == NULL || select->intoClause != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("an audit must be exactly one SELECT statement"),
				 errhint("Every row the query returns is a violation; use microbatch.current_batch_id() to look at the batch's own rows only.")));
	if (select->lockingClause != NIL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("an audit cannot lock rows"),
				 errdetail("An audit only reads what the batch wrote.")));
	if (select->withClause != NULL)
	{
		foreach(lc, select->withClause->ctes)
		{
			CommonTableExpr *cte = lfirst_node(CommonTableExpr, lc);

			if (!IsA(cte->ctequery, SelectStmt))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("an audit cannot change data"),
						 errdetail("WITH query \"%s\" is a data-modifying statement.",
								   cte->ctename)));
		}
	}
	error_context_stack = callback.previous;

	mb_transform_validate(query, owner, search_path, "audit query");
}

/*
 * The query that checks every expectation in one pass: for each row of the
 * window that violates one, where it is, the mask of what it violates, and
 * the row as jsonb (without the tracking column) when it is to be
 * quarantined or shown.  The row mask is computed once per row, below the
 * fence of OFFSET 0.  The whole row is s.*, which a column named s cannot
 * shadow.
 */
static char *
mb_expectations_sql(const MbPipeline *pipeline, List *expectations,
					uint64 keep_row_mask)
{
	StringInfoData mask;
	ListCell   *lc;
	int			bit = 0;

	initStringInfo(&mask);
	appendStringInfoString(&mask, "(0::pg_catalog.int8");
	foreach(lc, expectations)
	{
		MbExpectation *expectation = lfirst(lc);

		appendStringInfo(&mask,
						 " OPERATOR(pg_catalog.|) CASE WHEN (%s) IS NOT TRUE THEN "
						 INT64_FORMAT "::pg_catalog.int8 ELSE 0::pg_catalog.int8 END",
						 expectation->predicate, (int64) (UINT64CONST(1) << bit));
		bit++;
	}
	appendStringInfoChar(&mask, ')');

	return psprintf("SELECT c.tableoid, c.ctid, c.mask, "
					"CASE WHEN c.mask OPERATOR(pg_catalog.&) " INT64_FORMAT "::pg_catalog.int8 "
					"OPERATOR(pg_catalog.<>) 0 THEN pg_catalog.to_jsonb(c.r) "
					"OPERATOR(pg_catalog.-) '%s'::pg_catalog.text END "
					"FROM (SELECT s.tableoid, s.ctid, %s AS mask, (s.*)::%s AS r "
					"FROM %s AS s WHERE %s OFFSET 0) AS c "
					"WHERE c.mask OPERATOR(pg_catalog.<>) 0",
					(int64) keep_row_mask, MB_TRACKING_COLUMN, mask.data,
					mb_qualified_relname(pipeline->source),
					mb_qualified_relname(pipeline->source),
					mb_window_predicate(pipeline->id, "s"));
}

/* Write quarantined rows, the arrays built in a context reset after each piece */
static void
mb_quarantine_flush(const MbPipeline *pipeline, const MbWindow *window,
					Datum names, int n, Datum *masks, Datum *rows,
					MemoryContext chunk_context)
{
	MemoryContext old;

	if (n == 0)
		return;
	old = MemoryContextSwitchTo(chunk_context);
	mb_quarantine_insert(pipeline->id, window->batch_id, names, n, masks, rows);
	MemoryContextSwitchTo(old);
	MemoryContextReset(chunk_context);
}

/*
 * The check query runs as the owner, with the settings it was stored under,
 * and reads the window through the tracking column's bitmap scans, as the
 * engine's counts do (window.c): its cost follows the batch, not the table.
 */
static void
mb_check_user_code_begin(MbUserCode *uc, const MbPipeline *pipeline)
{
	mb_user_code_begin(uc, pipeline->owner, NULL);
	mb_user_code_set(uc, "jit", "off");
	mb_user_code_set(uc, "enable_seqscan", "off");
	mb_user_code_set(uc, "enable_indexscan", "off");
	mb_pin_constant_settings(uc);
}

static void
mb_expectations_error_context(void *arg)
{
	const MbPipeline *pipeline = arg;

	errcontext("microbatch expectations of pipeline \"%s\"", pipeline->name);
}

/*
 * Check the expectations of a pipeline on every row of its active window
 * (of rows rows), before the transforms: count the violations of each,
 * quarantine the rows that violate a drop expectation and take them out of
 * the window, record the results, and fail the batch if a fail expectation
 * is violated.  Returns the rows taken out.
 */
int64
mb_expectations_check(const MbPipeline *pipeline, List *expectations,
					  MbWindow *window, int64 rows)
{
	MemoryContext batch_context = CurrentMemoryContext;
	int			n = list_length(expectations);
	MbExpectation **by_bit;
	int64	   *failed;
	StringInfoData *samples;
	int		   *nsamples;
	uint64		drop_mask = 0;
	uint64		fail_mask = 0;
	Datum	   *names;
	Datum		names_array;
	Datum	   *quarantine_masks;
	Datum	   *quarantine_rows;
	MbRowId    *dropped = NULL;
	int64		ndropped = 0;
	int64		dropped_size = 0;
	MemoryContext chunk_context;
	SPIPlanPtr	plan;
	Portal		portal;
	MbUserCode	uc;
	ListCell   *lc;
	int			i;
	ErrorContextCallback callback;
	int64		violating = 0;
	TimestampTz started = mb_step_start();

	if (n == 0)
		return 0;
	if (n > MB_MAX_EXPECTATIONS)
		elog(ERROR, "pipeline \"%s\" has more than %d expectations",
			 pipeline->name, MB_MAX_EXPECTATIONS);

	callback.callback = mb_expectations_error_context;
	callback.arg = (void *) pipeline;
	callback.previous = error_context_stack;
	error_context_stack = &callback;

	by_bit = palloc(sizeof(MbExpectation *) * n);
	failed = palloc0(sizeof(int64) * n);
	samples = palloc(sizeof(StringInfoData) * n);
	nsamples = palloc0(sizeof(int) * n);
	names = palloc(sizeof(Datum) * n);
	i = 0;
	foreach(lc, expectations)
	{
		MbExpectation *expectation = lfirst(lc);

		by_bit[i] = expectation;
		names[i] = DirectFunctionCall1(namein, CStringGetDatum(expectation->name));
		initStringInfo(&samples[i]);
		if (expectation->action == MB_VIOLATION_DROP)
			drop_mask |= UINT64CONST(1) << i;
		else if (expectation->action == MB_VIOLATION_FAIL)
			fail_mask |= UINT64CONST(1) << i;
		i++;
	}
	names_array = PointerGetDatum(construct_array(names, n, NAMEOID, NAMEDATALEN,
												  false, TYPALIGN_CHAR));
	quarantine_masks = palloc(sizeof(Datum) * MB_CHECK_FETCH_ROWS);
	quarantine_rows = palloc(sizeof(Datum) * MB_CHECK_FETCH_ROWS);
	chunk_context = AllocSetContextCreate(CurrentMemoryContext,
										  "microbatch quarantine",
										  ALLOCSET_DEFAULT_SIZES);

	mb_check_user_code_begin(&uc, pipeline);
	plan = mb_batch_plan(mb_batch_plan_slot(MB_PLAN_EXPECTATIONS, pipeline->id),
						 mb_expectations_sql(pipeline, expectations,
											 drop_mask | fail_mask),
						 0, NULL, rows, window->source_pages);
	portal = SPI_cursor_open(NULL, plan, NULL, NULL, false);
	mb_user_code_end(&uc);

	for (;;)
	{
		SPITupleTable *fetched;
		uint64		nfetched;
		int			nquarantined = 0;
		Size		quarantined_bytes = 0;

		CHECK_FOR_INTERRUPTS();
		/* the predicates run as the owner, fetch after fetch */
		mb_check_user_code_begin(&uc, pipeline);
		SPI_cursor_fetch(portal, true, MB_CHECK_FETCH_ROWS);
		mb_user_code_end(&uc);
		fetched = SPI_tuptable;
		nfetched = SPI_processed;
		if (nfetched == 0)
		{
			SPI_freetuptable(fetched);
			break;
		}
		violating += (int64) nfetched;

		for (uint64 row = 0; row < nfetched; row++)
		{
			HeapTuple	tuple = fetched->vals[row];
			bool		isnull;
			uint64		mask = (uint64) DatumGetInt64(SPI_getbinval(tuple, fetched->tupdesc,
																	3, &isnull));
			Datum		json = SPI_getbinval(tuple, fetched->tupdesc, 4, &isnull);

			for (i = 0; i < n; i++)
			{
				uint64		bit = UINT64CONST(1) << i;

				if ((mask & bit) == 0)
					continue;
				failed[i]++;
				if ((fail_mask & bit) != 0 && nsamples[i] < MB_SAMPLE_ROWS)
				{
					MemoryContext old = MemoryContextSwitchTo(batch_context);
					Jsonb	   *jsonb = DatumGetJsonbP(json);

					appendStringInfo(&samples[i], "%s%s", nsamples[i] > 0 ? "\n" : "",
									 JsonbToCString(NULL, &jsonb->root, VARSIZE(jsonb)));
					nsamples[i]++;
					MemoryContextSwitchTo(old);
				}
			}
			if ((mask & drop_mask) == 0)
				continue;
			if (ndropped == dropped_size)
			{
				dropped_size = Max(dropped_size * 2, MB_CHECK_FETCH_ROWS);
				dropped = dropped == NULL ?
					MemoryContextAllocHuge(batch_context, sizeof(MbRowId) * dropped_size) :
					repalloc_huge(dropped, sizeof(MbRowId) * dropped_size);
			}
			dropped[ndropped].table = DatumGetObjectId(SPI_getbinval(tuple, fetched->tupdesc,
																	 1, &isnull));
			dropped[ndropped].tid = *(ItemPointer) DatumGetPointer(SPI_getbinval(tuple, fetched->tupdesc,
																				 2, &isnull));
			ndropped++;
			quarantine_masks[nquarantined] = Int64GetDatum((int64) mask);
			quarantine_rows[nquarantined] = json;
			nquarantined++;
			quarantined_bytes += VARSIZE_ANY(DatumGetPointer(json));
			/* as the catalog's owner, in bounded pieces */
			if (quarantined_bytes >= MB_QUARANTINE_CHUNK_BYTES)
			{
				mb_quarantine_flush(pipeline, window, names_array, nquarantined,
									quarantine_masks, quarantine_rows, chunk_context);
				nquarantined = 0;
				quarantined_bytes = 0;
			}
		}
		mb_quarantine_flush(pipeline, window, names_array, nquarantined,
							quarantine_masks, quarantine_rows, chunk_context);
		SPI_freetuptable(fetched);
	}
	SPI_cursor_close(portal);
	MemoryContextDelete(chunk_context);
	mb_step_record("expectations", NULL, NULL, violating, started);

	for (i = 0; i < n; i++)
	{
		if (by_bit[i]->action != MB_VIOLATION_FAIL || failed[i] == 0 ||
			mb_previewing)
			continue;
		ereport(ERROR,
				(errcode(ERRCODE_CHECK_VIOLATION),
				 errmsg("expectation \"%s\" of pipeline \"%s\" failed for " INT64_FORMAT " of " INT64_FORMAT " rows",
						by_bit[i]->name, pipeline->name, failed[i], Max(rows, failed[i])),
				 errdetail("Expectation: %s\nFirst failing rows:\n%s",
						   by_bit[i]->predicate, samples[i].data),
				 errhint("Correct the rows in the source, or give the expectation the action warn or drop.")));
	}

	if (ndropped > 1)
		qsort(dropped, ndropped, sizeof(MbRowId), mb_row_id_cmp);
	window->dropped = dropped;
	window->ndropped = ndropped;

	for (i = 0; i < n; i++)
		mb_check_result_insert(pipeline->id, window->batch_id, "expectation",
							   by_bit[i]->name,
							   mb_violation_action_name(by_bit[i]->action),
							   Max(rows - failed[i], 0), failed[i], (Datum) 0);

	error_context_stack = callback.previous;
	return ndropped;
}

/* Rows of a query's result as a JSON array of objects, values as text */
static char *
mb_rows_json(SPITupleTable *table, uint64 nrows)
{
	StringInfoData json;

	initStringInfo(&json);
	appendStringInfoChar(&json, '[');
	for (uint64 row = 0; row < nrows; row++)
	{
		appendStringInfoString(&json, row > 0 ? ", {" : "{");
		for (int column = 0; column < table->tupdesc->natts; column++)
		{
			char	   *value = SPI_getvalue(table->vals[row], table->tupdesc,
											 column + 1);

			if (column > 0)
				appendStringInfoString(&json, ", ");
			escape_json(&json, NameStr(TupleDescAttr(table->tupdesc, column)->attname));
			appendStringInfoString(&json, ": ");
			if (value == NULL)
				appendStringInfoString(&json, "null");
			else
				escape_json(&json, value);
		}
		appendStringInfoChar(&json, '}');
	}
	appendStringInfoChar(&json, ']');
	return json.data;
}

typedef struct MbAuditContext
{
	const MbPipeline *pipeline;
	const MbAudit *audit;
	int64		batch_id;
} MbAuditContext;

static void
mb_audit_error_context(void *arg)
{
	MbAuditContext *context = arg;

	errcontext("microbatch audit \"%s\" (%s) of pipeline \"%s\", batch " INT64_FORMAT,
			   context->audit->name, context->audit->layer,
			   context->pipeline->name, context->batch_id);
}

/*
 * Run the audits of one layer, in the batch's transaction, after that
 * layer's transforms: each as the owner under its own search_path, counting
 * the rows it returns and keeping the first few.  A violated fail audit
 * fails the batch.
 */
void
mb_audits_run(const MbPipeline *pipeline, List *audits, const char *layer,
			  const MbWindow *window, int64 rows)
{
	ListCell   *lc;
	MbAuditContext context;
	ErrorContextCallback callback;

	context.pipeline = pipeline;
	context.batch_id = window->batch_id;
	callback.callback = mb_audit_error_context;
	callback.arg = &context;
	callback.previous = error_context_stack;
	error_context_stack = &callback;

	foreach(lc, audits)
	{
		MbAudit    *audit = lfirst(lc);
		MbUserCode	uc;
		SPIPlanPtr	plan;
		Portal		portal;
		int64		violations;
		char	   *sample = NULL;
		TimestampTz started = mb_step_start();

		if (strcmp(audit->layer, layer) != 0)
			continue;
		CHECK_FOR_INTERRUPTS();
		context.audit = audit;

		mb_user_code_begin(&uc, pipeline->owner, audit->search_path);
		mb_user_code_set(&uc, "jit", "off");
		plan = mb_batch_plan(mb_batch_plan_slot(MB_PLAN_AUDIT, audit->id),
							 audit->query, 0, NULL, rows, window->source_pages);
		/* not read-only: the audit sees what the transforms wrote */
		portal = SPI_cursor_open(NULL, plan, NULL, NULL, false);
		SPI_cursor_fetch(portal, true, MB_SAMPLE_ROWS);
		violations = (int64) SPI_processed;
		if (violations > 0)
			sample = mb_rows_json(SPI_tuptable, SPI_processed);
		SPI_freetuptable(SPI_tuptable);
		SPI_cursor_move(portal, true, FETCH_ALL);
		violations += (int64) SPI_processed;
		SPI_cursor_close(portal);
		mb_user_code_end(&uc);

		mb_step_record("audit", audit->name, audit->layer, violations, started);
		if (violations > 0 && audit->fail && !mb_previewing)
			ereport(ERROR,
					(errcode(ERRCODE_CHECK_VIOLATION),
					 errmsg_plural("audit \"%s\" of pipeline \"%s\" failed: it returned " INT64_FORMAT " row",
								   "audit \"%s\" of pipeline \"%s\" failed: it returned " INT64_FORMAT " rows",
								   (unsigned long) violations,
								   audit->name, pipeline->name, violations),
					 errdetail("First rows: %s", sample),
					 errhint("Fix the transforms, or give the audit the action warn.")));
		mb_check_result_insert(pipeline->id, window->batch_id, "audit", audit->name,
							   audit->fail ? "fail" : "warn", -1, violations,
							   sample ? DirectFunctionCall1(jsonb_in, CStringGetDatum(sample)) :
							   (Datum) 0);
	}

	error_context_stack = callback.previous;
}
