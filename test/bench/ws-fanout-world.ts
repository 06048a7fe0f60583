/**
 * The world of the `ws-fanout` benchmark, built through our public HTTP edge: one owner (the publisher) with
 * 50 organizations, each with two members who came by invitation; and how the sockets are laid out over the
 * organizations, members, client processes and source addresses.
 */
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { performance } from 'node:perf_hooks'
import type postgres from 'postgres'
import { sleep } from './harness.js'
import type { SocketSpec } from './ws-fanout-clients.js'

export const ORGS = 50
export const MEMBERS_PER_ORG = 2
const password = 'correct horse battery staple'

export interface World {
  publisher: string
  orgIds: string[]
  /** Every member's access token; member j of org i is at i * MEMBERS_PER_ORG + j. */
  tokens: string[]
}

async function post(url: string, token: string | undefined, body: unknown): Promise<Record<string, unknown>> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(30_000),
  })
  const text = await res.text()
  if (res.status !== 200 && res.status !== 201) throw new Error(`POST ${url} answered ${res.status} ${text}`)
  return JSON.parse(text) as Record<string, unknown>
}

const register = async (base: string, email: string) => String((await post(`${base}/v1/auth/register`, undefined, { email, password, name: 'Bench Fan-out' })).accessToken)

async function invitationToken(sql: postgres.Sql, email: string): Promise<string> {
  const deadline = Date.now() + 30_000
  while (Date.now() < deadline) {
    const [row] = await sql<{ token: string }[]>`select data->>'token' as token from dev_mailbox where recipient = ${email} and kind = 'invitation' limit 1`
    if (row?.token) return row.token
    await sleep(100)
  }
  throw new Error(`no invitation email reached ${email} within 30 s`)
}


export async function buildWorld(base: string, sql: postgres.Sql, log: (line: string) => void): Promise<World> {
  const started = performance.now()
  const run = randomBytes(4).toString('hex')
  const publisher = await register(base, `fanout-owner-${run}@example.com`)
  const orgIds: string[] = new Array<string>(ORGS)
  const tokens: string[] = new Array<string>(ORGS * MEMBERS_PER_ORG)
  const makeOrg = async (i: number) => {
    const org = await post(`${base}/v1/orgs`, publisher, { name: `Fan-out ${i}`, slug: `fanout-${run}-${i}` })
    orgIds[i] = String(org.id)
    for (let j = 0; j < MEMBERS_PER_ORG; j++) {
      const email = `fanout-${run}-${i}-${j}@example.com`
      await post(`${base}/v1/orgs/${orgIds[i]}/invitations`, publisher, { email, role: 'member' })
      const token = await register(base, email)
      await post(`${base}/v1/invitations/accept`, token, { token: await invitationToken(sql, email) })
      tokens[i * MEMBERS_PER_ORG + j] = token
    }
  }
  for (let i = 0; i < ORGS; i += 10) await Promise.all(Array.from({ length: Math.min(10, ORGS - i) }, (_, k) => makeOrg(i + k)))
  log(`world built in ${((performance.now() - started) / 1000).toFixed(1)} s: ${ORGS} orgs, ${ORGS * MEMBERS_PER_ORG} members by invitation`)
  return { publisher, orgIds, tokens }
}

export interface Layout {
  /** Per client process, its sockets. */
  perProc: SocketSpec[][]
  addresses: string[]
}

/**
 * Socket i belongs to org i mod 50 and to one of its members; sockets go round-robin to the client processes.
 * When one source address could run out of ephemeral ports, sockets spread over 127.0.0.2, .3, ...
 */
export function layoutSockets(world: World, clients: number, procs: number): Layout {
  const range = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number)
  const ports = (range[1] ?? 60_999) - (range[0] ?? 32_768) + 1
  // Half the range per address leaves room for sockets of the previous phase still in TIME_WAIT.
  const perAddress = clients > ports / 2 ? Math.floor(ports / 2) : Infinity
  const addresses = new Set<string>()
  const perProc: SocketSpec[][] = Array.from({ length: procs }, () => [])
  for (let i = 0; i < clients; i++) {
    const org = i % ORGS
    const member = Math.floor(i / ORGS) % MEMBERS_PER_ORG
    const localAddress = Number.isFinite(perAddress) ? `127.0.0.${2 + Math.floor(i / perAddress)}` : undefined
    addresses.add(localAddress ?? '127.0.0.1 (no bind)')
    perProc[i % procs]!.push({ token: org * MEMBERS_PER_ORG + member, channel: `org:${world.orgIds[org]}`, ...(localAddress ? { localAddress } : {}) })
  }
  return { perProc, addresses: [...addresses] }
}
