/**
 * A node hosting the bench-only `echo` actor kind, for the actor-ask benchmark:
 * `node --import tsx test/bench/actor-host-node.ts` with NAMESPACE, DATABASE_URL, ... in the environment.
 * Prints `{"msg":"actor host ready","port":<n>,"partitions":<n>}` on stdout once it holds every partition
 * (it is meant to be the only hosting node of its namespace); stops cleanly on SIGTERM/SIGINT.
 */
import { loadConfig } from '../../core/config.js'
import { startNode } from '../../main.js'
import { echoKind } from './echo-kind.js'

const config = loadConfig(process.env)
const node = await startNode(config, { kinds: () => [echoKind()] })
const deadline = Date.now() + 30_000
while (node.actors.ownedPartitions().length < config.actorPartitions) {
  if (Date.now() > deadline) {
    process.stderr.write(`holds ${node.actors.ownedPartitions().length} of ${config.actorPartitions} partitions after 30 s\n`)
    await node.shutdown()
    process.exit(1)
  }
  await new Promise((r) => setTimeout(r, 50))
}
process.stdout.write(`${JSON.stringify({ msg: 'actor host ready', port: node.port, partitions: node.actors.ownedPartitions().length })}\n`)

const stop = () =>
  void node.shutdown().then(
    () => process.exit(0),
    () => process.exit(1),
  )
process.once('SIGTERM', stop)
process.once('SIGINT', stop)
