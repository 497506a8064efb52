/*-------------------------------------------------------------------------
 *
 * batchview.c
 *	  The batch view of each pipeline, and the checks before a batch that
 *	  the relations it reads are still what they must be.
 *
 * Each pipeline has a view microbatch.<pipeline>_batch with the source's
 * columns, restricted to the active batch window (see window.c) less the
 * rows its drop expectations took out (quality.c).  It is an
 * ordinary view, so transforms join, aggregate and use indexes on it as on
 * any relation, and nothing in the catalog changes from batch to batch.  It
 * belongs to the pipeline's owner, so it reads the source with the owner's
 * rights, and its dependency on the source keeps the source from being
 * dropped or altered under the pipeline unnoticed.  It is found and dropped
 * by OID, never by name, which its owner could give another view.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/relation.h"
#include "access/table.h"
#include "catalog/dependency.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "microbatch.h"

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
	Oid			view;

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
	appendStringInfo(&sql, " FROM %s AS s WHERE %s "
					 "AND microbatch.batch_row_kept(%d, s.tableoid, s.ctid)",
					 mb_qualified_relname(pipeline->source),
					 mb_window_predicate(pipeline->id, "s"), pipeline->id);
	table_close(source, NoLock);

	if (get_relname_relid(view_name, get_namespace_oid(MB_SCHEMA, false)) != InvalidOid)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_TABLE),
				 errmsg("relation \"%s.%s\" already exists", MB_SCHEMA, view_name),
				 errhint("A pipeline's batch view is named after the pipeline; choose another name.")));

	mb_ddl_own_begin();
	PG_TRY();
	{
		if (SPI_execute(sql.data, false, 0) != SPI_OK_UTILITY)
			elog(ERROR, "could not create the batch view of pipeline \"%s\"",
				 pipeline->name);
		if (SPI_execute(psprintf("ALTER VIEW %s OWNER TO %s", qualified_view,
								 quote_identifier(GetUserNameFromId(pipeline->owner, false))),
						false, 0) != SPI_OK_UTILITY ||
			SPI_execute(psprintf("COMMENT ON VIEW %s IS %s", qualified_view,
								 quote_literal_cstr(psprintf("rows of the batch of pipeline %s being processed; empty outside its transforms",
															 pipeline->name))),
						false, 0) != SPI_OK_UTILITY)
			elog(ERROR, "could not set up the batch view of pipeline \"%s\"",
				 pipeline->name);
	}
	PG_FINALLY();
	{
		mb_ddl_own_end();
	}
	PG_END_TRY();

	view = get_relname_relid(view_name, get_namespace_oid(MB_SCHEMA, false));
	LockRelationOid(view, AccessShareLock);
	return view;
}

/*
 * Whether an OID is still the batch view of this pipeline: a view in our
 * schema with the pipeline's view name.  OIDs are reused, and names can be
 * changed by the view's owner where the event trigger does not run.
 */
static bool
mb_is_batch_view(const MbPipeline *pipeline, Oid relid)
{
	char	   *name = get_rel_name(relid);

	return name != NULL &&
		get_rel_relkind(relid) == RELKIND_VIEW &&
		get_rel_namespace(relid) == get_namespace_oid(MB_SCHEMA, false) &&
		strcmp(name, mb_batch_view_name(pipeline->name)) == 0;
}

/* Drop the batch view by OID; it may be gone already (CASCADE, DROP OWNED) */
void
mb_batch_view_drop(const MbPipeline *pipeline)
{
	ObjectAddress view;

	LockRelationOid(pipeline->batch_view, AccessExclusiveLock);
	if (!mb_is_batch_view(pipeline, pipeline->batch_view))
		return;
	ObjectAddressSet(view, RelationRelationId, pipeline->batch_view);
	mb_ddl_own_begin();
	PG_TRY();
	{
		performDeletion(&view, DROP_RESTRICT, 0);
	}
	PG_FINALLY();
	{
		mb_ddl_own_end();
	}
	PG_END_TRY();
}

static void mb_batch_view_gone(const MbPipeline *pipeline) pg_attribute_noreturn();

