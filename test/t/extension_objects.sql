-- A canonical description of the objects of the extension microbatch in the
-- current database, used by test/t/024_upgrade.pl to check that a database
-- upgraded with ALTER EXTENSION ... UPDATE has exactly the objects of a fresh
-- install of the same version.
--
-- pg_dump does not show an extension's objects (it emits CREATE EXTENSION
-- only), so this reads the catalogs: every object that is a member of the
-- extension (pg_depend deptype 'e'), its parts (columns, defaults,
-- constraints, indexes, triggers, rules, policies, sequence parameters),
-- definitions, owners, privileges (also the extension's initial ones,
-- pg_init_privs) and comments, plus the configuration tables pg_dump dumps.
--
-- One row per fact, sorted; every row starts with the object it is about.
-- No OID is ever printed: objects are named (regclass, regprocedure,
-- pg_describe_object), roles are 'extension owner', 'PUBLIC' or their name,
-- and columns are numbered by their position among the columns that are not
-- dropped, since a column dropped by an upgrade leaves a hole in attnum and
-- ALTER TABLE ADD COLUMN appends.  The attribute option pg_attver, which the
-- server of this platform sets on every new column to a value that differs
-- from one table to the next, is left out.
WITH ext AS (
    SELECT e.oid, e.extowner
      FROM pg_catalog.pg_extension e
     WHERE e.extname = 'microbatch'
),
member AS (
    SELECT d.classid, d.objid, d.objsubid
      FROM pg_catalog.pg_depend d, ext
     WHERE d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
       AND d.refobjid = ext.oid
       AND d.deptype = 'e'
),
role AS (
    SELECT r.oid,
           CASE WHEN r.oid = (SELECT extowner FROM ext) THEN 'extension owner'
                ELSE r.rolname::text END AS name
      FROM pg_catalog.pg_roles r
    UNION ALL
    SELECT 0::oid, 'PUBLIC'
),
rel AS (
    SELECT c.*, c.oid AS reloid, c.oid::pg_catalog.regclass::text AS ident
      FROM pg_catalog.pg_class c
      JOIN member m ON m.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                   AND m.objid = c.oid AND m.objsubid = 0
),
col AS (
    SELECT a.*, r.ident, r.relkind,
           pg_catalog.row_number() OVER (PARTITION BY a.attrelid ORDER BY a.attnum) AS pos
      FROM pg_catalog.pg_attribute a
      JOIN rel r ON r.reloid = a.attrelid
     WHERE a.attnum > 0 AND NOT a.attisdropped
),
func AS (
    SELECT p.*, p.oid AS procoid,
           CASE p.prokind WHEN 'p' THEN 'procedure ' ELSE 'function ' END
               || p.oid::pg_catalog.regprocedure::text AS ident
      FROM pg_catalog.pg_proc p
      JOIN member m ON m.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass
                   AND m.objid = p.oid
),
typ AS (
    SELECT t.*, t.oid AS typoid, 'type ' || pg_catalog.format_type(t.oid, NULL) AS ident
      FROM pg_catalog.pg_type t
      JOIN member m ON m.classid = 'pg_catalog.pg_type'::pg_catalog.regclass
                   AND m.objid = t.oid
),
facts (ident, fact) AS (
    -- the extension itself
    SELECT 'extension microbatch',
           pg_catalog.format('version %s, relocatable %s, schema %s, owner %s, comment %L',
                  e.extversion, e.extrelocatable, e.extnamespace::pg_catalog.regnamespace,
                  (SELECT name FROM role WHERE oid = e.extowner),
                  pg_catalog.obj_description(e.oid, 'pg_extension'))
      FROM pg_catalog.pg_extension e, ext WHERE e.oid = ext.oid
    -- the configuration tables pg_dump dumps the rows of, and their filters
    UNION ALL
    SELECT 'extension microbatch',
           pg_catalog.format('configuration table %s, condition %L', c.tab::pg_catalog.regclass, c.cond)
      FROM pg_catalog.pg_extension e, ext,
           LATERAL ROWS FROM (pg_catalog.unnest(e.extconfig), pg_catalog.unnest(e.extcondition)) AS c(tab, cond)
     WHERE e.oid = ext.oid
    -- every member, whatever its kind
    UNION ALL
    SELECT 'member ' || pg_catalog.pg_describe_object(m.classid, m.objid, m.objsubid), 'is a member'
      FROM member m
    -- initial privileges, recorded at CREATE/ALTER EXTENSION time, of the
    -- members and of their columns
    UNION ALL
    SELECT 'initial privileges of ' || pg_catalog.pg_describe_object(i.classoid, i.objoid, i.objsubid),
           pg_catalog.format('type %s: %s', i.privtype,
                  (SELECT pg_catalog.string_agg(pg_catalog.format('%s=%s%s/%s', ge.name, a.privilege_type,
                                         CASE WHEN a.is_grantable THEN '*' ELSE '' END, gr.name),
                                  ', ' ORDER BY ge.name, a.privilege_type, gr.name)
                     FROM pg_catalog.aclexplode(i.initprivs) a
                     JOIN role ge ON ge.oid = a.grantee
                     JOIN role gr ON gr.oid = a.grantor))
      FROM pg_catalog.pg_init_privs i
      JOIN member m ON m.classid = i.classoid AND m.objid = i.objoid
    -- schemas
    UNION ALL
    SELECT 'schema ' || pg_catalog.quote_ident(n.nspname),
           pg_catalog.format('owner %s, comment %L', (SELECT name FROM role WHERE oid = n.nspowner),
                  pg_catalog.obj_description(n.oid, 'pg_namespace'))
      FROM pg_catalog.pg_namespace n
      JOIN member m ON m.classid = 'pg_catalog.pg_namespace'::pg_catalog.regclass AND m.objid = n.oid
    UNION ALL
    SELECT 'schema ' || pg_catalog.quote_ident(n.nspname),
           pg_catalog.format('grant %s%s to %s by %s', a.privilege_type,
                  CASE WHEN a.is_grantable THEN ' with grant option' ELSE '' END,
                  ge.name, gr.name)
      FROM pg_catalog.pg_namespace n
      JOIN member m ON m.classid = 'pg_catalog.pg_namespace'::pg_catalog.regclass AND m.objid = n.oid
      CROSS JOIN LATERAL pg_catalog.aclexplode(coalesce(n.nspacl, pg_catalog.acldefault('n', n.nspowner))) a
      JOIN role ge ON ge.oid = a.grantee
      JOIN role gr ON gr.oid = a.grantor
    -- relations
    UNION ALL
    SELECT 'relation ' || r.ident,
           pg_catalog.format('kind %s, persistence %s, access method %s, owner %s, options %s, '
                  'row security %s, forced %s, replica identity %s, partition key %s, comment %L',
                  r.relkind, r.relpersistence,
                  (SELECT am.amname FROM pg_catalog.pg_am am WHERE am.oid = r.relam),
                  (SELECT name FROM role WHERE oid = r.relowner),
                  (SELECT pg_catalog.array_agg(o ORDER BY o) FROM pg_catalog.unnest(r.reloptions) o),
                  r.relrowsecurity, r.relforcerowsecurity, r.relreplident,
                  CASE WHEN r.relkind = 'p' THEN pg_catalog.pg_get_partkeydef(r.reloid) END,
                  pg_catalog.obj_description(r.reloid, 'pg_class'))
      FROM rel r
    UNION ALL
    SELECT 'relation ' || r.ident,
           pg_catalog.format('grant %s%s to %s by %s', a.privilege_type,
                  CASE WHEN a.is_grantable THEN ' with grant option' ELSE '' END,
                  ge.name, gr.name)
      FROM rel r
      CROSS JOIN LATERAL pg_catalog.aclexplode(coalesce(r.relacl,
                 pg_catalog.acldefault(CASE WHEN r.relkind = 'S' THEN 's' ELSE 'r' END::"char", r.relowner))) a
      JOIN role ge ON ge.oid = a.grantee
      JOIN role gr ON gr.oid = a.grantor
    UNION ALL
    SELECT 'relation ' || r.ident, 'inherits from ' || i.inhparent::pg_catalog.regclass::text
      FROM rel r JOIN pg_catalog.pg_inherits i ON i.inhrelid = r.reloid
    -- columns, in order, dropped ones left out
    UNION ALL
    SELECT 'relation ' || c.ident,
           pg_catalog.format('column %s %I %s (typmod %s), not null %s, default %s, collation %s, '
                  'identity %L, generated %L, storage %s, compression %L, statistics %s, '
                  'options %s, comment %L',
                  pg_catalog.lpad(c.pos::text, 3, '0'), c.attname,
                  pg_catalog.format_type(c.atttypid, c.atttypmod), c.atttypmod, c.attnotnull,
                  (SELECT pg_catalog.pg_get_expr(d.adbin, d.adrelid) FROM pg_catalog.pg_attrdef d
                    WHERE d.adrelid = c.attrelid AND d.adnum = c.attnum),
                  (SELECT pg_catalog.format('%I.%I', cn.nspname, co.collname)
                     FROM pg_catalog.pg_collation co
                     JOIN pg_catalog.pg_namespace cn ON cn.oid = co.collnamespace
                    WHERE co.oid = c.attcollation),
                  c.attidentity, c.attgenerated, c.attstorage, c.attcompression, c.attstattarget,
                  (SELECT pg_catalog.array_agg(o ORDER BY o) FROM pg_catalog.unnest(c.attoptions) o
                    WHERE o NOT LIKE 'pg\_attver=%'),
                  pg_catalog.col_description(c.attrelid, c.attnum))
      FROM col c
    UNION ALL
    SELECT 'relation ' || c.ident,
           pg_catalog.format('column %I: grant %s%s to %s by %s', c.attname, a.privilege_type,
                  CASE WHEN a.is_grantable THEN ' with grant option' ELSE '' END,
                  ge.name, gr.name)
      FROM col c
      CROSS JOIN LATERAL pg_catalog.aclexplode(c.attacl) a
      JOIN role ge ON ge.oid = a.grantee
      JOIN role gr ON gr.oid = a.grantor
    -- constraints, by name
    UNION ALL
    SELECT 'relation ' || r.ident,
           pg_catalog.format('constraint %I: %s, validated %s, comment %L', co.conname,
                  pg_catalog.pg_get_constraintdef(co.oid), co.convalidated,
                  pg_catalog.obj_description(co.oid, 'pg_constraint'))
      FROM rel r JOIN pg_catalog.pg_constraint co ON co.conrelid = r.reloid
    -- indexes
    UNION ALL
    SELECT 'relation ' || r.ident,
           pg_catalog.format('index %s, clustered %s, replica identity %s, valid %s, comment %L',
                  pg_catalog.pg_get_indexdef(i.indexrelid), i.indisclustered, i.indisreplident,
                  i.indisvalid, pg_catalog.obj_description(i.indexrelid, 'pg_class'))
      FROM rel r JOIN pg_catalog.pg_index i ON i.indrelid = r.reloid
    -- triggers
    UNION ALL
    SELECT 'relation ' || r.ident,
           pg_catalog.format('trigger %s, enabled %s, comment %L',
                  pg_catalog.pg_get_triggerdef(t.oid), t.tgenabled,
                  pg_catalog.obj_description(t.oid, 'pg_trigger'))
      FROM rel r JOIN pg_catalog.pg_trigger t ON t.tgrelid = r.reloid
     WHERE NOT t.tgisinternal
    -- rules, other than those of views
    UNION ALL
    SELECT 'relation ' || r.ident,
           pg_catalog.format('rule %s, enabled %s', pg_catalog.pg_get_ruledef(ru.oid), ru.ev_enabled)
      FROM rel r JOIN pg_catalog.pg_rewrite ru ON ru.ev_class = r.reloid
     WHERE ru.rulename <> '_RETURN'
    -- row security policies
    UNION ALL
    SELECT 'relation ' || r.ident,
           pg_catalog.format('policy %I, command %s, permissive %s, roles %s, using %s, with check %s',
                  po.polname, po.polcmd, po.polpermissive,
                  (SELECT pg_catalog.string_agg(ro.name, ',' ORDER BY ro.name)
                     FROM pg_catalog.unnest(po.polroles) pr JOIN role ro ON ro.oid = pr),
                  pg_catalog.pg_get_expr(po.polqual, po.polrelid),
                  pg_catalog.pg_get_expr(po.polwithcheck, po.polrelid))
      FROM rel r JOIN pg_catalog.pg_policy po ON po.polrelid = r.reloid
    -- extended statistics
    UNION ALL
    SELECT 'relation ' || r.ident, 'statistics ' || pg_catalog.pg_get_statisticsobjdef(s.oid)
      FROM rel r JOIN pg_catalog.pg_statistic_ext s ON s.stxrelid = r.reloid
    -- view definitions (their options, security_barrier, are above)
    UNION ALL
    SELECT 'relation ' || r.ident, 'definition ' || pg_catalog.pg_get_viewdef(r.reloid)
      FROM rel r WHERE r.relkind IN ('v', 'm')
    -- sequences: parameters and the column that owns them
    UNION ALL
    SELECT 'relation ' || r.ident,
           pg_catalog.format('sequence as %s, start %s, increment %s, min %s, max %s, cache %s, cycle %s',
                  s.seqtypid::pg_catalog.regtype, s.seqstart, s.seqincrement, s.seqmin, s.seqmax,
                  s.seqcache, s.seqcycle)
      FROM rel r JOIN pg_catalog.pg_sequence s ON s.seqrelid = r.reloid
    UNION ALL
    SELECT 'relation ' || r.ident,
           pg_catalog.format('owned by %s.%I (dependency %s)', d.refobjid::pg_catalog.regclass,
                  a.attname, d.deptype)
      FROM rel r
      JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                                  AND d.objid = r.reloid
                                  AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
                                  AND d.refobjsubid > 0
      JOIN pg_catalog.pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
     WHERE r.relkind = 'S'
    -- functions and procedures: the whole definition (language, volatility,
    -- strictness, parallel safety, cost, rows, SET options, support
    -- function, security definer, body), owner, privileges and comment
    UNION ALL
    SELECT f.ident,
           pg_catalog.format('owner %s, config %s, comment %L',
                  (SELECT name FROM role WHERE oid = f.proowner), f.proconfig,
                  pg_catalog.obj_description(f.procoid, 'pg_proc'))
      FROM func f
    UNION ALL
    SELECT f.ident,
           'definition ' || pg_catalog.rtrim(pg_catalog.pg_get_functiondef(f.procoid), E'\n')
      FROM func f WHERE f.prokind <> 'a'
    UNION ALL
    SELECT f.ident,
           pg_catalog.format('aggregate (%s) returns %s: kind %s, sfunc %s, stype %s, sspace %s, '
                  'finalfunc %s, finalextra %s, finalmodify %s, combinefunc %s, serialfunc %s, '
                  'deserialfunc %s, msfunc %s, minvfunc %s, mfinalfunc %s, mstype %s, '
                  'initcond %L, minitcond %L, sortop %s, parallel %s, strict %s, volatility %s',
                  pg_catalog.pg_get_function_arguments(f.procoid),
                  pg_catalog.pg_get_function_result(f.procoid),
                  ag.aggkind, ag.aggtransfn::pg_catalog.regprocedure,
                  ag.aggtranstype::pg_catalog.regtype, ag.aggtransspace,
                  NULLIF(ag.aggfinalfn, 0)::pg_catalog.regprocedure, ag.aggfinalextra,
                  ag.aggfinalmodify, NULLIF(ag.aggcombinefn, 0)::pg_catalog.regprocedure,
                  NULLIF(ag.aggserialfn, 0)::pg_catalog.regprocedure,
                  NULLIF(ag.aggdeserialfn, 0)::pg_catalog.regprocedure,
                  NULLIF(ag.aggmtransfn, 0)::pg_catalog.regprocedure,
                  NULLIF(ag.aggminvtransfn, 0)::pg_catalog.regprocedure,
                  NULLIF(ag.aggmfinalfn, 0)::pg_catalog.regprocedure,
                  NULLIF(ag.aggmtranstype, 0)::pg_catalog.regtype,
                  ag.agginitval, ag.aggminitval,
                  NULLIF(ag.aggsortop, 0)::pg_catalog.regoperator,
                  f.proparallel, f.proisstrict, f.provolatile)
      FROM func f JOIN pg_catalog.pg_aggregate ag ON ag.aggfnoid = f.procoid
    UNION ALL
    SELECT f.ident,
           pg_catalog.format('grant %s%s to %s by %s', a.privilege_type,
                  CASE WHEN a.is_grantable THEN ' with grant option' ELSE '' END,
                  ge.name, gr.name)
      FROM func f
      CROSS JOIN LATERAL pg_catalog.aclexplode(coalesce(f.proacl, pg_catalog.acldefault('f', f.proowner))) a
      JOIN role ge ON ge.oid = a.grantee
      JOIN role gr ON gr.oid = a.grantor
    -- types and domains
    UNION ALL
    SELECT t.ident,
           pg_catalog.format('kind %s, category %s, owner %s, base %s, not null %s, default %L, '
                  'collation %s, length %s, by value %s, alignment %s, storage %s, delimiter %L, '
                  'input %s, output %s, receive %s, send %s, typmod in %s, typmod out %s, '
                  'analyze %s, subscript %s, element %s, array %s, comment %L',
                  t.typtype, t.typcategory, (SELECT name FROM role WHERE oid = t.typowner),
                  CASE WHEN t.typbasetype <> 0 THEN pg_catalog.format_type(t.typbasetype, t.typtypmod) END,
                  t.typnotnull, t.typdefault,
                  (SELECT co.collname FROM pg_catalog.pg_collation co WHERE co.oid = t.typcollation),
                  t.typlen, t.typbyval, t.typalign, t.typstorage, t.typdelim,
                  t.typinput, t.typoutput, t.typreceive, t.typsend, t.typmodin, t.typmodout,
                  t.typanalyze, t.typsubscript,
                  NULLIF(t.typelem, 0)::pg_catalog.regtype, NULLIF(t.typarray, 0)::pg_catalog.regtype,
                  pg_catalog.obj_description(t.typoid, 'pg_type'))
      FROM typ t
    UNION ALL
    SELECT t.ident,
           pg_catalog.format('grant %s%s to %s by %s', a.privilege_type,
                  CASE WHEN a.is_grantable THEN ' with grant option' ELSE '' END,
                  ge.name, gr.name)
      FROM typ t
      CROSS JOIN LATERAL pg_catalog.aclexplode(coalesce(t.typacl, pg_catalog.acldefault('T', t.typowner))) a
      JOIN role ge ON ge.oid = a.grantee
      JOIN role gr ON gr.oid = a.grantor
    UNION ALL
    SELECT t.ident,
           pg_catalog.format('constraint %I: %s, validated %s', co.conname,
                  pg_catalog.pg_get_constraintdef(co.oid), co.convalidated)
      FROM typ t JOIN pg_catalog.pg_constraint co ON co.contypid = t.typoid
    UNION ALL
    SELECT t.ident,
           pg_catalog.format('label %s %L', pg_catalog.lpad(pg_catalog.row_number() OVER
                  (PARTITION BY t.typoid ORDER BY en.enumsortorder)::text, 3, '0'), en.enumlabel)
      FROM typ t JOIN pg_catalog.pg_enum en ON en.enumtypid = t.typoid
    UNION ALL
    SELECT t.ident,
           pg_catalog.format('attribute %s %I %s, collation %s, comment %L',
                  pg_catalog.lpad(pg_catalog.row_number() OVER
                      (PARTITION BY t.typoid ORDER BY a.attnum)::text, 3, '0'),
                  a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod),
                  (SELECT co.collname FROM pg_catalog.pg_collation co WHERE co.oid = a.attcollation),
                  pg_catalog.col_description(a.attrelid, a.attnum))
      FROM typ t JOIN pg_catalog.pg_attribute a ON a.attrelid = t.typrelid
     WHERE t.typtype = 'c' AND a.attnum > 0 AND NOT a.attisdropped
    UNION ALL
    SELECT t.ident,
           pg_catalog.format('range of %s, collation %s, opclass %s, canonical %s, subdiff %s, multirange %s',
                  rg.rngsubtype::pg_catalog.regtype,
                  (SELECT co.collname FROM pg_catalog.pg_collation co WHERE co.oid = rg.rngcollation),
                  (SELECT oc.opcname FROM pg_catalog.pg_opclass oc WHERE oc.oid = rg.rngsubopc),
                  rg.rngcanonical, rg.rngsubdiff, rg.rngmultitypid::pg_catalog.regtype)
      FROM typ t JOIN pg_catalog.pg_range rg ON rg.rngtypid = t.typoid
    -- event triggers
    UNION ALL
    SELECT 'event trigger ' || pg_catalog.quote_ident(et.evtname),
           pg_catalog.format('on %s, tags %s, function %s, enabled %s, owner %s, comment %L',
                  et.evtevent,
                  (SELECT pg_catalog.array_agg(tg ORDER BY tg) FROM pg_catalog.unnest(et.evttags) tg),
                  et.evtfoid::pg_catalog.regprocedure, et.evtenabled,
                  (SELECT name FROM role WHERE oid = et.evtowner),
                  pg_catalog.obj_description(et.oid, 'pg_event_trigger'))
      FROM pg_catalog.pg_event_trigger et
      JOIN member m ON m.classid = 'pg_catalog.pg_event_trigger'::pg_catalog.regclass AND m.objid = et.oid
    -- casts
    UNION ALL
    SELECT 'cast (' || ca.castsource::pg_catalog.regtype::text || ' AS '
               || ca.casttarget::pg_catalog.regtype::text || ')',
           pg_catalog.format('function %s, context %s, method %s',
                  NULLIF(ca.castfunc, 0)::pg_catalog.regprocedure, ca.castcontext, ca.castmethod)
      FROM pg_catalog.pg_cast ca
      JOIN member m ON m.classid = 'pg_catalog.pg_cast'::pg_catalog.regclass AND m.objid = ca.oid
    -- operators
    UNION ALL
    SELECT 'operator ' || o.oid::pg_catalog.regoperator::text,
           pg_catalog.format('function %s, result %s, commutator %s, negator %s, restrict %s, '
                  'join %s, merges %s, hashes %s, owner %s, comment %L',
                  o.oprcode::pg_catalog.regprocedure, o.oprresult::pg_catalog.regtype,
                  NULLIF(o.oprcom, 0)::pg_catalog.regoperator, NULLIF(o.oprnegate, 0)::pg_catalog.regoperator,
                  o.oprrest, o.oprjoin, o.oprcanmerge, o.oprcanhash,
                  (SELECT name FROM role WHERE oid = o.oprowner),
                  pg_catalog.obj_description(o.oid, 'pg_operator'))
      FROM pg_catalog.pg_operator o
      JOIN member m ON m.classid = 'pg_catalog.pg_operator'::pg_catalog.regclass AND m.objid = o.oid
)
SELECT ident || ': ' || pg_catalog.replace(fact, E'\n', E'\n    ')
  FROM facts
 ORDER BY ident COLLATE "C", fact COLLATE "C";
