import { inject } from 'vitest'
import { loadConfig, type Config } from '../../core/config.js'
import { createLogger } from '../../core/log.js'
import { startNode, type AppNode, type StartOptions } from '../../main.js'

/** Configuration for an in-process node of this test run: port 0, the run's database and namespace. */
export function testConfig(overrides: Record<string, string> = {}): Config {
  return loadConfig({
    DATABASE_URL: inject('databaseUrl'),
    NAMESPACE: inject('namespace'),
    HOST: '127.0.0.1',
    PORT: '0',
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent',
    STARTUP_TIMEOUT_MS: '10000',
    ...overrides,
  })
}

export interface TestNode extends AppNode {
  url: string
}

export async function startTestNode(overrides: Record<string, string> = {}, options: StartOptions = {}): Promise<TestNode> {
  const config = testConfig(overrides)
  const log = createLogger({ level: config.logLevel, pretty: false, nodeId: config.nodeId })
  const node = await startNode(config, { log, ...options })
  return Object.assign(node, { url: `http://127.0.0.1:${node.port}` })
}