static void
mb_batch_view_gone(const MbPipeline *pipeline)
{
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_TABLE),
			 errmsg("batch view of pipeline \"%s\" no longer exists",
					pipeline->name),
			 errhint("Run microbatch.refresh_pipeline(%s) to create it again.",
					 quote_literal_cstr(pipeline->name))));
}

/* Give the batch view to a new owner, by OID */
void
mb_batch_view_set_owner(const MbPipeline *pipeline, Oid owner)
{
	if (!mb_is_batch_view(pipeline, pipeline->batch_view))
		mb_batch_view_gone(pipeline);
	mb_ddl_own_begin();
	PG_TRY();
	{
		if (SPI_execute(psprintf("ALTER VIEW %s OWNER TO %s",
								 mb_qualified_relname(pipeline->batch_view),
								 quote_identifier(GetUserNameFromId(owner, false))),
						false, 0) != SPI_OK_UTILITY)
			elog(ERROR, "could not change the owner of the batch view of pipeline \"%s\"",
				 pipeline->name);
	}
	PG_FINALLY();
	{
		mb_ddl_own_end();
	}
	PG_END_TRY();
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
 * Lock a relation that may be dropped concurrently, until the end of the
 * transaction; false if it no longer exists.
 */
static bool
mb_lock_if_exists(Oid relid)
{
	if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(relid)))
		return false;
	LockRelationOid(relid, AccessShareLock);
	/* it may have been dropped while we waited */
	return SearchSysCacheExists1(RELOID, ObjectIdGetDatum(relid));
}

/*
 * Before a batch, a replay or a count: the source and the batch view still
 * exist, locked until the end of the transaction so that neither can be
 * dropped under the batch; the view is still the pipeline's, with the
 * owner's rights and the source's columns (or the transforms would
 * silently miss columns added to the source since); and the source is
 * still guarded.
 */
void
mb_pipeline_check_relations(const MbPipeline *pipeline)
{
	Relation	source;
	Relation	view;
	TupleDesc	source_desc;
	TupleDesc	view_desc;
	int			view_column = 0;
	Oid			view_owner;

	if (!mb_lock_if_exists(pipeline->source))
		mb_pipeline_check_source_exists(pipeline);
	if (!mb_lock_if_exists(pipeline->batch_view) ||
		!mb_is_batch_view(pipeline, pipeline->batch_view))
		mb_batch_view_gone(pipeline);

	source = table_open(pipeline->source, NoLock);
	view = relation_open(pipeline->batch_view, NoLock);
	source_desc = RelationGetDescr(source);
	view_desc = RelationGetDescr(view);
	view_owner = view->rd_rel->relowner;

	if (view_owner != pipeline->owner)
	{
		char	   *view_owner_name = GetUserNameFromId(view_owner, false);
		char	   *owner_name = GetUserNameFromId(pipeline->owner, true);

		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("batch view of pipeline \"%s\" is owned by role \"%s\", not by the pipeline's owner",
						pipeline->name, view_owner_name),
				 owner_name ?
				 errdetail("The pipeline is owned by role \"%s\"; REASSIGN OWNED, ALTER VIEW ... OWNER TO or a restore without owners changed the view's owner.",
						   owner_name) :
				 errdetail("The pipeline's owner no longer exists."),
				 errhint("Run microbatch.refresh_pipeline(%s) to give the view back to the pipeline's owner, or give both to role \"%s\" with microbatch.alter_pipeline_owner().",
						 quote_literal_cstr(pipeline->name), view_owner_name)));
	}

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
					 errhint("Run microbatch.refresh_pipeline(%s) to rebuild the batch view, then check the transforms.",
							 quote_literal_cstr(pipeline->name))));
		if (strcmp(name, NameStr(TupleDescAttr(view_desc, view_column)->attname)) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("column \"%s\" of source table %s of pipeline \"%s\" was renamed to \"%s\"",
							NameStr(TupleDescAttr(view_desc, view_column)->attname),
							RelationGetRelationName(source), pipeline->name, name),
					 errhint("Run microbatch.refresh_pipeline(%s) to rebuild the batch view, then check the transforms.",
							 quote_literal_cstr(pipeline->name))));
		view_column++;
	}

	relation_close(view, NoLock);
	table_close(source, NoLock);
	mb_source_check_guarded(pipeline);
}
