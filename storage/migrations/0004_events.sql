-- The transactional outbox: every change of an org or user actor writes its event here in the same transaction,
-- numbered per channel (`org:<id>`, `user:<id>`) without gaps. The owning actor publishes rows to JetStream
-- after the commit and marks them; rows left unpublished by a crash are published by the next owner.
create table outbox (
  id uuid primary key,
  channel text not null,
  seq bigint not null,
  type text not null,
  data jsonb not null,
  request_id text,
  at timestamptz not null,
  published_at timestamptz,
  -- Two activations of one actor can never both write the same number: the stale one fails here.
  unique (channel, seq)
);
create index outbox_unpublished_idx on outbox (at) where published_at is null;
create index outbox_published_idx on outbox (published_at) where published_at is not null;

-- The last number given out per channel, kept apart from the outbox so that pruning published rows never
-- resets a channel's sequence.
create table channel_seqs (
  channel text primary key,
  seq bigint not null
);

grant select, insert, update on outbox, channel_seqs to actorbase_app;
