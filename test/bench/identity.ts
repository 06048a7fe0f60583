import { expectResponse, median, round, startRawAndOurs, withIsolated, type ResultRow, type Scenario } from './harness.js'
import { runWrk, wrkRow, type WrkResult } from './wrk.js'

const ME_TARGET = 0.5
const HEALTH_P99_TARGET_MS = 20
const password = 'correct horse battery staple'

/**
 * Authenticated `GET /v1/users/me` (bearer token verified, user served from the user actor's memory) against
 * a raw uWebSockets.js hello world, measured back to back in rounds; then sign-ins at full load (argon2id on
 * the capped hashing pool) with `GET /health` probed by one connection meanwhile, to show the pool does not
 * starve the event loop.
 */
const scenario: Scenario = {
  name: 'identity',
  description: 'authenticated GET /v1/users/me vs raw uWS; login throughput; /health p99 during a login storm',
  run: (settings, log) =>
    withIsolated(log, async (isolated, servers) => {
      const { raw, ours } = await startRawAndOurs(isolated, servers, { LOGIN_MAX_ATTEMPTS_PER_IP: '1000000', PASSWORD_HASH_QUEUE: '10000' })
      await expectResponse(`${raw.url}/health`, 200, '{"status":"ok"}')
      const email = `bench-${Date.now()}@example.com`
      const registered = await fetch(`${ours.url}/v1/auth/register`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ email, password, name: 'Bench' }),
      })
      if (registered.status !== 201) throw new Error(`registration failed: ${registered.status} ${await registered.text()}`)
      const { accessToken } = (await registered.json()) as { accessToken: string }
      const auth = { authorization: `Bearer ${accessToken}` }
      const check = await fetch(`${ours.url}/v1/users/me`, { headers: auth })
      if (check.status !== 200) throw new Error(`GET /v1/users/me answered ${check.status}`)

      const wrk = (url: string, extra: Partial<Parameters<typeof runWrk>[0]> = {}, durationSec = settings.durationSec) =>
        runWrk({ url, threads: settings.threads, connections: settings.connections, durationSec, ...extra })
      const rawRuns: WrkResult[] = []
      const meRuns: WrkResult[] = []
      for (let n = 1; n <= settings.rounds; n++) {
        if (settings.warmupSec > 0) await wrk(`${raw.url}/health`, {}, settings.warmupSec)
        rawRuns.push(await wrk(`${raw.url}/health`))
        if (settings.warmupSec > 0) await wrk(`${ours.url}/v1/users/me`, { headers: auth }, settings.warmupSec)
        meRuns.push(await wrk(`${ours.url}/v1/users/me`, { headers: auth }))
        log(`round ${n}: raw ${Math.round(rawRuns.at(-1)!.requestsPerSec)} req/s, /v1/users/me ${Math.round(meRuns.at(-1)!.requestsPerSec)} req/s`)
      }
      const pairs = meRuns.map((m, i) => m.requestsPerSec / rawRuns[i]!.requestsPerSec)
      const ratio = median(pairs)

      // Sign-ins saturate the hashing pool while one connection keeps asking for /health.
      const body = JSON.stringify({ email, password })
      const [logins, health] = await Promise.all([
        runWrk({ url: `${ours.url}/v1/auth/login`, threads: 1, connections: 16, durationSec: settings.durationSec, postJson: body, timeoutSec: 10 }),
        runWrk({ url: `${ours.url}/health`, threads: 1, connections: 1, durationSec: settings.durationSec }),
      ])
      log(`logins ${Math.round(logins.requestsPerSec)} req/s (${logins.errors} errors); /health meanwhile p50 ${health.latencyP50Ms} ms p99 ${health.latencyP99Ms} ms`)

      const mePass = ratio >= ME_TARGET
      const healthPass = health.latencyP99Ms <= HEALTH_P99_TARGET_MS
      const rows: ResultRow[] = [
        ...rawRuns.map((r, i) => wrkRow(`raw uWS run ${i + 1}`, r)),
        ...meRuns.map((r, i) => wrkRow(`GET /v1/users/me run ${i + 1}`, r)),
        wrkRow('POST /v1/auth/login (16 conns)', logins),
        wrkRow('GET /health during logins (1 conn)', health),
      ]
      return {
        rows,
        headline:
          `users/me ÷ raw = ${ratio.toFixed(3)} (median of pairs ${pairs.map((p) => p.toFixed(2)).join(', ')}; target >= ${ME_TARGET}): ${mePass ? 'pass' : 'MISSED'}; ` +
          `login ${Math.round(logins.requestsPerSec)} req/s; /health p99 during logins ${health.latencyP99Ms} ms (target <= ${HEALTH_P99_TARGET_MS}): ${healthPass ? 'pass' : 'MISSED'}`,
        summary: {
          scenario: 'identity',
          rawRps: Math.round(median(rawRuns.map((r) => r.requestsPerSec))),
          meRps: Math.round(median(meRuns.map((r) => r.requestsPerSec))),
          ratio: round(ratio, 3),
          target: ME_TARGET,
          pass: mePass && healthPass,
          loginRps: round(logins.requestsPerSec, 1),
          loginErrors: logins.errors,
          healthP99MsDuringLogins: health.latencyP99Ms,
          healthTargetMs: HEALTH_P99_TARGET_MS,
        },
      }
    }),
}

export default scenario
