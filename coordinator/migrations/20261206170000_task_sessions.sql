-- What an agent needs to resume its session on another host (for Claude
-- Code, its transcript), saved by the worker running the task's current
-- attempt and handed to the attempt that resumes it. One row per task and
-- stage (a validator never resumes its builder's conversation): the newest
-- save replaces the last. Kept until `sessions.retention` after the task
-- finished.
create table task_sessions (
    task_id uuid not null references tasks (id) on delete cascade,
    stage text not null,
    session_id text not null check (session_id <> ''),
    attempt_id uuid not null,
    state bytea not null,
    saved_at timestamptz not null default now(),
    primary key (task_id, stage)
);

-- A resumed attempt resumes the saved session when there is one (it is the
-- newest the agent wrote, even when its attempt was lost without a report),
-- else the session the task's last attempt reported. A claim also says
-- whether the task resumes sessions, so its worker knows to save them, and
-- hands over the agent the task runs with now (`run_agent`: its stage's
-- agent, or the fallback its failures moved it to), the one claims match on.
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
