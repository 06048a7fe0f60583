import { createServer, type Server, type Socket } from 'node:net'
import { SMTPServer, type SMTPServerAddress } from 'smtp-server'
import { afterAll, beforeAll, describe, expect, inject, test } from 'vitest'
import { createSmtpTransport } from '../storage/mailer.js'
import { eventually } from './support/eventually.js'
import { bearer, freshEmail, json, register } from './support/identity.js'
import { startTestNode, type TestNode } from './support/node.js'
import { scratchDatabase } from './support/services.js'

// Email over real SMTP: nodemailer talks to an smtp-server on loopback, and to a TCP server that never greets.
// Each node has a database of its own: a scheduler sweeps its whole database for unpublished jobs, and an
// `email.send` job of one node must never be run by a node with another mail server.
const namespace = `${inject('namespace')}_smtp`
const from = 'Actorbase Tests <mailer@actorbase.test>'
const greetingTimeoutMs = 300

interface Received {
  mailFrom: string
  rcptTo: string[]
  raw: string
}

/** A real SMTP server that keeps what it accepts; `refuse` may turn a recipient away with an SMTP error. */
async function startSmtpServer() {
  const received: Received[] = []
  const arrivals = new Set<() => void>()
  const rcptSeen = new Map<string, number>()
  let refuse: (address: string, seen: number) => Error | undefined = () => undefined
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['STARTTLS'],
    logger: false,
    closeTimeout: 1_000,
    onRcptTo(address: SMTPServerAddress, _session, callback) {
      const seen = (rcptSeen.get(address.address) ?? 0) + 1
      rcptSeen.set(address.address, seen)
      callback(refuse(address.address, seen) ?? null)
    },
    onData(stream, session, callback) {
      const chunks: Buffer[] = []
      stream.on('data', (chunk: Buffer) => chunks.push(chunk))
      stream.on('end', () => {
        received.push({
          mailFrom: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
          rcptTo: session.envelope.rcptTo.map((r) => r.address),
          raw: Buffer.concat(chunks).toString('utf8'),
        })
        for (const notify of arrivals) notify()
        callback()
      })
    },
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.server.address() as { port: number }).port
  const to = (address: string) => received.filter((m) => m.rcptTo.includes(address))
  return {
    url: `smtp://127.0.0.1:${port}`,
    to,
    rcptSeen: (address: string) => rcptSeen.get(address) ?? 0,
    refuseWith(rule: typeof refuse) {
      refuse = rule
    },
    /** The first message for `address`, as soon as the server has accepted it. */
    arrival(address: string, timeoutMs = 10_000): Promise<Received> {
      return new Promise((resolve, reject) => {
        const check = () => {
          const [first] = to(address)
          if (!first) return
          arrivals.delete(check)
          clearTimeout(timer)
          resolve(first)
        }
        const timer = setTimeout(() => {
          arrivals.delete(check)
          reject(new Error(`no email for ${address} within ${timeoutMs} ms`))
        }, timeoutMs)
        arrivals.add(check)
        check()
      })
    },
    close: () => new Promise<void>((resolve) => server.close(resolve)),
  }
}

