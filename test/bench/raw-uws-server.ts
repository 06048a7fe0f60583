/**
 * The baseline: the smallest possible uWebSockets.js server answering the same body as GET /health, and
 * accepting WebSockets on `/ws` (the `ws-fanout` memory baseline): each socket joins the topic named by its
 * `?topic=` query, if any, and nothing else is kept per socket.
 * Usage: tsx test/bench/raw-uws-server.ts [port]  (port 0 or absent: any free port).
 * Prints `{"port":<n>}` on stdout once listening; exits on SIGTERM/SIGINT.
 */
import uWS, { type us_listen_socket } from 'uWebSockets.js'

if (typeof uWS.getParts !== 'function') {
  // Same guard as transport/http-server.ts: never measure the slow JS fallback by mistake.
  process.stderr.write(`uWebSockets.js native build did not load for Node ${process.version}\n`)
  process.exit(1)
}

const requested = Number(process.argv[2] ?? process.env.PORT ?? 0)
const host = process.env.HOST ?? '127.0.0.1'
let listening: us_listen_socket | undefined

uWS
  .App()
  .get('/*', (res) => {
    res.end('{"status":"ok"}')
  })
  .ws<{ topic: string }>('/ws', {
    upgrade(res, req, context) {
      const topic = new URLSearchParams(req.getQuery() ?? '').get('topic') ?? ''
      res.upgrade({ topic }, req.getHeader('sec-websocket-key'), req.getHeader('sec-websocket-protocol'), req.getHeader('sec-websocket-extensions'), context)
    },
    open(ws) {
      const { topic } = ws.getUserData()
      if (topic) ws.subscribe(topic)
    },
  })
  .listen(host, requested, (socket) => {
    if (!socket) {
      process.stderr.write(`raw uWS server cannot listen on ${host}:${requested}\n`)
      process.exit(1)
    }
    listening = socket
    process.stdout.write(`${JSON.stringify({ port: uWS.us_socket_local_port(socket) })}\n`)
  })

const stop = () => {
  if (listening) uWS.us_listen_socket_close(listening)
  process.exit(0)
}
process.once('SIGTERM', stop)
process.once('SIGINT', stop)
