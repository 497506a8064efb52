/*-------------------------------------------------------------------------
 *
 * source.c
 *	  Source tables and the batch views over them.
 *
 * A source table gets one tracking column, microbatch_xid, whose default is
 * the id of the inserting top-level transaction, and a B-tree index on it.
 * Several pipelines on one source share them.  Rows that already exist when
 * the column is added get the id of the creating transaction as a constant
 * default, which costs no table rewrite and makes them part of each
 * pipeline's first batch.
 *
 * Each pipeline has a view microbatch.<pipeline>_batch with the source's
 * columns, restricted to the active batch window (see window.c).  It is an
 * ordinary view, so transforms join, aggregate and use indexes on it as on
 * any relation, and nothing in the catalog changes from batch to batch.  It
 * belongs to the pipeline's owner, so it reads the source with the owner's
 * rights, and its dependency on the source keeps the source from being
 * dropped or altered under the pipeline unnoticed.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/relation.h"
#include "access/table.h"
#include "access/transam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "microbatch.h"

static void
mb_spi_exec(const char *sql, int expected)
{
	int			rc = SPI_execute(sql, false, 0);

	if (rc != expected)
		elog(ERROR, "unexpected result %s for \"%s\"",
			 SPI_result_code_string(rc), sql);
}

static const char *
mb_qualified_relname(Oid relid)
{
	return quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)),
									  get_rel_name(relid));
}

/*
 * A pipeline can read any permanent table or partitioned table that the
 * caller may SELECT from.
 */
void
mb_source_check_usable(Oid source, Oid caller)
{
	char		relkind = get_rel_relkind(source);
	AclResult	acl;

	if (relkind == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", source)));

	if (relkind != RELKIND_RELATION && relkind != RELKIND_PARTITIONED_TABLE)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not a table", get_rel_name(source)),
				 errdetail("The source of a pipeline must be a table or a partitioned table.")));
	if (get_rel_persistence(source) == RELPERSISTENCE_TEMP)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("source table \"%s\" is a temporary table", get_rel_name(source)),
				 errdetail("Batches can run in other sessions, which cannot see temporary tables.")));

	acl = pg_class_aclcheck(source, caller, ACL_SELECT);
	if (acl != ACLCHECK_OK)
		aclcheck_error(acl, OBJECT_TABLE, get_rel_name(source));
}

