import { randomUUID } from 'node:crypto'
import { Writable } from 'node:stream'
import { jetstreamManager } from '@nats-io/jetstream'
import { connect, nanos } from '@nats-io/transport-node'
import { Redis } from 'ioredis'
import postgres from 'postgres'
import { describe, expect, inject, test } from 'vitest'
import { newId } from '../core/ids.js'
import { createLogger } from '../core/log.js'
import { namesFor } from '../core/names.js'
import { dropStreams, ensureStreams } from '../storage/nats.js'
import { createRedis } from '../storage/redis.js'
import { exited, spawnChild } from './support/child.js'
import { natsUrl, redisUrl, scratchDatabase } from './support/services.js'

describe('logging', () => {
  test('secrets are redacted wherever they sit in a logged object', () => {
    const lines: string[] = []
    const sink = new Writable({ write: (chunk: Buffer, _enc, done) => (lines.push(chunk.toString()), done()) })
    const log = createLogger({ level: 'info', pretty: false, nodeId: 'n1' }, sink)
    log.info({ headers: { authorization: 'Bearer abc.def', cookie: 'sid=1', accept: 'json' }, password: 'hunter22', body: { token: 't0k', refreshToken: 'r1' } }, 'hello')
    const line = lines.join('')
    expect(line).not.toMatch(/abc\.def|sid=1|hunter22|t0k|"r1"/)
    expect(JSON.parse(line)).toMatchObject({ node: 'n1', msg: 'hello', headers: { accept: 'json', authorization: '[redacted]' } })
  })
})

describe('ids', () => {
  test('ids are UUIDv7: unique and ordered by creation', () => {
    const ids = Array.from({ length: 1000 }, () => newId())
    expect(new Set(ids).size).toBe(1000)
    for (const id of ids) expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/)
    expect([...ids].sort()).toEqual(ids)
  })
})

describe('npm run migrate', () => {
  test('applies pending migrations to the configured database and exits 0; a bad DATABASE_URL exits 1 with one line', async () => {
    const db = await scratchDatabase(inject('databaseUrl'))
    try {
      const ok = await exited(spawnChild('storage/migrate-cli.ts', { DATABASE_URL: db.url, LOG_LEVEL: 'info' }))
      expect(ok.code).toBe(0)
      const sql = postgres(db.url, { max: 1 })
      expect((await sql`select name from schema_migrations`).map((r) => r.name)).toContain('0001_init.sql')
      await sql.end()
      const bad = await exited(spawnChild('storage/migrate-cli.ts', { DATABASE_URL: 'mysql://x' }))
      expect(bad.code).toBe(1)
      expect(bad.stderr).toMatch(/^invalid configuration: DATABASE_URL: /)
    } finally {
      await db.drop()
    }
  })
})

describe('redis', () => {
  test('every key is written under the namespace prefix', async () => {
    const prefix = `${inject('namespace')}:`
    const redis = createRedis({ url: redisUrl, keyPrefix: prefix, connectTimeoutMs: 1_000 })
    await redis.connect()
    const key = `probe-${randomUUID()}`
    await redis.set(key, 'v', 'EX', 60)
    const plain = new Redis(redisUrl)
    expect(await plain.get(`${prefix}${key}`)).toBe('v')
    expect(await plain.get(key)).toBeNull()
    await Promise.all([redis.quit(), plain.quit()])
  })
})

describe('NATS streams', () => {
  test('declaring is idempotent, safe from several nodes at once, and brings settings up to date', async () => {
    const names = namesFor(`${inject('namespace')}_decl`)
    const nc = await connect({ servers: natsUrl })
    try {
      await Promise.all([1, 2, 3].map(() => ensureStreams(nc, names, { eventsMaxAgeHours: 1, eventsMaxPerChannel: 100, leaseTtlMs: 5_000 })))
      await ensureStreams(nc, names, { eventsMaxAgeHours: 2, eventsMaxPerChannel: 100, leaseTtlMs: 3_000 })
      const jsm = await jetstreamManager(nc)
      const events = await jsm.streams.info(names.eventsStream)
      expect(events.config.subjects).toEqual([`${names.namespace}.evt.>`])
      expect(events.config.max_age).toBe(nanos(2 * 3_600_000))
      expect((await jsm.streams.info(names.jobsStream)).config.retention).toBe('workqueue')
      expect((await jsm.streams.info(`KV_${names.leasesBucket}`)).config.max_age).toBe(nanos(3_000))
    } finally {
      await dropStreams(nc, names)
      await nc.close()
    }
  })
})
