import { createHash } from 'node:crypto'
import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Logger } from '../core/log.js'
import type { Sql } from './postgres.js'

export const migrationsDir = new URL('./migrations/', import.meta.url).pathname

export interface Migration {
  version: number
  name: string
  sql: string
  checksum: string
}

export class MigrationError extends Error {
  override name = 'MigrationError'
}

const fileName = /^(\d{4})_([a-z0-9_]+)\.sql$/

// Any constant works as long as every node uses the same one; this is "actorbase:migrate" hashed.
const lockKey = 0x6d696772

export async function readMigrations(dir: string): Promise<Migration[]> {
  const files = (await readdir(dir)).filter((f) => f.endsWith('.sql')).sort()
  const migrations: Migration[] = []
  for (const file of files) {
    const match = fileName.exec(file)
    if (!match) throw new MigrationError(`migration file ${file} must be named NNNN_name.sql`)
    const sql = await readFile(join(dir, file), 'utf8')
    const version = Number(match[1])
    if (migrations.some((m) => m.version === version)) throw new MigrationError(`two migrations share version ${version}`)
    migrations.push({ version, name: file, sql, checksum: createHash('sha256').update(sql).digest('hex') })
  }
  return migrations
}

/**
 * Applies pending migrations in order, each in its own transaction under a transaction-scoped advisory lock,
 * so nodes that start together apply each migration exactly once. A migration whose file changed after it
 * was applied stops everything: silently diverging schemas are worse than a failed start.
 */
export async function migrate(sql: Sql, dir: string, log: Logger): Promise<string[]> {
  const migrations = await readMigrations(dir)
  // Under the lock too: two `create table if not exists` racing on an empty database collide in the catalog.
  await sql.begin(async (tx) => {
    await tx`select pg_advisory_xact_lock(${lockKey})`
    await tx`
      create table if not exists schema_migrations (
        version integer primary key,
        name text not null,
        checksum text not null,
        applied_at timestamptz not null default now()
      )`
  })
  const applied: string[] = []
  for (const migration of migrations) {
    const ran = await sql.begin(async (tx) => {
      await tx`select pg_advisory_xact_lock(${lockKey})`
      const done = await tx<{ version: number; name: string; checksum: string }[]>`
        select version, name, checksum from schema_migrations order by version`
      verifyChecksums(migrations, done)
      if (done.some((d) => d.version === migration.version)) return false
      await tx.unsafe(migration.sql)
      await tx`insert into schema_migrations (version, name, checksum)
               values (${migration.version}, ${migration.name}, ${migration.checksum})`
      return true
    })
    if (ran) {
      applied.push(migration.name)
      log.info({ migration: migration.name }, 'migration applied')
    }
  }
  return applied
}

function verifyChecksums(migrations: Migration[], done: { version: number; name: string; checksum: string }[]): void {
  for (const row of done) {
    const file = migrations.find((m) => m.version === row.version)
    // A newer node may have applied migrations this node does not know yet (rolling deploys): not an error.
    if (file && file.checksum !== row.checksum) {
      throw new MigrationError(
        `migration ${row.name} was changed after it was applied (checksum ${row.checksum.slice(0, 12)} in the database, ` +
          `${file.checksum.slice(0, 12)} on disk); add a new migration instead of editing an applied one`,
      )
    }
  }
}
