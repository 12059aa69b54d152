-- Taking places under concurrency keys, in one function that both claim
-- paths call, and only for tasks that name keys: a claim whose tasks name
-- none runs none of this (each part of a statement costs its executor
-- set-up on every run, even with no rows). Admits `task_ids` (in claim
-- order) under their keys for their `attempt_ids`, and returns those
-- admitted: each key row is locked in key order (only claims lock these
-- rows, so they never deadlock), reads its latest holders, drops those
-- whose attempt has ended (`unended_holders`) and adds the attempts taking
-- a place. A task one of whose keys has no room is not admitted (it stays
-- ready); tasks ahead of it in the batch count against each key first.
create function take_key_slots(task_ids uuid[], attempt_ids uuid[])
returns table (task_id uuid, attempt_id uuid)
language plpgsql volatile as $$
#variable_conflict use_column
begin
    return query
    with wanted as (
        select w.task_id, w.attempt_id, k.key,
               row_number() over (partition by k.key order by w.n) as rank
        from unnest(task_ids, attempt_ids) with ordinality as w(task_id, attempt_id, n)
        join tasks t on t.id = w.task_id
        cross join unnest(t.concurrency_keys) as k(key)
    ), locked as (
        select c.key, c.max_running, c.holders, c.holder_tasks
        from concurrency_slots c
        where c.key = any(array(select w.key from wanted w))
        order by c.key
        for update
    ), slots as (
        select l.key, l.max_running, x.holders, x.holder_tasks
        from locked l
        cross join lateral unended_holders(l.holders, l.holder_tasks) as x
    ), refused as (
        select array(select w.task_id from wanted w join slots c on c.key = w.key
                     where cardinality(c.holders) + w.rank > c.max_running) as ids
    ), admitted as (
        select distinct w.task_id, w.attempt_id
        from wanted w
        where w.task_id <> all((select r.ids from refused r)::uuid[])
    ), taken as (
        update concurrency_slots c
        set holders = s.holders || array(select a.attempt_id from wanted w join admitted a on a.task_id = w.task_id
                                         where w.key = c.key order by a.task_id),
            holder_tasks = s.holder_tasks || array(select a.task_id from wanted w join admitted a on a.task_id = w.task_id
                                                   where w.key = c.key order by a.task_id)
        from slots s
        where c.key = s.key
    )
    select a.task_id, a.attempt_id from admitted a;
end
$$;
