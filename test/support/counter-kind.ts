import { z } from 'zod'
import { expectFenced } from '../../actors/errors.js'
import { defineKind, type ActorKind } from '../../actors/kind.js'
import type { ActorSystem } from '../../actors/system.js'
import { AppError } from '../../core/errors.js'
import type { Sql } from '../../storage/postgres.js'
import { defineRoute, type Route } from '../../transport/route.js'

export interface Counter {
  value: number
  version: number
  /** In memory only: what `append` saw, in order. */
  appended: string[]
}

export async function ensureCounterTable(sql: Sql): Promise<void> {
  await sql`create table if not exists test_counters (
    id text primary key, value integer not null default 0, version integer not null default 0, loads integer not null default 0)`
}

/** A versioned counter in Postgres: the smallest actor that shows activation, fencing and ordering. */
export function counterKind(sql: Sql, options: { name?: string; idleTimeoutMs?: number; mailboxCapacity?: number; gate?: Promise<void> } = {}): ActorKind<unknown> {
  return defineKind<Counter>({
    name: options.name ?? 'counter',
    ...(options.idleTimeoutMs ? { idleTimeoutMs: options.idleTimeoutMs } : {}),
    ...(options.mailboxCapacity ? { mailboxCapacity: options.mailboxCapacity } : {}),
    async load(id) {
      // Counting loads in the row itself shows single activation across processes.
      const [row] = await sql<{ value: number; version: number }[]>`
        insert into test_counters (id, loads) values (${id}, 1)
        on conflict (id) do update set loads = test_counters.loads + 1
        returning value, version`
      return { value: row!.value, version: row!.version, appended: [] }
    },
    async handle(state, command, ctx) {
      switch (command.type) {
        case 'get':
          return { reply: { value: state.value, version: state.version } }
        case 'add':
        case 'add-slow': {
          const by = Number(command.by)
          if (command.type === 'add-slow') {
            ctx.log.info({ id: ctx.id }, 'slow add waiting')
            await new Promise((r) => setTimeout(r, Number(command.delayMs)))
          }
          const result = await sql`update test_counters set value = ${state.value + by}, version = version + 1
                                   where id = ${ctx.id} and version = ${state.version}`
          expectFenced(result.count, `counter ${ctx.id}`, state.version)
          const next = { ...state, value: state.value + by, version: state.version + 1 }
          return { state: next, reply: { value: next.value, version: next.version } }
        }
        case 'append':
          return { state: { ...state, appended: [...state.appended, String(command.item)] }, reply: state.appended.length + 1 }
        case 'appended':
          return { reply: state.appended }
        case 'refuse-after-compute': {
          // Computes a next state, then refuses: the actor must keep the state it had.
          const next = { ...state, value: state.value + 1000 }
          if (next.value > -1) throw new AppError('conflict', 'refused on purpose')
          return { state: next }
        }
        case 'crash':
          throw new Error('handler bug')
        case 'wait':
          await options.gate
          return { reply: 'waited' }
        case 'whoami':
          return { reply: { principal: ctx.principal, requestId: ctx.requestId } }
        default:
          throw new AppError('bad_request', `unknown command ${command.type}`)
      }
    },
  })
}

/** HTTP probes so a test can drive a child-process node's actors through its own gateway. */
export function counterRoutes(actors: ActorSystem): Route[] {
  const params = z.object({ id: z.string() })
  return [
    defineRoute({
      method: 'get',
      path: '/test/counters/:id',
      operationId: 'getCounter',
      summary: 'read a counter through the actor',
      tags: ['test'],
      params,
      responses: { 200: { description: 'value' } },
      handler: async ({ params: p, requestId }) => ({ status: 200, body: await actors.ask('counter', p.id, { type: 'get' }, { requestId }) }),
    }),
    defineRoute({
      method: 'post',
      path: '/test/counters/:id',
      operationId: 'addCounter',
      summary: 'add through the actor',
      tags: ['test'],
      params,
      body: z.object({ by: z.number().int(), delayMs: z.number().int().optional() }),
      responses: { 200: { description: 'value' } },
      handler: async ({ params: p, body, requestId }) => ({
        status: 200,
        body: await actors.ask('counter', p.id, { type: body.delayMs ? 'add-slow' : 'add', ...body }, { requestId }),
      }),
    }),
  ]
}
