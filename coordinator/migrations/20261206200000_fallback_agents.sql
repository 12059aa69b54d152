-- Fallback agents: when a build attempt fails (or its provider refuses it),
-- the task's next attempt runs with the next of them, cycling back to its
-- agent. Each attempt records which agent ran it.
alter table tasks add column fallback_agents text[] not null default '{}';
alter table attempts add column agent text;

-- A claim hands over the agent the task runs with now (its stage's agent,
-- or the fallback its failures moved it to), the one claims match on.
create or replace view claim_payloads as
select s.task_id,
       s.run_agent as agent,
       case when s.stage = 'validate' then coalesce(t.validate_prompt, '') else t.prompt end as prompt,
       t.input, t.timeout_ms, t.swarm_id, t.priority, s.stage, s.round,
       case when s.stage = 'validate' then
           (select a.result from attempts a
            where a.task_id = s.task_id and a.stage = 'build' and a.outcome = 'succeeded'
            order by a.number desc limit 1)
       end as build_result,
       case when s.stage = 'build' and s.round > 1 then
           (select a.result from attempts a
            where a.task_id = s.task_id and a.stage = 'validate' and a.outcome = 'succeeded'
            order by a.number desc limit 1)
       end as feedback,
       (select jsonb_object_agg(coalesce(u.key, u.id::text), coalesce(a.result, 'null'::jsonb))
        from task_deps d
        join tasks u on u.id = d.depends_on
        join task_states us on us.task_id = d.depends_on
        left join attempts a on a.task_id = us.task_id and a.number = us.result_attempt
        where d.task_id = s.task_id) as inputs,
       case when t.resume_sessions then
           coalesce(
               (select ss.session_id from task_sessions ss where ss.task_id = s.task_id and ss.stage = s.stage),
               (select a.session_id from attempts a
                where a.task_id = s.task_id and a.stage = s.stage and a.session_id is not null
                order by a.number desc limit 1))
       end as resume_session,
       t.resume_sessions
from task_states s join tasks t on t.id = s.task_id;
