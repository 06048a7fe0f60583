-- Case-insensitive text, used for e-mail addresses and slugs by later migrations.
create extension if not exists citext;
