// A node in its own process, for tests that kill or pause it: `node --import tsx test/support/actor-node.ts`.
import { loadConfig } from '../../core/config.js'
import { startNode } from '../../main.js'
import { counterKind, counterRoutes } from './counter-kind.js'

const node = await startNode(loadConfig(process.env), {
  kinds: ({ sql }) => [counterKind(sql)],
  routes: ({ actors }) => counterRoutes(actors),
})
node.log.info({ port: node.port, partitions: node.actors.ownedPartitions() }, 'actor node ready')
process.once('SIGTERM', () => void node.shutdown().then(() => process.exit(0)))