static bool
mb_tracking_index_exists(Oid source, AttrNumber attnum)
{
	Datum		values[2];
	Oid			types[2] = {OIDOID, INT2OID};
	int			rc;

	values[0] = ObjectIdGetDatum(source);
	values[1] = Int16GetDatum(attnum);
	rc = SPI_execute_with_args("SELECT 1 FROM pg_catalog.pg_index i "
							   "JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid "
							   "JOIN pg_catalog.pg_am a ON a.oid = c.relam "
							   "WHERE i.indrelid = $1 AND i.indkey[0] = $2 "
							   "AND a.amname = 'btree' AND i.indpred IS NULL",
							   2, types, values, NULL, false, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not look up indexes of relation %u", source);
	return SPI_processed > 0;
}

static bool
mb_wakeup_trigger_exists(Oid source)
{
	Datum		values[2];
	Oid			types[2] = {OIDOID, TEXTOID};

	values[0] = ObjectIdGetDatum(source);
	values[1] = CStringGetTextDatum(MB_WAKEUP_TRIGGER);
	if (SPI_execute_with_args("SELECT 1 FROM pg_catalog.pg_trigger "
							  "WHERE tgrelid = $1 AND tgname = $2",
							  2, types, values, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not look up triggers of relation %u", source);
	return SPI_processed > 0;
}

static void
mb_check_source_owner(Oid source, Oid caller)
{
	if (!pg_class_ownercheck(source, caller))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("must be owner of table %s", get_rel_name(source)),
				 errdetail("The first pipeline on a table adds a column \"%s\", an index on it and a trigger to the table.",
						   MB_TRACKING_COLUMN),
				 errhint("Ask the table's owner to create the first pipeline on it.")));
}

/*
 * Make sure the source has the tracking column, its index and the trigger
 * that wakes continuous pipelines, adding what is missing as the caller, who
 * must then own the table.
 */
void
mb_source_prepare(Oid source, Oid caller)
{
	AttrNumber	attnum = get_attnum(source, MB_TRACKING_COLUMN);
	const char *relname = mb_qualified_relname(source);
	bool		has_index;
	bool		has_trigger = mb_wakeup_trigger_exists(source);
	Oid			saved_user;
	int			saved_sec_context;

	if (attnum != InvalidAttrNumber &&
		get_atttype(source, attnum) != XID8OID)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_COLUMN),
				 errmsg("column \"%s\" of table %s is not a microbatch tracking column",
						MB_TRACKING_COLUMN, get_rel_name(source)),
				 errdetail("A tracking column has type xid8."),
				 errhint("Rename or drop the column; microbatch needs the name.")));

	has_index = attnum != InvalidAttrNumber &&
		mb_tracking_index_exists(source, attnum);
	if (has_index && has_trigger)
		return;

	mb_check_source_owner(source, caller);

	mb_run_as(caller, &saved_user, &saved_sec_context);
	if (attnum == InvalidAttrNumber)
	{
		FullTransactionId xid = GetTopFullTransactionId();

		mb_spi_exec(psprintf("ALTER TABLE %s ADD COLUMN %s pg_catalog.xid8 "
							 "NOT NULL DEFAULT '" UINT64_FORMAT "'",
							 relname, MB_TRACKING_COLUMN,
							 U64FromFullTransactionId(xid)),
					SPI_OK_UTILITY);
		mb_spi_exec(psprintf("ALTER TABLE %s ALTER COLUMN %s "
							 "SET DEFAULT pg_catalog.pg_current_xact_id()",
							 relname, MB_TRACKING_COLUMN),
					SPI_OK_UTILITY);
		mb_spi_exec(psprintf("COMMENT ON COLUMN %s.%s IS "
							 "'id of the inserting transaction, set by microbatch: "
							 "leave it to its default'",
							 relname, MB_TRACKING_COLUMN),
					SPI_OK_UTILITY);
	}
	if (!has_index)
		mb_spi_exec(psprintf("CREATE INDEX ON %s (%s)", relname, MB_TRACKING_COLUMN),
					SPI_OK_UTILITY);
	if (!has_trigger)
	{
		/* ALWAYS: logical replication apply workers insert rows too */
		mb_spi_exec(psprintf("CREATE TRIGGER %s AFTER INSERT ON %s "
							 "FOR EACH STATEMENT EXECUTE FUNCTION microbatch.source_changed()",
							 MB_WAKEUP_TRIGGER, relname),
					SPI_OK_UTILITY);
		mb_spi_exec(psprintf("ALTER TABLE %s ENABLE ALWAYS TRIGGER %s",
							 relname, MB_WAKEUP_TRIGGER),
					SPI_OK_UTILITY);
	}
	mb_run_as_end(saved_user, saved_sec_context);
}

/* The WHERE clause that restricts a source to the active batch window */
char *
mb_window_predicate(int32 pipeline_id, const char *alias)
{
	return psprintf("(%1$s.%2$s >= microbatch.batch_lower_xid(%3$d) "
					"AND %1$s.%2$s < microbatch.batch_upper_xid(%3$d) "
					"OR %1$s.%2$s = ANY (microbatch.batch_lower_running(%3$d))) "
					"AND microbatch.batch_contains(%3$d, %1$s.%2$s)",
					alias, MB_TRACKING_COLUMN, pipeline_id);
}

static char *
mb_batch_view_name(const char *pipeline_name)
{
	return psprintf("%s%s", pipeline_name, MB_BATCH_VIEW_SUFFIX);
}

/*
 * Create the batch view of a new pipeline, owned by the pipeline's owner.
 * Runs as the catalog owner, who may create objects in our schema.
 */
