import { randomBytes } from 'node:crypto'
import { connect } from '@nats-io/transport-node'
import { Redis } from 'ioredis'
import postgres from 'postgres'
import type { TestProject } from 'vitest/node'
import { dropStreamsWithPrefix } from '../../storage/nats.js'
import { removeDropsTagged } from './packet-drop.js'
import { adminUrl, natsUrl, redisUrl, withDatabase } from './services.js'

declare module 'vitest' {
  export interface ProvidedContext {
    databaseUrl: string
    namespace: string
  }
}

/** One database, one NATS namespace and one Redis prefix per test run; all removed afterwards. */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const runId = randomBytes(4).toString('hex')
  const database = `test_${runId}`
  const namespace = `t${runId}`
  const admin = postgres(adminUrl, { max: 1, onnotice: () => {} })
  await admin.unsafe(`create database ${database}`)
  project.provide('databaseUrl', withDatabase(database))
  project.provide('namespace', namespace)

  return async () => {
    // Packet drops (test/support/packet-drop.ts) are tagged with the namespace or one of its sub-namespaces.
    await removeDropsTagged(namespace)
    await admin.unsafe(`drop database if exists ${database} with (force)`)
    // Databases made by single tests that failed before cleaning up after themselves.
    const strays = await admin<{ datname: string }[]>`select datname from pg_database where datname like ${`${database}_%`}`
    for (const { datname } of strays) await admin.unsafe(`drop database if exists ${datname} with (force)`)
    await admin.end()
    const nc = await connect({ servers: natsUrl })
    // Suites that need settings of their own (a short lease TTL, say) use `<namespace>_<suffix>`.
    await dropStreamsWithPrefix(nc, namespace)
    await nc.close()
    // `<namespace>*`: the run's own keys and those of its sub-namespaces (`<namespace>_<suite>:...`).
    const redis = new Redis(redisUrl)
    for (let cursor = '0'; ; ) {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${namespace}*`, 'COUNT', 1000)
      if (keys.length) await redis.del(...keys)
      cursor = next
      if (cursor === '0') break
    }
    await redis.quit()
  }
}
