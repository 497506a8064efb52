-- idle.sql: 100 pipelines in one database, for the idle-cost benchmark.
-- Each gets one row and processes it, then nothing arrives any more: the
-- state of a pipeline whose source has gone quiet.
CREATE EXTENSION microbatch;
CREATE SCHEMA idle;

DO $$
BEGIN
    FOR i IN 1..100 LOOP
        EXECUTE format('CREATE TABLE idle.src_%s (id bigserial PRIMARY KEY, v integer)', i);
        EXECUTE format('CREATE TABLE idle.dst_%s (batch_id bigint PRIMARY KEY, n bigint NOT NULL)', i);
        PERFORM microbatch.create_pipeline(format('idle_%s', i), format('idle.src_%s', i)::regclass);
        PERFORM microbatch.add_transform(format('idle_%s', i), 'count', 'gold', format($t$
            INSERT INTO idle.dst_%s SELECT microbatch.current_batch_id(), count(*)
              FROM microbatch.idle_%s_batch
                ON CONFLICT (batch_id) DO UPDATE SET n = excluded.n $t$, i, i));
        EXECUTE format('INSERT INTO idle.src_%s (v) VALUES (1)', i);
    END LOOP;
END $$;
