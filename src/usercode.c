/*-------------------------------------------------------------------------
 *
 * usercode.c
 *	  Where user code runs, and with what rights.
 *
 * Everything a pipeline's owner wrote (transforms, the batch view's reads of
 * the source with its row security policies, the functions and triggers
 * these call), and every change microbatch makes to a table on behalf of
 * the role that owns it, runs between mb_user_code_begin() and
 * mb_user_code_end(), as PostgreSQL runs index expressions, REFRESH
 * MATERIALIZED VIEW and maintenance commands:
 *
 *	- as the given role, inside a security-restricted operation: no SET ROLE,
 *	  no temporary objects, no deferred trigger events queued for later;
 *	- with search_path pinned (pg_temp last, so that no temporary object
 *	  takes a name ahead of the role's own);
 *	- in a GUC nest level of its own that is discarded, not committed, at the
 *	  end: a setting changed inside, even with set_config(..., false) or a
 *	  session-level SET in a function, ends with the user code.  Without
 *	  this, a SET search_path would outlive the transform and redirect the
 *	  engine's own queries, run as the catalog's owner.
 *
 * An error unwinds all three with the (sub)transaction that catches it.
 *
 * mb_check_role_may_run() says whether a role may still have its code run:
 * a pipeline does not outlive its owner's right to log in.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_authid.h"
#include "commands/dbcommands.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "microbatch.h"

/*
 * Start running code as role.  search_path NULL means pg_catalog alone, for
 * the statements microbatch itself issues as a table's owner.
 */
void
mb_user_code_begin(MbUserCode *uc, Oid role, const char *search_path)
{
	GetUserIdAndSecContext(&uc->saved_user, &uc->saved_sec_context);
	SetUserIdAndSecContext(role, uc->saved_sec_context |
						   SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	uc->guc_nest_level = NewGUCNestLevel();
	mb_citus_user_ddl();
	(void) set_config_option("search_path",
							 psprintf("%s, pg_temp",
									  search_path ? search_path : "pg_catalog"),
							 PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
}

/*
 * Set a setting for the rest of the user code only: it goes with the nest
 * level.
 */
void
mb_user_code_set(MbUserCode *uc, const char *name, const char *value)
{
	(void) set_config_option(name, value, PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
}

/* Discard every setting changed since mb_user_code_begin(), and switch back */
void
mb_user_code_end(MbUserCode *uc)
{
	AtEOXact_GUC(false, uc->guc_nest_level);
	SetUserIdAndSecContext(uc->saved_user, uc->saved_sec_context);
}

/*
 * A pipeline runs as its owner, so only while the owner could run the same
 * statements itself: the role exists, may log in, its password has not
 * expired and it may connect to this database.
 */
void
mb_check_role_may_run(Oid role, const char *pipeline_name)
{
	HeapTuple	tuple = SearchSysCache1(AUTHOID, ObjectIdGetDatum(role));
	Form_pg_authid form;
	char	   *rolname;
	bool		isnull;
	Datum		valid_until;

	if (!HeapTupleIsValid(tuple))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("owner of pipeline \"%s\" no longer exists", pipeline_name),
				 errhint("A superuser can give the pipeline to another role with microbatch.alter_pipeline_owner(), or drop it.")));
	form = (Form_pg_authid) GETSTRUCT(tuple);
	rolname = pstrdup(NameStr(form->rolname));

	if (!form->rolcanlogin)
	{
		ReleaseSysCache(tuple);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
				 errmsg("owner \"%s\" of pipeline \"%s\" is not permitted to log in",
						rolname, pipeline_name),
				 errdetail("A pipeline runs as its owner, which must have the LOGIN attribute."),
				 errhint("Grant LOGIN to the role, or give the pipeline to another role with microbatch.alter_pipeline_owner().")));
	}

	valid_until = SysCacheGetAttr(AUTHOID, tuple, Anum_pg_authid_rolvaliduntil,
								  &isnull);
	ReleaseSysCache(tuple);
	if (!isnull && DatumGetTimestampTz(valid_until) < GetCurrentTimestamp())
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
				 errmsg("owner \"%s\" of pipeline \"%s\" has expired",
						rolname, pipeline_name),
				 errdetail("The role's VALID UNTIL time has passed."),
				 errhint("Extend it with ALTER ROLE ... VALID UNTIL, or give the pipeline to another role with microbatch.alter_pipeline_owner().")));

	if (pg_database_aclcheck(MyDatabaseId, role, ACL_CONNECT) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("owner \"%s\" of pipeline \"%s\" may not connect to database \"%s\"",
						rolname, pipeline_name, get_database_name(MyDatabaseId)),
				 errhint("Grant CONNECT on the database to the role, or give the pipeline to another role with microbatch.alter_pipeline_owner().")));
}
