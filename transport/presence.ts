import type { JetStreamManager } from '@nats-io/jetstream'
import type { KV } from '@nats-io/kv'
import type { Msg, NatsConnection, Subscription } from '@nats-io/transport-node'
import { unavailable } from '../core/errors.js'
import { parseChannel } from '../core/events.js'
import { withTimeout } from '../core/timeout.js'
import type { Logger } from '../core/log.js'

export interface PresenceMember {
  userId: string
  connections: number
}

export interface PresenceOptions {
  kv: KV
  /** The connection the KV bucket lives on: live changes are read as plain messages on it. */
  nc: NatsConnection
  /** Lists which keys of a channel are stored (the bucket's stream, by subject). */
  jsm: JetStreamManager
  bucket: string
  nodeId: string
  /** A node's entry not refreshed for this long is dropped: how quickly a dead node's users leave. */
  ttlMs: number
  log: Logger
  /** Called with the users who came and went on a channel this node watches. */
  onDiff(channel: string, joins: string[], leaves: string[]): void
}

interface NodeEntry {
  users: Record<string, number>
  seenAt: number
}

interface Watched {
  nodes: Map<string, NodeEntry>
  totals: Map<string, number>
  sub: Subscription | undefined
  /** Sockets following the channel here; counted once the first read of the stored entries is done. */
  users: number
  /** That first read, while it runs. */
  loading: Promise<void> | undefined
}

const WRITE_WINDOW_MS = 10
/** A subscribe waits this long at most for the stored presence: NATS not answering is an error, not a hang. */
const READ_TIMEOUT_MS = 5_000

const safeNode = (nodeId: string) => nodeId.replace(/[^A-Za-z0-9_-]/g, '_')

const decoder = new TextDecoder()

/**
 * Who is online on each org channel, across nodes. Every node writes, per channel, how many of its sockets
 * each user has there (KV key `<orgId>.<node>`), and rewrites it every third of the TTL as a heartbeat.
 * Nodes with subscribers on a channel watch that channel's keys and turn changes in the per-user totals into
 * join and leave diffs: a user joins when their first connection anywhere subscribes and leaves when their
 * last one goes, including when the node holding it stops refreshing (it died).
 *
 * A channel is watched with a plain subscription to its keys' subjects (a KV put is a message on
 * `$KV.<bucket>.<key>`, which every subscriber receives as the stream stores it) and one read of the entries
 * already there, not with a KV watcher: a watcher is an ordered consumer on the server and some dozens of
 * objects here, for every channel a node serves.
 */