/** Accepts TCP connections and never says a word: an SMTP server that hangs before its greeting. */
async function startSilentServer() {
  const sockets = new Set<Socket>()
  // Per connection, in order of acceptance: how long the client held it open before giving up.
  const held: (number | undefined)[] = []
  const waiting = new Set<() => void>()
  const server: Server = createServer((socket) => {
    const accepted = performance.now()
    const index = held.push(undefined) - 1
    sockets.add(socket)
    socket.on('error', () => {})
    socket.on('close', () => {
      sockets.delete(socket)
      held[index] = performance.now() - accepted
      for (const notify of waiting) notify()
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    url: `smtp://127.0.0.1:${(server.address() as { port: number }).port}`,
    accepted: () => held.length,
    /** How long the `index`th connection was held open, once the client has closed it. */
    heldOpen(index: number, timeoutMs = 10_000): Promise<number> {
      return new Promise((resolve, reject) => {
        const check = () => {
          const ms = held[index]
          if (ms === undefined) return
          waiting.delete(check)
          clearTimeout(timer)
          resolve(ms)
        }
        const timer = setTimeout(() => {
          waiting.delete(check)
          reject(new Error(`no connection closed within ${timeoutMs} ms`))
        }, timeoutMs)
        waiting.add(check)
        check()
      })
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy()
        server.close(() => resolve())
      }),
  }
}

/** The plain-text body of a single-part message, undoing its transfer encoding. */
function bodyOf(raw: string): string {
  const split = raw.indexOf('\r\n\r\n')
  const encoding = /^content-transfer-encoding:\s*(\S+)/im.exec(raw.slice(0, split))?.[1]?.toLowerCase()
  const body = raw.slice(split + 4)
  if (encoding === 'base64') return Buffer.from(body, 'base64').toString('utf8')
  if (encoding !== 'quoted-printable') return body
  const bytes = body.replace(/=\r\n/g, '').replace(/=([0-9A-F]{2})/gi, (_, hex: string) => String.fromCharCode(parseInt(hex, 16)))
  return Buffer.from(bytes, 'latin1').toString('utf8')
}

/** A header's value, unfolded. */
function header(raw: string, name: string): string | undefined {
  const head = raw.slice(0, raw.indexOf('\r\n\r\n')).replace(/\r\n[ \t]+/g, ' ')
  return new RegExp(`^${name}:[ \\t]*(.*)$`, 'im').exec(head)?.[1]
}

type Smtp = Awaited<ReturnType<typeof startSmtpServer>>
type Silent = Awaited<ReturnType<typeof startSilentServer>>
type Db = Awaited<ReturnType<typeof scratchDatabase>>

let smtp: Smtp
let silent: Silent
let dbs: Db[] = []
let node: TestNode
let stuck: TestNode

beforeAll(async () => {
  ;[smtp, silent] = await Promise.all([startSmtpServer(), startSilentServer()])
  dbs = await Promise.all([scratchDatabase(inject('databaseUrl')), scratchDatabase(inject('databaseUrl'))])
  // nodemailer reads options from the URL's query: the stuck node waits for a greeting only briefly.
  ;[node, stuck] = await Promise.all([
    startTestNode({ DATABASE_URL: dbs[0]!.url, NAMESPACE: namespace, MAIL_TRANSPORT: 'smtp', SMTP_URL: smtp.url, MAIL_FROM: from }),
    startTestNode({
      DATABASE_URL: dbs[1]!.url,
      NAMESPACE: `${namespace}silent`,
      MAIL_TRANSPORT: 'smtp',
      SMTP_URL: `${silent.url}?greetingTimeout=${greetingTimeoutMs}`,
      MAIL_FROM: from,
    }),
  ])
})
afterAll(async () => {
  await Promise.allSettled([node?.shutdown(), stuck?.shutdown()])
  await Promise.allSettled([smtp?.close(), silent?.close(), ...dbs.map((db) => db.drop())])
})

interface JobRow {
  id: string
  status: string
  attempts: number
  error: string | null
}
/** The `email.send` job for an address, read from the node's own database. */
const emailJob = async (n: TestNode, to: string) =>
  (await n.sql<JobRow[]>`select id, status, attempts, error from jobs where name = 'email.send' and payload->>'to' = ${to}`)[0]

describe('email over SMTP', () => {
  test('the verification email of a sign-up arrives by SMTP, and its link verifies the account', async () => {
    const email = freshEmail()
    const { accessToken } = await register(node.url, email)
    const mail = await smtp.arrival(email)

    expect(mail.mailFrom).toBe('mailer@actorbase.test')
    expect(mail.rcptTo).toEqual([email])
    expect(header(mail.raw, 'From')).toBe(from)
    expect(header(mail.raw, 'To')).toBe(email)
    expect(header(mail.raw, 'Subject')).toBe('Confirm your email address')
    const body = bodyOf(mail.raw)
    expect(body).toContain('Hello Ada Lovelace')
    const token = /\/verify-email\?token=([A-Za-z0-9_-]+)/.exec(body)?.[1]
    expect(token).toHaveLength(43)
    // SMTP replaced the development mailbox: nothing went there.
    expect((await node.sql`select 1 from dev_mailbox where recipient = ${email}`).length).toBe(0)

    expect((await fetch(`${node.url}/v1/auth/email/verify`, json({ token }))).status).toBe(204)
    const me = await fetch(`${node.url}/v1/users/me`, { headers: bearer(accessToken) })
    expect(await me.json()).toMatchObject({ email, emailVerified: true })
    // The job's outcome is written just after the server's 250.
    const job = await eventually(() => emailJob(node, email), (j) => j?.status === 'succeeded', 5_000, 'the email job to succeed')
    expect(job).toMatchObject({ status: 'succeeded', attempts: 1 })
  })

  test('a recipient refused with a temporary error is retried with backoff until accepted, and delivered once', async () => {
    const email = freshEmail()
    smtp.refuseWith((address, seen) =>
      address === email && seen <= 2 ? Object.assign(new Error('mailbox busy, try again later'), { responseCode: 451 }) : undefined,
    )
    await register(node.url, email)
    await smtp.arrival(email)
    const job = await eventually(() => emailJob(node, email), (j) => j?.status === 'succeeded', 5_000, 'the email job to succeed')
    expect(job).toMatchObject({ status: 'succeeded', attempts: 3 })
    expect(smtp.rcptSeen(email)).toBe(3)
    expect(smtp.to(email)).toHaveLength(1)
  })

  test('a recipient refused for good (550 no such mailbox) ends the job dead after one attempt, without retries', async () => {
    const email = freshEmail()
    smtp.refuseWith((address) => (address === email ? Object.assign(new Error('no such mailbox'), { responseCode: 550 }) : undefined))
    await register(node.url, email)
    const job = await eventually(() => emailJob(node, email), (j) => j?.status === 'dead', 5_000, 'the email job to be dead')
    expect(job).toMatchObject({ status: 'dead', attempts: 1 })
    expect(job!.error).toContain('no such mailbox')
    expect(smtp.rcptSeen(email)).toBe(1)
    expect(smtp.to(email)).toHaveLength(0)
  })
})

describe('an SMTP server that never greets', () => {
  test('a send fails after the greeting timeout given to the transport', async () => {
    const transport = createSmtpTransport(silent.url, from, { greetingTimeout: 200 })
    const began = performance.now()
    await expect(transport.send({ to: freshEmail(), subject: 'hi', body: 'hi', kind: 'test' })).rejects.toThrow('Greeting never received')
    expect(performance.now() - began).toBeLessThan(3_000)
  })

  test("the node's attempt fails within the greeting timeout, to be retried, and the node keeps serving", async () => {
    const email = freshEmail()
    const connection = silent.accepted()
    // Sign-up answers without waiting for its email.
    await register(stuck.url, email)
    const heldMs = await silent.heldOpen(connection)
    expect(heldMs).toBeGreaterThanOrEqual(greetingTimeoutMs - 50)
    expect(heldMs).toBeLessThan(3_000)
    const job = await eventually(() => emailJob(stuck, email), (j) => j?.status === 'failed', 5_000, 'the first attempt to fail')
    expect(job!.attempts).toBeGreaterThanOrEqual(1)
    expect(job!.error).toContain('Greeting never received')

    expect((await fetch(`${stuck.url}/health`)).status).toBe(200)
    expect((await fetch(`${stuck.url}/health/ready`)).status).toBe(200)
    await register(stuck.url)
  })
})
