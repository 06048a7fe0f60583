import { loadConfig, ConfigError } from '../core/config.js'
import { createLogger } from '../core/log.js'
import { migrate, migrationsDir } from './migrate.js'
import { createSql } from './postgres.js'

// `npm run migrate`: apply pending migrations and exit.
try {
  const config = loadConfig(process.env)
  const log = createLogger({ level: config.logLevel, pretty: config.logPretty, nodeId: config.nodeId })
  const sql = createSql({ url: config.databaseUrl, max: 1, applicationName: 'actorbase-migrate', deadClientSeconds: config.dbDeadClientS })
  try {
    const applied = await migrate(sql, migrationsDir, log)
    log.info({ applied }, applied.length ? `applied ${applied.length} migration(s)` : 'database is up to date')
  } finally {
    await sql.end({ timeout: 5 })
  }
} catch (err) {
  const message = err instanceof ConfigError ? err.message : `migration failed: ${err instanceof Error ? err.message : String(err)}`
  process.stderr.write(`${message}\n`)
  process.exit(1)
}
