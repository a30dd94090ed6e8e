-- CRDT merges of merge-mode sinks (docs/merge-mode.md). Every function is a join of a
-- semilattice: commutative, associative and idempotent, so the rows a merge sink holds
-- do not depend on delivery order, duplicates or replays. States are canonical (jsonb
-- objects, arrays sorted in byte order: COLLATE "C"), so equal states are equal values.
-- OR REPLACE: applying it again (a renumbered migration) changes nothing.

-- g_counter state: {replica: count}; the join keeps each replica's greatest count.
CREATE OR REPLACE FUNCTION sinkfleet.crdt_g_merge(a jsonb, b jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT coalesce(jsonb_object_agg(k, m), '{}'::jsonb)
  FROM (SELECT e.key AS k, max(e.value::numeric) AS m
        FROM (SELECT * FROM jsonb_each(coalesce(a, '{}'))
              UNION ALL SELECT * FROM jsonb_each(coalesce(b, '{}'))) e
        GROUP BY e.key) s
$$;
CREATE OR REPLACE FUNCTION sinkfleet.crdt_g_value(s jsonb) RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT coalesce(sum(value::numeric), 0) FROM jsonb_each(coalesce(s, '{}'))
$$;

-- pn_counter state: {replica: [increments, decrements]}; each kept at its greatest.
CREATE OR REPLACE FUNCTION sinkfleet.crdt_pn_merge(a jsonb, b jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT coalesce(jsonb_object_agg(k, jsonb_build_array(p, n)), '{}'::jsonb)
  FROM (SELECT e.key AS k, max((e.value->>0)::numeric) AS p,
               max((e.value->>1)::numeric) AS n
        FROM (SELECT * FROM jsonb_each(coalesce(a, '{}'))
              UNION ALL SELECT * FROM jsonb_each(coalesce(b, '{}'))) e
        GROUP BY e.key) s
$$;
CREATE OR REPLACE FUNCTION sinkfleet.crdt_pn_value(s jsonb) RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT coalesce(sum((value->>0)::numeric - (value->>1)::numeric), 0)
  FROM jsonb_each(coalesce(s, '{}'))
$$;

-- g_set: a sorted text[] without duplicates or nulls; the join is the union.
CREATE OR REPLACE FUNCTION sinkfleet.crdt_union(a text[], b text[]) RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT coalesce(array_agg(e ORDER BY e COLLATE "C"), '{}'::text[])
  FROM (SELECT DISTINCT e FROM unnest(coalesce(a, '{}') || coalesce(b, '{}')) AS u(e)
        WHERE e IS NOT NULL) d
$$;

-- or_set state: {"adds": {element: [tag…]}, "removes": [tag…]}. The join is the union
-- of both; an add tag that is removed is dropped from "adds" (the tombstone in
-- "removes" stays), and an element without tags left is gone: that compaction gives
-- the same state whatever order the unions came in.
CREATE OR REPLACE FUNCTION sinkfleet.crdt_orset_merge(a jsonb, b jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  WITH r AS (
    SELECT DISTINCT t FROM (
      SELECT jsonb_array_elements_text(coalesce(a->'removes', '[]')) AS t
      UNION ALL SELECT jsonb_array_elements_text(coalesce(b->'removes', '[]'))) x
    WHERE t IS NOT NULL),
  live AS (
    SELECT DISTINCT e.key AS elem, t.tag
    FROM (SELECT * FROM jsonb_each(coalesce(a->'adds', '{}'))
          UNION ALL SELECT * FROM jsonb_each(coalesce(b->'adds', '{}'))) e,
         jsonb_array_elements_text(e.value) AS t(tag)
    WHERE t.tag IS NOT NULL AND NOT EXISTS (SELECT 1 FROM r WHERE r.t = t.tag))
  SELECT jsonb_build_object(
    'adds', coalesce((SELECT jsonb_object_agg(elem, tags) FROM (
                        SELECT elem, jsonb_agg(tag ORDER BY tag COLLATE "C") AS tags
                        FROM live GROUP BY elem) g), '{}'::jsonb),
    'removes', coalesce((SELECT jsonb_agg(t ORDER BY t COLLATE "C") FROM r), '[]'::jsonb))
$$;
CREATE OR REPLACE FUNCTION sinkfleet.crdt_orset_value(s jsonb) RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT coalesce(array_agg(key ORDER BY key COLLATE "C"), '{}'::text[])
  FROM jsonb_each(coalesce(s->'adds', '{}')) WHERE jsonb_array_length(value) > 0
$$;

-- The joins as aggregates: a batch's records of one id are joined in one GROUP BY.
CREATE OR REPLACE AGGREGATE sinkfleet.crdt_g_agg(jsonb) (
  SFUNC = sinkfleet.crdt_g_merge, STYPE = jsonb, INITCOND = '{}');
CREATE OR REPLACE AGGREGATE sinkfleet.crdt_pn_agg(jsonb) (
  SFUNC = sinkfleet.crdt_pn_merge, STYPE = jsonb, INITCOND = '{}');
CREATE OR REPLACE AGGREGATE sinkfleet.crdt_union_agg(text[]) (
  SFUNC = sinkfleet.crdt_union, STYPE = text[], INITCOND = '{}');
CREATE OR REPLACE AGGREGATE sinkfleet.crdt_orset_agg(jsonb) (
  SFUNC = sinkfleet.crdt_orset_merge, STYPE = jsonb,
  INITCOND = '{"adds": {}, "removes": []}');
