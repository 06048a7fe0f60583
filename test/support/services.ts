import { randomBytes } from 'node:crypto'
import postgres from 'postgres'

// The services every test talks to; CI and developers run them on loopback (deploy/services.sh).
export const adminUrl = process.env.TEST_ADMIN_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres'
export const natsUrl = process.env.TEST_NATS_URL ?? 'nats://127.0.0.1:4222'
export const redisUrl = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379'

export function withDatabase(database: string): string {
  const url = new URL(adminUrl)
  url.pathname = `/${database}`
  return url.toString()
}

/** A database of its own for one test (named after the run's, so the run's teardown also finds strays). */
export async function scratchDatabase(runDatabaseUrl: string): Promise<{ url: string; drop: () => Promise<void> }> {
  const base = new URL(runDatabaseUrl).pathname.slice(1)
  const name = `${base}_${randomBytes(3).toString('hex')}`
  const admin = postgres(adminUrl, { max: 1, onnotice: () => {} })
  await admin.unsafe(`create database ${name}`)
  return {
    url: withDatabase(name),
    drop: async () => {
      await admin.unsafe(`drop database if exists ${name} with (force)`)
      await admin.end()
    },
  }
}