export function createPresence(o: PresenceOptions) {
  const node = safeNode(o.nodeId)
  const local = new Map<string, Map<string, number>>()
  const watched = new Map<string, Watched>()
  const keyOf = (channel: string, n = node) => `${parseChannel(channel)!.id}.${n}`

  const write = (channel: string) => {
    const users = local.get(channel)
    const key = keyOf(channel)
    const op = users && users.size > 0 ? o.kv.put(key, JSON.stringify(Object.fromEntries(users))) : o.kv.delete(key)
    op.catch((err: unknown) => o.log.warn({ err, channel }, 'presence not written'))
  }
  // Joins and leaves within a few milliseconds make one write per channel: a reconnect storm (a node gone, its
  // sockets arriving here) would otherwise write a channel's entry once per socket.
  const dirty = new Set<string>()
  let flushing: NodeJS.Timeout | undefined
  const writeSoon = (channel: string) => {
    dirty.add(channel)
    flushing ??= setTimeout(() => {
      flushing = undefined
      for (const c of dirty) write(c)
      dirty.clear()
    }, WRITE_WINDOW_MS)
  }

  const recompute = (channel: string, w: Watched) => {
    const now = Date.now()
    const totals = new Map<string, number>()
    for (const [n, entry] of w.nodes) {
      if (now - entry.seenAt > o.ttlMs) {
        w.nodes.delete(n)
        continue
      }
      for (const [user, count] of Object.entries(entry.users)) totals.set(user, (totals.get(user) ?? 0) + count)
    }
    const joins = [...totals.keys()].filter((u) => !w.totals.has(u))
    const leaves = [...w.totals.keys()].filter((u) => !totals.has(u))
    w.totals = totals
    if (joins.length > 0 || leaves.length > 0) o.onDiff(channel, joins, leaves)
  }

  /** Follows a channel's keys: a subscription for what is written from now on, then one read of what is stored. */
  const load = async (channel: string, w: Watched): Promise<void> => {
    const prefix = `${parseChannel(channel)!.id}.`
    const subjectPrefix = `$KV.${o.bucket}.${prefix}`
    // Nodes heard from live while the stored entries are read: what was read of them may be older.
    let live: Set<string> | undefined = new Set<string>()
    const onMessage = (err: Error | null, msg: Msg) => {
      if (err || watched.get(channel) !== w) return
      const n = msg.subject.slice(subjectPrefix.length)
      const operation = msg.headers?.get('KV-Operation')
      live?.add(n)
      if (operation === 'DEL' || operation === 'PURGE') w.nodes.delete(n)
      else {
        try {
          w.nodes.set(n, { users: JSON.parse(decoder.decode(msg.data)) as Record<string, number>, seenAt: Date.now() })
        } catch {
          return
        }
      }
      recompute(channel, w)
    }
    w.sub = o.nc.subscribe(`${subjectPrefix}*`, { callback: onMessage })
    try {
      // Subscribed first, so nothing written from here on is missed; then what was there before. The keys come
      // from the stream's subject counts (one request, no consumer: kv.keys() can wait for ever when a key is
      // written while it lists).
      const stored = async () => {
        const info = await o.jsm.streams.info(`KV_${o.bucket}`, { subjects_filter: `${subjectPrefix}*` })
        const keys = Object.keys(info.state.subjects ?? {}).map((subject) => subject.slice(`$KV.${o.bucket}.`.length))
        return Promise.all(keys.map((key) => o.kv.get(key)))
      }
      const entries = await withTimeout(stored(), READ_TIMEOUT_MS, `presence of ${channel}`)
      for (const e of entries) {
        const n = e?.key.slice(prefix.length)
        if (!e || n === undefined || live.has(n) || e.operation !== 'PUT') continue
        // A stored entry older than the TTL is a node that stopped refreshing: not present.
        w.nodes.set(n, { users: e.json<Record<string, number>>(), seenAt: Math.min(Date.now(), e.created.getTime()) })
      }
      live = undefined
      recompute(channel, w)
    } catch (err) {
      w.sub.unsubscribe()
      if (watched.get(channel) === w) watched.delete(channel)
      throw unavailable('presence', err)
    }
  }

  const heartbeat = setInterval(() => {
    for (const channel of local.keys()) write(channel)
    for (const [channel, w] of watched) recompute(channel, w)
  }, Math.max(100, Math.floor(o.ttlMs / 3)))
  heartbeat.unref()

  return {
    /** A socket of `userId` subscribed to `channel` on this node. */
    join(channel: string, userId: string): void {
      const users = local.get(channel) ?? new Map<string, number>()
      users.set(userId, (users.get(userId) ?? 0) + 1)
      local.set(channel, users)
      writeSoon(channel)
    },
    leave(channel: string, userId: string): void {
      const users = local.get(channel)
      if (!users) return
      const n = (users.get(userId) ?? 0) - 1
      if (n > 0) users.set(userId, n)
      else users.delete(userId)
      if (users.size === 0) local.delete(channel)
      writeSoon(channel)
    },
    /** Starts following a channel (first local subscriber); every `watch` needs an `unwatch`. */
    async watch(channel: string): Promise<void> {
      for (let existing = watched.get(channel); existing; existing = watched.get(channel)) {
        // Counted only once the first read is done: if it fails, this caller fails too and holds nothing.
        if (existing.loading) await existing.loading
        if (watched.get(channel) === existing) {
          existing.users++
          return
        }
      }
      const w: Watched = { nodes: new Map(), totals: new Map(), sub: undefined, users: 1, loading: undefined }
      watched.set(channel, w)
      w.loading = load(channel, w)
      try {
        await w.loading
      } finally {
        w.loading = undefined
      }
    },
    unwatch(channel: string): void {
      const w = watched.get(channel)
      if (!w || --w.users > 0) return
      w.sub?.unsubscribe()
      watched.delete(channel)
    },
    members(channel: string): PresenceMember[] {
      const w = watched.get(channel)
      if (!w) return []
      return [...w.totals].map(([userId, connections]) => ({ userId, connections })).sort((a, b) => a.userId.localeCompare(b.userId))
    },
    /** Users present, summed over watched channels (a metric). */
    size(): number {
      let n = 0
      for (const w of watched.values()) n += w.totals.size
      return n
    },
    /** Removes this node's entries, so others see its users leave at once rather than after the TTL. */
    async stop(): Promise<void> {
      clearInterval(heartbeat)
      clearTimeout(flushing)
      // Channels whose last local user left just now are only in `dirty`: their entries go too.
      const mine = new Set([...local.keys(), ...dirty])
      dirty.clear()
      for (const w of watched.values()) w.sub?.unsubscribe()
      watched.clear()
      await Promise.allSettled([...mine].map((channel) => o.kv.delete(keyOf(channel))))
      local.clear()
    },
  }
}

export type Presence = ReturnType<typeof createPresence>
