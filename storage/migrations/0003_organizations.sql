-- Organizations and everything they own. Every tenant table carries org_id; row-level security on each is the
-- second wall behind the repository's own `where org_id = ...`.

create table organizations (
  id uuid primary key,
  name text not null,
  slug citext not null unique,
  version integer not null default 1,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

create table memberships (
  org_id uuid not null references organizations (id) on delete cascade,
  user_id uuid not null references users (id) on delete cascade,
  joined_at timestamptz not null default now(),
  primary key (org_id, user_id)
);
create index memberships_user_idx on memberships (user_id);

-- Custom roles; the four built-in ones live in code (core/rbac.ts) so that every organization gets their
-- current definition.
create table roles (
  id uuid primary key,
  org_id uuid not null references organizations (id) on delete cascade,
  name text not null,
  created_at timestamptz not null default now(),
  unique (org_id, name),
  unique (org_id, id)
);

create table role_permissions (
  org_id uuid not null,
  role_id uuid not null,
  permission text not null,
  primary key (role_id, permission),
  foreign key (org_id, role_id) references roles (org_id, id) on delete cascade
);

-- A member's roles by name: a built-in name or a custom role of the same organization.
create table member_roles (
  org_id uuid not null,
  user_id uuid not null,
  role text not null,
  primary key (org_id, user_id, role),
  foreign key (org_id, user_id) references memberships (org_id, user_id) on delete cascade
);

create table teams (
  id uuid primary key,
  org_id uuid not null references organizations (id) on delete cascade,
  name text not null,
  created_at timestamptz not null default now(),
  unique (org_id, name),
  unique (org_id, id)
);

create table team_members (
  org_id uuid not null,
  team_id uuid not null,
  user_id uuid not null,
  added_at timestamptz not null default now(),
  primary key (team_id, user_id),
  foreign key (org_id, team_id) references teams (org_id, id) on delete cascade,
  foreign key (org_id, user_id) references memberships (org_id, user_id) on delete cascade
);

create table invitations (
  id uuid primary key,
  org_id uuid not null references organizations (id) on delete cascade,
  email citext not null,
  role text not null,
  token_hash bytea not null unique,
  invited_by uuid references users (id) on delete set null,
  created_at timestamptz not null default now(),
  expires_at timestamptz not null,
  accepted_at timestamptz,
  accepted_by uuid references users (id) on delete set null,
  revoked_at timestamptz
);
create index invitations_org_idx on invitations (org_id, created_at desc);

create table api_keys (
  id uuid primary key,
  org_id uuid not null references organizations (id) on delete cascade,
  name text not null,
  -- The first characters of the key, shown in lists so people can tell keys apart; not enough to use it.
  prefix text not null,
  key_hash bytea not null unique,
  roles text[] not null,
  created_by uuid references users (id) on delete set null,
  created_at timestamptz not null default now(),
  last_used_at timestamptz,
  revoked_at timestamptz
);
create index api_keys_org_idx on api_keys (org_id);

create table projects (
  id uuid primary key,
  org_id uuid not null references organizations (id) on delete cascade,
  team_id uuid,
  name text not null,
  description text not null default '',
  status text not null default 'active' check (status in ('active', 'archived')),
  version integer not null default 1,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  -- A project's team must belong to the same organization.
  foreign key (org_id, team_id) references teams (org_id, id) on delete set null (team_id)
);
-- Keyset pagination walks (org_id, id); ids are UUIDv7, so this is creation order.
create index projects_org_idx on projects (org_id, id);

create table audit_log (
  id uuid primary key,
  org_id uuid not null references organizations (id) on delete cascade,
  at timestamptz not null default now(),
  actor_type text not null,
  actor_id text not null,
  action text not null,
  target_type text not null,
  target_id text not null,
  request_id text,
  changes jsonb not null default '{}'
);
create index audit_log_org_idx on audit_log (org_id, id desc);

-- Job records. The queue itself (JetStream) arrives with the durable-jobs work; commands record their jobs here
-- already so that nothing they promised is lost.
create table jobs (
  id uuid primary key,
  org_id uuid references organizations (id) on delete cascade,
  name text not null,
  queue text not null default 'default',
  status text not null default 'queued' check (status in ('queued', 'running', 'succeeded', 'failed', 'dead')),
  payload jsonb not null default '{}',
  attempts integer not null default 0,
  idempotency_key text unique,
  request_id text,
  result jsonb,
  error text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index jobs_org_idx on jobs (org_id, created_at desc);

-- The application role: tenant transactions switch to it (`set local role`), and it cannot bypass row-level
-- security. Roles are cluster-wide, so several databases (test runs) may race to create it.
do $$
begin
  create role actorbase_app nologin nosuperuser nobypassrls;
exception when duplicate_object or unique_violation then null;
end
$$;
grant actorbase_app to current_user;
grant usage on schema public to actorbase_app;
grant select on users to actorbase_app;

do $$
declare
  t text;
begin
  foreach t in array array['memberships', 'roles', 'role_permissions', 'member_roles', 'teams', 'team_members',
                           'invitations', 'api_keys', 'projects', 'audit_log', 'jobs'] loop
    execute format('alter table %I enable row level security', t);
    execute format('create policy tenant on %I using (org_id = nullif(current_setting(''app.org_id'', true), '''')::uuid)', t);
    execute format('grant select, insert, update, delete on %I to actorbase_app', t);
  end loop;
end
$$;
alter table organizations enable row level security;
create policy tenant on organizations using (id = nullif(current_setting('app.org_id', true), '')::uuid);
grant select, insert, update, delete on organizations to actorbase_app;
