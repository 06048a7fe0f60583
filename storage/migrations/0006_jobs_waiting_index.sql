-- The dispatcher looks for jobs waiting to be published. A started job is not marked published any more (its
-- status says it is past that), so the index covers waiting jobs only, and every job leaves it when it starts
-- instead of staying in it for ever.
drop index if exists jobs_unpublished_idx;
create index jobs_waiting_idx on jobs (run_at) where published_at is null and status = 'queued';
-- Room on each page for the status updates of a job's life to stay on its page.
alter table jobs set (fillfactor = 80);
-- Every index is rewritten by each state change of a job (several per job): keep only what queries need.
-- The ops view lists recent jobs by id (UUIDv7: creation order) and filters by status within them.
drop index if exists jobs_recent_idx;
drop index if exists jobs_status_idx;
create index jobs_org_only_idx on jobs (org_id, created_at desc) where org_id is not null;
drop index if exists jobs_org_idx;
-- Most jobs have no idempotency key: the unique index holds only the keys there are.
alter table jobs drop constraint if exists jobs_idempotency_key_key;
create unique index jobs_idempotency_key_idx on jobs (idempotency_key) where idempotency_key is not null;
