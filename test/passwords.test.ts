import argon2 from 'argon2'
import { afterAll, beforeAll, expect, inject, test } from 'vitest'
import { createPasswordHasher } from '../core/passwords.js'
import { freshEmail, json, password, problem, register } from './support/identity.js'
import { startTestNode, type TestNode } from './support/node.js'

let node: TestNode
beforeAll(async () => {
  node = await startTestNode({ NAMESPACE: `${inject('namespace')}_pw` })
})
afterAll(() => node.shutdown())

test('passwords are stored as argon2id with at least OWASP parameters, and weaker hashes are upgraded at login', async () => {
  const email = freshEmail()
  const { user } = await register(node.url, email)
  const [stored] = await node.sql<{ hash: string }[]>`select hash from password_credentials where user_id = ${user.id}`
  expect(stored!.hash).toMatch(/^\$argon2id\$v=19\$m=19456,p=1,t=2\$/)

  const weak = await argon2.hash(password, { type: argon2.argon2id, memoryCost: 4096, timeCost: 1, parallelism: 1 })
  await node.sql`update password_credentials set hash = ${weak} where user_id = ${user.id}`
  expect((await fetch(`${node.url}/v1/auth/login`, json({ email, password }))).status).toBe(200)
  const [upgraded] = await node.sql<{ hash: string }[]>`select hash from password_credentials where user_id = ${user.id}`
  expect(upgraded!.hash).toMatch(/^\$argon2id\$v=19\$m=19456,p=1,t=2\$/)
  expect(await argon2.verify(upgraded!.hash, password)).toBe(true)
})

test('hashing runs at most `concurrency` at once; beyond the queue, callers get 503 at once', async () => {
  const hasher = await createPasswordHasher({ concurrency: 1, maxWaiting: 2 })
  const results = await Promise.allSettled(Array.from({ length: 5 }, () => hasher.hash('some long password')))
  expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(3)
  const refused = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected')
  expect(refused.map((r) => (r.reason as { code: string }).code)).toEqual(['unavailable', 'unavailable'])
})

test('a sign-in storm beyond the hashing queue is answered 503, not queued without bound', async () => {
  const small = await startTestNode({ NAMESPACE: `${inject('namespace')}_pwq`, PASSWORD_HASH_CONCURRENCY: '1', PASSWORD_HASH_QUEUE: '1' })
  try {
    const answers = await Promise.all(Array.from({ length: 6 }, () => fetch(`${small.url}/v1/auth/login`, json({ email: freshEmail(), password: 'a wrong password' }))))
    const statuses = answers.map((r) => r.status)
    expect(statuses.filter((s) => s === 401).length).toBeGreaterThanOrEqual(2)
    const busy = answers.filter((r) => r.status === 503)
    expect(busy.length).toBeGreaterThanOrEqual(1)
    await problem(busy[0]!, 503, 'unavailable')
  } finally {
    await small.shutdown()
  }
})
