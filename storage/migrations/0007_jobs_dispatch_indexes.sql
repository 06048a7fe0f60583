-- What the dispatcher looks for, each in an index it can stop early in:
--   delayed jobs that came due, by run_at (a job is delayed when it was enqueued to run later);
--   jobs whose enqueuer died between commit and publish, by age (others are published at once, or leave the
--   index when they start or are marked published).
-- One index over all waiting jobs was scanned whole on every pass while a backlog waited.
alter table jobs add column delayed boolean not null default false;
drop index if exists jobs_waiting_idx;
create index jobs_delayed_idx on jobs (run_at) where delayed and published_at is null and status = 'queued';
create index jobs_leftover_idx on jobs (created_at) where not delayed and published_at is null and status = 'queued';
-- Jobs churn: vacuum early, so index entries of finished jobs do not pile up between passes.
alter table jobs set (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_insert_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.05);
