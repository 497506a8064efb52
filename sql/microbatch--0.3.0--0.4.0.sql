/* microbatch 0.3.0 -> 0.4.0: distributed pipelines over Citus */
\echo Use "ALTER EXTENSION microbatch UPDATE TO '0.4.0'" to load this file. \quit

/*
 * Distributed pipelines (src/citus.c, docs/scaling.md).  The coordinator
 * lists them; each worker runs one shard pipeline per shard placement it
 * holds, an ordinary pipeline named <pipeline>_<shard id>, listed in
 * shard_pipeline.
 */
CREATE TABLE microbatch.distributed_pipeline (
    pipeline_name   name PRIMARY KEY,
    source_table    regclass NOT NULL,
    owner_role      regrole NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now()
);

CREATE TABLE microbatch.shard_pipeline (
    pipeline_id     integer PRIMARY KEY,
    distributed_pipeline name NOT NULL,
    shard           regclass NOT NULL,
    -- the shard had no microbatch_xid before: it goes with the pipeline
    tracking_added  boolean NOT NULL
);

SELECT pg_catalog.pg_extension_config_dump('microbatch.distributed_pipeline', '');
SELECT pg_catalog.pg_extension_config_dump('microbatch.shard_pipeline', '');
REVOKE ALL ON microbatch.distributed_pipeline, microbatch.shard_pipeline FROM PUBLIC;

CREATE FUNCTION microbatch.create_distributed_pipeline(pipeline name,
                                                       source regclass,
                                                       batch_interval interval DEFAULT '1 second',
                                                       max_batch_rows bigint DEFAULT NULL,
                                                       start_from text DEFAULT 'beginning',
                                                       batch_timeout interval DEFAULT NULL)
RETURNS bigint
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_create_distributed_pipeline';

COMMENT ON FUNCTION microbatch.create_distributed_pipeline(name, regclass, interval, bigint, text, interval)
    IS 'register a pipeline over a Citus distributed table: a shard pipeline on the node of each shard';

CREATE FUNCTION microbatch.drop_distributed_pipeline(pipeline name)
RETURNS bigint
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_drop_distributed_pipeline';

COMMENT ON FUNCTION microbatch.drop_distributed_pipeline(name)
    IS 'drop a distributed pipeline and its shard pipelines';

CREATE FUNCTION microbatch.add_distributed_transform(pipeline name,
                                                     transform name,
                                                     layer text,
                                                     command text)
RETURNS bigint
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_add_distributed_transform';

COMMENT ON FUNCTION microbatch.add_distributed_transform(name, name, text, text)
    IS 'append a SQL statement to a layer of every shard pipeline of a distributed pipeline';

CREATE FUNCTION microbatch.remove_distributed_transform(pipeline name,
                                                        transform name)
RETURNS bigint
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_remove_distributed_transform';

COMMENT ON FUNCTION microbatch.remove_distributed_transform(name, name)
    IS 'remove a transform from every shard pipeline of a distributed pipeline';

/* Called by the coordinator on each node that holds shards */
CREATE FUNCTION microbatch.create_shard_pipelines(pipeline name,
                                                  shards regclass[],
                                                  batch_interval interval,
                                                  max_batch_rows bigint,
                                                  start_from text,
                                                  batch_timeout interval)
RETURNS bigint
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_create_shard_pipelines';

COMMENT ON FUNCTION microbatch.create_shard_pipelines(name, regclass[], interval, bigint, text, interval)
    IS 'create the shard pipelines of a distributed pipeline on this node (called by the coordinator)';

CREATE FUNCTION microbatch.drop_shard_pipelines(pipeline name)
RETURNS bigint
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_drop_shard_pipelines';

COMMENT ON FUNCTION microbatch.drop_shard_pipelines(name)
    IS 'drop the shard pipelines of a distributed pipeline on this node (called by the coordinator)';

CREATE FUNCTION microbatch.add_shard_transform(pipeline name,
                                               transform name,
                                               layer text,
                                               command text,
                                               search_path text)
RETURNS bigint
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_add_shard_transform';

COMMENT ON FUNCTION microbatch.add_shard_transform(name, name, text, text, text)
    IS 'add a transform to the shard pipelines of a distributed pipeline on this node (called by the coordinator)';

CREATE FUNCTION microbatch.remove_shard_transform(pipeline name,
                                                  transform name)
RETURNS bigint
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_remove_shard_transform';

COMMENT ON FUNCTION microbatch.remove_shard_transform(name, name)
    IS 'remove a transform from the shard pipelines of a distributed pipeline on this node (called by the coordinator)';

CREATE FUNCTION microbatch.pause_distributed_pipeline(pipeline name)
RETURNS bigint
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_pause_distributed_pipeline';

