-- What a claimed attempt is handed (its agent, prompt, input and what it
-- builds on), as a function of the state the claim just wrote: a claim
-- passes the columns its update returned, so the payload reads only the
-- task's spec and what it depends on, not the state row a second time.
-- Plain SQL and stable, so PostgreSQL inlines it into the claim's plan.
-- An attempt runs with the task's current agent (`run_agent`: its stage's
-- agent, or the fallback its failures moved it to); a validator gets its own
-- prompt and the builder's result, a builder past its first round the
-- validator's verdict; a task that resumes sessions gets the saved session
-- of its stage when there is one (the newest the agent wrote, even when its
-- attempt was lost without a report), else the one its last attempt of that
-- stage reported.
create function claim_payload(task_id uuid, agent text, stage text, round int)
returns table (agent text, prompt text, input jsonb, timeout_ms bigint, swarm_id uuid, priority int, stage text,
               round int, build_result jsonb, feedback jsonb, inputs jsonb, resume_session text,
               resume_sessions boolean)
language sql stable
as $$
select claim_payload.agent,
       case when claim_payload.stage = 'validate' then coalesce(t.validate_prompt, '') else t.prompt end,
       t.input, t.timeout_ms, t.swarm_id, t.priority, claim_payload.stage, claim_payload.round,
       case when claim_payload.stage = 'validate' then
           (select a.result from attempts a
            where a.task_id = claim_payload.task_id and a.stage = 'build' and a.outcome = 'succeeded'
            order by a.number desc limit 1)
       end,
       case when claim_payload.stage = 'build' and claim_payload.round > 1 then
           (select a.result from attempts a
            where a.task_id = claim_payload.task_id and a.stage = 'validate' and a.outcome = 'succeeded'
            order by a.number desc limit 1)
       end,
       (select jsonb_object_agg(coalesce(u.key, u.id::text), coalesce(a.result, 'null'::jsonb))
        from task_deps d
        join tasks u on u.id = d.depends_on
        join task_states us on us.task_id = d.depends_on
        left join attempts a on a.task_id = us.task_id and a.number = us.result_attempt
        where d.task_id = claim_payload.task_id),
       case when t.resume_sessions then
           coalesce(
               (select ss.session_id from task_sessions ss
                where ss.task_id = claim_payload.task_id and ss.stage = claim_payload.stage),
               (select a.session_id from attempts a
                where a.task_id = claim_payload.task_id and a.stage = claim_payload.stage and a.session_id is not null
                order by a.number desc limit 1))
       end,
       t.resume_sessions
from tasks t
where t.id = claim_payload.task_id
$$;

-- Coordinators of the release before claim through this view while a newer
-- one has migrated (a rolling upgrade): it stays, defined by the function.
create or replace view claim_payloads as
select s.task_id, p.*
from task_states s
cross join lateral claim_payload(s.task_id, s.run_agent, s.stage, s.round) p;
