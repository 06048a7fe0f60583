import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import postgres from 'postgres'
import { afterEach, beforeEach, describe, expect, inject, test } from 'vitest'
import { createLogger } from '../core/log.js'
import { migrate, MigrationError, migrationsDir, readMigrations } from '../storage/migrate.js'
import { scratchDatabase } from './support/services.js'

const log = createLogger({ level: 'silent', pretty: false, nodeId: 'test' })

describe('migrations', () => {
  let db: { url: string; drop: () => Promise<void> }
  let dir: string
  const pools: postgres.Sql[] = []
  const connect = () => {
    const sql = postgres(db.url, { max: 2, onnotice: () => {} })
    pools.push(sql)
    return sql
  }

  beforeEach(async () => {
    db = await scratchDatabase(inject('databaseUrl'))
    dir = await mkdtemp(join(tmpdir(), 'migrations-'))
    await writeFile(join(dir, '0001_widgets.sql'), 'create table widgets (id int primary key);')
    await writeFile(join(dir, '0002_runs.sql'), 'create table runs (n int); insert into runs values (1);')
  })

  afterEach(async () => {
    await Promise.all(pools.splice(0).map((p) => p.end()))
    await db.drop()
    await rm(dir, { recursive: true, force: true })
  })

  test('a fresh database gets every migration, in order, each recorded with its checksum', async () => {
    const sql = connect()
    expect(await migrate(sql, dir, log)).toEqual(['0001_widgets.sql', '0002_runs.sql'])
    const rows = await sql<{ version: number; checksum: string }[]>`select version, checksum from schema_migrations order by version`
    const files = await readMigrations(dir)
    expect(rows.map((r) => [r.version, r.checksum])).toEqual(files.map((f) => [f.version, f.checksum]))
    expect(await sql`select * from widgets`).toHaveLength(0)
  })

  test('a second run applies nothing and a new file is applied on its own', async () => {
    const sql = connect()
    await migrate(sql, dir, log)
    expect(await migrate(sql, dir, log)).toEqual([])
    await writeFile(join(dir, '0003_more.sql'), 'alter table widgets add column name text;')
    expect(await migrate(sql, dir, log)).toEqual(['0003_more.sql'])
    const [runs] = await sql<{ count: string }[]>`select count(*) from runs`
    expect(Number(runs!.count)).toBe(1)
  })

  test('an applied migration that was edited stops the run with a clear error', async () => {
    const sql = connect()
    await migrate(sql, dir, log)
    await writeFile(join(dir, '0001_widgets.sql'), 'create table widgets (id bigint primary key);')
    await writeFile(join(dir, '0003_more.sql'), 'create table later (id int);')
    await expect(migrate(sql, dir, log)).rejects.toThrow(MigrationError)
    await expect(migrate(sql, dir, log)).rejects.toThrow(/0001_widgets\.sql was changed after it was applied/)
    expect(await sql`select 1 from pg_tables where tablename = 'later'`).toHaveLength(0)
  })

  test('a failing migration is rolled back whole and not recorded', async () => {
    const sql = connect()
    await writeFile(join(dir, '0003_broken.sql'), 'create table half (id int); select no_such_function();')
    await expect(migrate(sql, dir, log)).rejects.toThrow(/no_such_function/)
    expect(await sql`select 1 from pg_tables where tablename = 'half'`).toHaveLength(0)
    expect(await sql`select version from schema_migrations where version = 3`).toHaveLength(0)
  })

  test('badly named files are refused', async () => {
    await writeFile(join(dir, 'add-things.sql'), 'select 1;')
    await expect(migrate(connect(), dir, log)).rejects.toThrow(/must be named NNNN_name\.sql/)
  })

  test('several runners started at once apply each migration exactly once', async () => {
    const runners = Array.from({ length: 4 }, () => connect())
    const results = await Promise.all(runners.map((sql) => migrate(sql, dir, log)))
    expect(results.flat().sort()).toEqual(['0001_widgets.sql', '0002_runs.sql'])
    const [runs] = await runners[0]!<{ count: string }[]>`select count(*) from runs`
    expect(Number(runs!.count)).toBe(1)
  })

  test("the project's own migrations apply cleanly to an empty database", async () => {
    const sql = connect()
    const applied = await migrate(sql, migrationsDir, log)
    expect(applied.length).toBeGreaterThan(0)
    expect(await migrate(sql, migrationsDir, log)).toEqual([])
  })
})
