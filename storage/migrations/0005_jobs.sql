-- Durable jobs: the record of each job (the queue itself is the JetStream work-queue stream). A record is
-- written in the enqueuing transaction and is the job's outbox too: `published_at` stays null until the
-- job is on the queue, so a crash between commit and publish leaves it for the dispatcher, and a rolled
-- back transaction leaves no job at all.
alter table jobs
  add column priority text not null default 'default' check (priority in ('high', 'default', 'low')),
  add column max_attempts integer not null default 5,
  add column run_at timestamptz not null default now(),
  add column published_at timestamptz,
  -- Bumped when a dead job is queued again, so its new message is not taken for a duplicate of the old one.
  add column generation integer not null default 0,
  add column started_at timestamptz,
  add column finished_at timestamptz,
  add column next_attempt_at timestamptz;
alter table jobs alter column org_id drop not null;
create index jobs_unpublished_idx on jobs (run_at) where published_at is null;
create index jobs_status_idx on jobs (status, updated_at desc);
create index jobs_recent_idx on jobs (created_at desc);

-- The last tick each cron schedule fired, so a restart neither repeats nor (beyond one catch-up) loses ticks.
create table cron_state (
  namespace text not null,
  name text not null,
  last_tick timestamptz not null,
  primary key (namespace, name)
);

-- Project exports written by the export job; the job's result names the row.
create table exports (
  id uuid primary key,
  org_id uuid not null references organizations (id) on delete cascade,
  job_id uuid not null,
  content jsonb not null,
  bytes integer not null,
  created_at timestamptz not null default now()
);
create index exports_org_idx on exports (org_id, created_at desc);
alter table exports enable row level security;
create policy tenant on exports using (org_id = nullif(current_setting('app.org_id', true), '')::uuid);
grant select, insert, delete on exports to actorbase_app;
