/**
 * The baseline responder of the actor-ask benchmark: a plain nats.js subscription answering every request
 * with its own payload. Usage: `node --import tsx test/bench/nats-echo.ts <subject>` (NATS_URL from the
 * environment, default the loopback server). Prints `{"msg":"nats echo ready"}` once subscribed.
 */
import { connect } from '@nats-io/transport-node'

const subject = process.argv[2]
if (!subject) {
  process.stderr.write('usage: nats-echo.ts <subject>\n')
  process.exit(2)
}
const nc = await connect({ servers: process.env.NATS_URL ?? 'nats://127.0.0.1:4222', name: 'bench-nats-echo' })
nc.subscribe(subject, {
  callback: (_, m) => {
    m.respond(m.data)
  },
})
await nc.flush()
process.stdout.write(`${JSON.stringify({ msg: 'nats echo ready', subject })}\n`)

const stop = () =>
  void nc.close().then(
    () => process.exit(0),
    () => process.exit(1),
  )
process.once('SIGTERM', stop)
process.once('SIGINT', stop)
