import { Counter, Gauge, type Registry } from 'prom-client'

export interface WsMetrics {
  connections: Gauge
  subscriptions: Gauge
  delivered: Counter
  replayed: Counter
  slowReadersClosed: Counter
  closed: Counter<'code'>
  presence: Gauge
}

export function createWsMetrics(registry: Registry): WsMetrics {
  const registers = [registry]
  return {
    connections: new Gauge({ name: 'ws_connections', help: 'Open WebSocket connections on this node', registers }),
    subscriptions: new Gauge({ name: 'ws_subscriptions', help: 'Channel subscriptions of sockets on this node', registers }),
    delivered: new Counter({ name: 'ws_events_delivered_total', help: 'Live events sent to sockets (one per socket per event)', registers }),
    replayed: new Counter({ name: 'ws_events_replayed_total', help: 'Missed events sent to resuming sockets', registers }),
    slowReadersClosed: new Counter({ name: 'ws_slow_readers_closed_total', help: 'Sockets closed with 4008 for falling too far behind', registers }),
    closed: new Counter({ name: 'ws_closed_total', help: 'WebSocket connections closed by the server, by close code', labelNames: ['code'], registers }),
    presence: new Gauge({ name: 'ws_presence_users', help: 'Users present on channels this node watches (summed over channels)', registers }),
  }
}
