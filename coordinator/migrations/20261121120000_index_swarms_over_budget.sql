-- Claims read the swarms that are over budget once per statement; a partial
-- index keeps that read small however many swarms there are.
create index swarms_over_budget_idx on swarms (id) where spent >= budget;
