-- One round of a worker's broker loop, in pgbench: finish what the last round claimed (all
-- succeeded, result null) and claim the next batch, in one transaction, as pgworker does
-- (canvas.finish_and_claim). Run with -M extended: the variables are bound as parameters.
-- :worker is a registered worker id, :batch the claim size; :ids and :attempts carry the claimed
-- batch from one transaction to the next (start them as '{}').
SELECT coalesce(array_agg(id ORDER BY id) FILTER (WHERE kind = 'claimed'), '{}') AS ids,
       coalesce(array_agg(attempt ORDER BY id) FILTER (WHERE kind = 'claimed'), '{}') AS attempts
FROM canvas.finish_and_claim(
    :worker, :ids::bigint[], :attempts::integer[],
    array_fill('succeeded'::text, ARRAY[cardinality(:ids::bigint[])]),
    array_fill('null'::jsonb, ARRAY[cardinality(:ids::bigint[])]),
    array_fill(NULL::text, ARRAY[cardinality(:ids::bigint[])]),
    array_fill(NULL::jsonb, ARRAY[cardinality(:ids::bigint[])]),
    '{default}', :batch) \gset