COMMENT ON FUNCTION microbatch.pause_distributed_pipeline(name)
    IS 'pause every shard pipeline of a distributed pipeline';

CREATE FUNCTION microbatch.resume_distributed_pipeline(pipeline name)
RETURNS bigint
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_resume_distributed_pipeline';

COMMENT ON FUNCTION microbatch.resume_distributed_pipeline(name)
    IS 'resume every shard pipeline of a distributed pipeline';

CREATE FUNCTION microbatch.refresh_distributed_pipeline(pipeline name)
RETURNS bigint
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_refresh_distributed_pipeline';

COMMENT ON FUNCTION microbatch.refresh_distributed_pipeline(name)
    IS 'refresh every shard pipeline of a distributed pipeline, after columns of its table changed';

CREATE FUNCTION microbatch.alter_distributed_pipeline(pipeline name,
                                                      batch_interval interval DEFAULT NULL,
                                                      max_batch_rows bigint DEFAULT NULL,
                                                      batch_timeout interval DEFAULT NULL)
RETURNS bigint
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_alter_distributed_pipeline';

COMMENT ON FUNCTION microbatch.alter_distributed_pipeline(name, interval, bigint, interval)
    IS 'change the schedule of every shard pipeline of a distributed pipeline';

CREATE FUNCTION microbatch.change_shard_pipelines(pipeline name,
                                                  change text,
                                                  batch_interval interval DEFAULT NULL,
                                                  max_batch_rows bigint DEFAULT NULL,
                                                  batch_timeout interval DEFAULT NULL)
RETURNS bigint
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_change_shard_pipelines';

COMMENT ON FUNCTION microbatch.change_shard_pipelines(name, text, interval, bigint, interval)
    IS 'pause, resume, alter or refresh the shard pipelines of a distributed pipeline on this node (called by the coordinator)';

/* Called on the coordinator: each node's shard pipelines, as JSON */
CREATE FUNCTION microbatch.distributed_pipeline_nodes(pipeline name,
                                                      OUT node_name text,
                                                      OUT node_port integer,
                                                      OUT success boolean,
                                                      OUT result text)
RETURNS SETOF record
LANGUAGE C CALLED ON NULL INPUT VOLATILE
AS 'MODULE_PATHNAME', 'microbatch_distributed_pipeline_nodes';

COMMENT ON FUNCTION microbatch.distributed_pipeline_nodes(name)
    IS 'the shard pipelines of a distributed pipeline on each node, as JSON (behind distributed_pipeline_status())';

CREATE FUNCTION microbatch.distributed_pipeline_status(pipeline name)
RETURNS TABLE (node_name text, node_port integer, pipeline name, shard text,
               state text, last_batch_id bigint,
               last_batch_at timestamptz, rows_waiting bigint, last_error text)
LANGUAGE sql VOLATILE
BEGIN ATOMIC
    SELECT n.node_name, n.node_port, r.pipeline, r.shard, r.state,
           r.last_batch_id, r.last_batch_at, r.rows_waiting, r.last_error
      FROM microbatch.distributed_pipeline_nodes(distributed_pipeline_status.pipeline) n,
           LATERAL pg_catalog.json_to_recordset(
               CASE WHEN n.success THEN n.result::pg_catalog.json
                    ELSE pg_catalog.json_build_array(pg_catalog.json_build_object(
                             'state', 'unreachable', 'last_error', n.result)) END)
               AS r(pipeline name, shard text, state text, last_batch_id bigint,
                    last_batch_at timestamptz, rows_waiting bigint, last_error text)
     ORDER BY n.node_name, n.node_port, r.pipeline;
END;

COMMENT ON FUNCTION microbatch.distributed_pipeline_status(name)
    IS 'the shard pipelines of a distributed pipeline on every node: state, last batch, rows waiting, last error';

CREATE VIEW microbatch.distributed_pipelines WITH (security_barrier) AS
SELECT d.pipeline_name AS pipeline,
       d.source_table AS source,
       d.owner_role AS owner,
       d.created_at
  FROM microbatch.distributed_pipeline d
 WHERE pg_catalog.pg_has_role(d.owner_role, 'USAGE');

CREATE VIEW microbatch.shard_pipelines WITH (security_barrier) AS
SELECT s.distributed_pipeline,
       p.pipeline_name AS pipeline,
       s.shard,
       p.owner_role AS owner
  FROM microbatch.shard_pipeline s
  JOIN microbatch.pipeline p ON p.pipeline_id = s.pipeline_id
 WHERE pg_catalog.pg_has_role(p.owner_role, 'USAGE');

GRANT SELECT ON microbatch.distributed_pipelines, microbatch.shard_pipelines TO PUBLIC;
