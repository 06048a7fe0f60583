import { z } from 'zod'
import { AppError } from '../../core/errors.js'
import { defineRoute, type Route } from '../../transport/route.js'

export const Widget = z.object({
  name: z.string().min(1).max(50),
  size: z.number().int().positive(),
  tags: z.array(z.string()).max(3).optional(),
})

/** Routes mounted only in tests, to drive the HTTP layer through every path a real feature route takes. */
export function probeRoutes(gate?: { wait: Promise<void>; entered: () => void }): Route[] {
  const received: unknown[] = []
  return [
    defineRoute({
      method: 'post',
      path: '/test/widgets',
      operationId: 'createWidget',
      summary: 'echo a widget',
      tags: ['test'],
      body: Widget,
      responses: { 201: { description: 'created', schema: Widget } },
      handler: ({ body }) => {
        received.push(body)
        return { status: 201, body }
      },
    }),
    defineRoute({
      method: 'get',
      path: '/test/widgets',
      operationId: 'listWidgets',
      summary: 'what was posted',
      tags: ['test'],
      query: z.object({ limit: z.coerce.number().int().min(1).max(100).default(20) }),
      responses: { 200: { description: 'list', schema: z.object({ items: z.array(Widget), limit: z.number() }) } },
      handler: ({ query }) => ({ status: 200, body: { items: received.slice(0, query.limit), limit: query.limit } }),
    }),
    defineRoute({
      method: 'get',
      path: '/test/widgets/:id',
      operationId: 'getWidget',
      summary: 'by id',
      tags: ['test'],
      params: z.object({ id: z.uuid() }),
      responses: { 200: { description: 'the id', schema: z.object({ id: z.string() }) } },
      handler: ({ params }) => ({ status: 200, body: { id: params.id } }),
    }),
    defineRoute({
      method: 'delete',
      path: '/test/widgets/:id',
      operationId: 'deleteWidget',
      summary: 'by id',
      tags: ['test'],
      responses: { 204: { description: 'deleted' } },
      handler: () => ({ status: 204 }),
    }),
    defineRoute({
      method: 'get',
      path: '/test/boom',
      operationId: 'boom',
      summary: 'throws a plain error',
      tags: ['test'],
      responses: {},
      handler: () => {
        throw new Error('secret internals: password=hunter2 at db.ts:12')
      },
    }),
    defineRoute({
      method: 'get',
      path: '/test/bigint',
      operationId: 'bigint',
      summary: 'answers a body JSON cannot express',
      tags: ['test'],
      responses: {},
      handler: async () => ({ status: 200, body: { n: 10n } }),
    }),
    defineRoute({
      method: 'get',
      path: '/test/conflict',
      operationId: 'conflict',
      summary: 'throws an AppError',
      tags: ['test'],
      responses: {},
      handler: async () => {
        throw new AppError('conflict', 'version 3 is stale')
      },
    }),
    defineRoute({
      method: 'get',
      path: '/test/slow',
      operationId: 'slow',
      summary: 'answers when the test opens the gate',
      tags: ['test'],
      responses: { 200: { description: 'done' } },
      handler: async () => {
        gate?.entered()
        await gate?.wait
        return { status: 200, body: { done: true } }
      },
    }),
  ]
}
