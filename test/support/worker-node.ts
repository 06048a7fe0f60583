// A worker in its own process, for tests that kill it: `node --import tsx test/support/worker-node.ts`.
import { loadConfig } from '../../core/config.js'
import { startNode } from '../../main.js'
import { testJobs } from './test-jobs.js'

const node = await startNode(loadConfig(process.env), { jobs: ({ sql }) => testJobs(sql) })
node.log.info({ port: node.port }, 'worker node ready')
process.once('SIGTERM', () => void node.shutdown().then(() => process.exit(0)))
