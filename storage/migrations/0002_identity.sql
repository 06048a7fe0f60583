-- Identity: users, their password, sessions (one per sign-in), rotating refresh tokens, one-time tokens.

create table users (
  id uuid primary key,
  email citext not null unique,
  name text not null,
  email_verified_at timestamptz,
  version integer not null default 1,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

create table password_credentials (
  user_id uuid primary key references users (id) on delete cascade,
  hash text not null,
  updated_at timestamptz not null default now()
);

create table sessions (
  id uuid primary key,
  user_id uuid not null references users (id) on delete cascade,
  user_agent text,
  ip text,
  created_at timestamptz not null default now(),
  last_used_at timestamptz not null default now(),
  revoked_at timestamptz,
  revoked_reason text
);
create index sessions_user_idx on sessions (user_id, created_at desc);

-- Each refresh rotates the session's token: the old row is marked rotated and points at nothing new; the
-- chain is found by session. Only hashes are stored.
create table refresh_tokens (
  id uuid primary key,
  session_id uuid not null references sessions (id) on delete cascade,
  token_hash bytea not null unique,
  created_at timestamptz not null default now(),
  expires_at timestamptz not null,
  rotated_at timestamptz
);
create index refresh_tokens_session_idx on refresh_tokens (session_id);

create table one_time_tokens (
  id uuid primary key,
  user_id uuid not null references users (id) on delete cascade,
  purpose text not null check (purpose in ('email_verify', 'password_reset')),
  token_hash bytea not null unique,
  expires_at timestamptz not null,
  used_at timestamptz,
  created_at timestamptz not null default now()
);

-- The development mail transport writes here, so developers and tests can read what was sent.
create table dev_mailbox (
  id uuid primary key,
  recipient citext not null,
  subject text not null,
  body text not null,
  kind text not null,
  data jsonb not null default '{}',
  sent_at timestamptz not null default now()
);
create index dev_mailbox_recipient_idx on dev_mailbox (recipient, sent_at desc);
