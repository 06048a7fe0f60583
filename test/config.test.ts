import { describe, expect, inject, test } from 'vitest'
import { ConfigError, loadConfig } from '../core/config.js'
import { exited, spawnMain } from './support/child.js'

describe('configuration', () => {
  test('defaults are the documented ones', () => {
    const config = loadConfig({})
    expect(config).toMatchObject({
      port: 8080,
      host: '0.0.0.0',
      databaseUrl: 'postgres://postgres@127.0.0.1:5432/app',
      natsUrl: 'nats://127.0.0.1:4222',
      redisUrl: 'redis://127.0.0.1:6379',
      namespace: 'app',
      corsOrigins: [],
      logLevel: 'info',
      migrateOnStart: true,
    })
    expect([...config.roles]).toEqual(['gateway', 'actors', 'workers'])
    expect(config.nodeId).toMatch(/^[A-Za-z0-9_-]+$/)
  })

  test('values are parsed from their string form', () => {
    const config = loadConfig({
      PORT: '9000',
      ROLES: 'gateway, workers',
      CORS_ORIGINS: 'https://app.example.com,http://localhost:3000',
      MIGRATE_ON_START: 'false',
      NODE_ID: 'node-a',
    })
    expect(config.port).toBe(9000)
    expect([...config.roles]).toEqual(['gateway', 'workers'])
    expect(config.corsOrigins).toEqual(['https://app.example.com', 'http://localhost:3000'])
    expect(config.migrateOnStart).toBe(false)
    expect(config.nodeId).toBe('node-a')
  })

  test.each([
    ['PORT', 'eighty'],
    ['PORT', '70000'],
    ['DATABASE_URL', 'mysql://localhost/app'],
    ['NATS_URL', 'not a url'],
    ['REDIS_URL', 'http://localhost'],
    ['NAMESPACE', 'has.dots'],
    ['ROLES', 'gateway,cook'],
    ['CORS_ORIGINS', 'https://app.example.com/path'],
    ['LOG_LEVEL', 'loud'],
    ['MIGRATE_ON_START', 'maybe'],
    ['DB_SILENCE_TIMEOUT_MS', '0'],
    ['NODE_ID', 'spaces are bad'],
  ])('a bad %s (%s) is refused with a message naming it', (name, value) => {
    expect(() => loadConfig({ [name]: value })).toThrow(ConfigError)
    expect(() => loadConfig({ [name]: value })).toThrow(new RegExp(`^invalid configuration: ${name}: `))
  })

  test('every bad variable is named at once', () => {
    expect(() => loadConfig({ PORT: 'x', LOG_LEVEL: 'y' })).toThrow(/PORT: .*; LOG_LEVEL: /)
  })
})

describe('start-up failures', () => {
  test('invalid configuration exits non-zero with one line naming the variable', async () => {
    const result = await exited(spawnMain({ PORT: 'eighty' }))
    expect(result.code).toBe(1)
    expect(result.stderr.trim().split('\n')).toHaveLength(1)
    expect(result.stderr).toMatch(/^invalid configuration: PORT: /)
  })

  test('an unreachable dependency exits non-zero after the bounded wait, naming it', async () => {
    const started = Date.now()
    const result = await exited(
      spawnMain({ DATABASE_URL: 'postgres://postgres@127.0.0.1:1/app', STARTUP_TIMEOUT_MS: '800', NAMESPACE: inject('namespace') }),
    )
    expect(result.code).toBe(1)
    expect(result.stderr.trim().split('\n')).toHaveLength(1)
    expect(result.stderr).toMatch(/^start-up failed: cannot reach Postgres at postgres:\/\/postgres@127\.0\.0\.1:1\/app/)
    expect(Date.now() - started).toBeLessThan(15_000)
  })
})