Oid
mb_batch_view_create(const MbPipeline *pipeline)
{
	char	   *view_name = mb_batch_view_name(pipeline->name);
	const char *qualified_view = quote_qualified_identifier(MB_SCHEMA, view_name);
	Relation	source = table_open(pipeline->source, AccessShareLock);
	TupleDesc	desc = RelationGetDescr(source);
	StringInfoData sql;
	bool		first = true;

	initStringInfo(&sql);
	appendStringInfo(&sql, "CREATE VIEW %s AS SELECT ", qualified_view);
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute attr = TupleDescAttr(desc, i);

		if (attr->attisdropped ||
			strcmp(NameStr(attr->attname), MB_TRACKING_COLUMN) == 0)
			continue;
		appendStringInfo(&sql, "%ss.%s", first ? "" : ", ",
						 quote_identifier(NameStr(attr->attname)));
		first = false;
	}
	appendStringInfo(&sql, " FROM %s AS s WHERE %s",
					 mb_qualified_relname(pipeline->source),
					 mb_window_predicate(pipeline->id, "s"));
	table_close(source, AccessShareLock);

	mb_spi_exec(sql.data, SPI_OK_UTILITY);
	mb_spi_exec(psprintf("ALTER VIEW %s OWNER TO %s", qualified_view,
						 quote_identifier(GetUserNameFromId(pipeline->owner, false))),
				SPI_OK_UTILITY);
	mb_spi_exec(psprintf("COMMENT ON VIEW %s IS %s", qualified_view,
						 quote_literal_cstr(psprintf("rows of the batch of pipeline %s being processed; empty outside its transforms",
													 pipeline->name))),
				SPI_OK_UTILITY);

	return get_relname_relid(view_name, get_namespace_oid(MB_SCHEMA, false));
}

void
mb_batch_view_drop(const MbPipeline *pipeline)
{
	char	   *view_name = get_rel_name(pipeline->batch_view);

	/* CASCADE on the source may have dropped it already */
	if (view_name == NULL)
		return;
	mb_spi_exec(psprintf("DROP VIEW %s",
						 quote_qualified_identifier(MB_SCHEMA, view_name)),
				SPI_OK_UTILITY);
}

/*
 * When the last pipeline on a source goes, so does the trigger, which
 * depends on the extension.  The column and its index stay: loaders may
 * name the column, and they do not depend on the extension.
 */
void
mb_source_release(const MbPipeline *pipeline)
{
	if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(pipeline->source)) ||
		mb_source_other_pipelines(pipeline->source, pipeline->id) > 0 ||
		!mb_wakeup_trigger_exists(pipeline->source))
		return;
	mb_spi_exec(psprintf("DROP TRIGGER %s ON %s", MB_WAKEUP_TRIGGER,
						 mb_qualified_relname(pipeline->source)),
				SPI_OK_UTILITY);
}

void
mb_pipeline_check_source_exists(const MbPipeline *pipeline)
{
	if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(pipeline->source)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("source table of pipeline \"%s\" no longer exists",
						pipeline->name),
				 errhint("Drop the pipeline with microbatch.drop_pipeline().")));
}

/*
 * Before a batch: the source and the batch view still exist, and the view
 * still has the source's columns, or the transforms would silently miss
 * columns added to the source since.
 */
void
mb_pipeline_check_relations(const MbPipeline *pipeline)
{
	Relation	source;
	Relation	view;
	TupleDesc	source_desc;
	TupleDesc	view_desc;
	int			view_column = 0;

	mb_pipeline_check_source_exists(pipeline);
	if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(pipeline->batch_view)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("batch view of pipeline \"%s\" no longer exists",
						pipeline->name),
				 errhint("Run microbatch.refresh_pipeline() to create it again.")));

	source = table_open(pipeline->source, AccessShareLock);
	view = relation_open(pipeline->batch_view, AccessShareLock);
	source_desc = RelationGetDescr(source);
	view_desc = RelationGetDescr(view);

	for (int i = 0; i < source_desc->natts; i++)
	{
		Form_pg_attribute attr = TupleDescAttr(source_desc, i);
		const char *name = NameStr(attr->attname);

		if (attr->attisdropped || strcmp(name, MB_TRACKING_COLUMN) == 0)
			continue;
		if (view_column >= view_desc->natts)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("source table %s of pipeline \"%s\" has a new column \"%s\"",
							RelationGetRelationName(source), pipeline->name, name),
					 errdetail("The batch view %s.%s does not have it yet.",
							   MB_SCHEMA, RelationGetRelationName(view)),
					 errhint("Run microbatch.refresh_pipeline('%s') to rebuild the batch view, then check the transforms.",
							 pipeline->name)));
		if (strcmp(name, NameStr(TupleDescAttr(view_desc, view_column)->attname)) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("column \"%s\" of source table %s of pipeline \"%s\" was renamed to \"%s\"",
							NameStr(TupleDescAttr(view_desc, view_column)->attname),
							RelationGetRelationName(source), pipeline->name, name),
					 errhint("Run microbatch.refresh_pipeline('%s') to rebuild the batch view, then check the transforms.",
							 pipeline->name)));
		view_column++;
	}

	relation_close(view, AccessShareLock);
	table_close(source, AccessShareLock);
}
