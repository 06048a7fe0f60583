import type { ChannelEvent } from '../core/events.js'
import type { Queryable } from './postgres.js'

interface Row {
  id: string
  channel: string
  seq: string
  type: string
  data: unknown
  requestId: string | null
  at: Date
}

const toEvent = (r: Row): ChannelEvent => ({
  id: r.id,
  channel: r.channel,
  seq: Number(r.seq),
  type: r.type,
  data: r.data,
  at: r.at.toISOString(),
  ...(r.requestId ? { requestId: r.requestId } : {}),
})

/** Writes events (already numbered) and moves the channel's counter to the last of them. */
export async function insertEvents(sql: Queryable, events: readonly ChannelEvent[]): Promise<void> {
  if (events.length === 0) return
  const rows = events.map((e) => ({ id: e.id, channel: e.channel, seq: e.seq, type: e.type, data: e.data, request_id: e.requestId ?? null, at: e.at }))
  const last = new Map<string, number>()
  for (const e of events) last.set(e.channel, Math.max(last.get(e.channel) ?? 0, e.seq))
  await Promise.all([
    sql`insert into outbox ${sql(rows as never, 'id', 'channel', 'seq', 'type', 'data', 'request_id', 'at')}`,
    ...[...last].map(
      ([channel, seq]) => sql`insert into channel_seqs (channel, seq) values (${channel}, ${seq}) on conflict (channel) do update set seq = excluded.seq`,
    ),
  ])
}

/** The last number given out on a channel (0 when none was). */
export async function channelSeq(sql: Queryable, channel: string): Promise<number> {
  const [row] = await sql<{ seq: string }[]>`select seq from channel_seqs where channel = ${channel}`
  return row ? Number(row.seq) : 0
}

export async function unpublishedEvents(sql: Queryable, channel: string, limit = 1_000, afterSeq = 0): Promise<ChannelEvent[]> {
  const rows = await sql<Row[]>`
    select id, channel, seq, type, data, request_id as "requestId", at from outbox
    where channel = ${channel} and published_at is null and seq > ${afterSeq} order by seq limit ${limit}`
  return rows.map(toEvent)
}

export async function markPublished(sql: Queryable, ids: readonly string[]): Promise<void> {
  if (ids.length > 0) await sql`update outbox set published_at = now() where id = any(${ids as string[]}) and published_at is null`
}

/** Channels with events committed at least `olderThanMs` ago and still not published: what the relay nudges. */
export async function channelsBehind(sql: Queryable, olderThanMs: number, limit: number): Promise<string[]> {
  const rows = await sql<{ channel: string }[]>`
    select distinct channel from outbox
    where published_at is null and at < now() - make_interval(secs => ${olderThanMs / 1000})
    limit ${limit}`
  return rows.map((r) => r.channel)
}

/** Seconds since the oldest unpublished event was committed; 0 when every event is out. */
export async function relayLagSeconds(sql: Queryable): Promise<number> {
  const [row] = await sql<{ lag: number | null }[]>`
    select extract(epoch from now() - min(at))::float8 as lag from outbox where published_at is null`
  return Math.max(0, row?.lag ?? 0)
}

/** Published events older than the retention go: their history lives in the JetStream stream. */
export async function prunePublished(sql: Queryable, olderThanHours: number): Promise<number> {
  const result = await sql`delete from outbox where published_at < now() - make_interval(hours => ${olderThanHours})`
  return result.count
}
