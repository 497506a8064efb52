-- gen.sql: clickstream events for the benchmarks, in the shape of
-- test/demo/load.pgbench (same users, pages, event types, malformed rows and
-- re-sent events), but set-based and deterministic: bench.gen_events(n, seed)
-- returns the same n rows for the same seed in any database.  The throughput
-- benchmark relies on that to feed the pipeline and the hand-written baseline
-- exactly the same rows.

SET client_min_messages = warning;
CREATE SCHEMA IF NOT EXISTS bench;

-- Loaders draw their seeds here, so two databases that run the same script
-- generate the same rows in the same order.
CREATE SEQUENCE IF NOT EXISTS bench.load_seq;

CREATE OR REPLACE FUNCTION bench.gen_events(n integer, seed bigint)
RETURNS TABLE (event_id uuid, user_id bigint, email text, url text,
               event_type text, amount text, payload text)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT -- ~1.6% of the rows re-send the previous row's event (a tracker's retry)
           md5(seed || ':' || (f.g - f.resend))::uuid,
           CASE WHEN f.fault = 0 THEN NULL ELSE f.uid END,            -- ~0.8% lost user ids
           (ARRAY['alice', 'bob', 'carol', 'dave', 'erin', 'frank', 'grace', 'heidi'])[1 + f.uid % 8]
               || '.' || f.uid || '@'
               || (ARRAY['example.com', 'mail.example.org', 'example.net'])[1 + f.uid % 3],
           'https://shop.example.com'
               || CASE WHEN f.etype <> 'page_view' OR f.kind = 3 THEN '/products/' || f.product
                       ELSE (ARRAY['/', '/search', '/deals'])[1 + f.kind] END
               || CASE WHEN f.campaign THEN '?utm_source=newsletter&utm_campaign=w' || f.product % 7
                       ELSE '' END,
           f.etype,
           CASE WHEN f.fault = 1 THEN '12,50'                          -- ~0.8% bad amounts
                WHEN f.etype = 'purchase' THEN to_char(9.99 + (f.product % 40) * 5, 'FM9990.00') END,
           CASE WHEN f.fault = 2 THEN left(f.doc, 25) ELSE f.doc END    -- ~0.8% truncated JSON
      FROM (SELECT h.g,
                   1 + ((h.h >> 4) & 8191) % 5000 AS uid,
                   1 + ((h.h >> 17) & 1023) % 200 AS product,
                   ((h.h >> 27) & 3)::int AS kind,
                   ((h.h >> 29) & 3) = 0 AS campaign,
                   CASE WHEN ((h.h >> 31) & 127) < 102 THEN 'page_view'
                        WHEN ((h.h >> 31) & 127) < 117 THEN 'add_to_cart'
                        ELSE 'purchase' END AS etype,
                   ((h.h >> 38) & 127)::int AS fault,
                   CASE WHEN ((h.h >> 45) & 63) = 0 AND h.g > 1 THEN 1 ELSE 0 END AS resend,
                   '{"session": "' || left(md5(h.h::text), 16) || '", "device": "'
                       || (ARRAY['mobile', 'desktop', 'tablet'])[1 + ((h.h >> 52) & 1023) % 3]
                       || '", "seq": ' || h.g || '}' AS doc
              FROM (SELECT g, hashint8extended(g, seed) AS h
                      FROM generate_series(1, n) AS g) h) f
$$;
