import { z } from 'zod'
import type { MailTransport } from '../../storage/mailer.js'
import { defineJob, PermanentJobError } from './define.js'

export const EmailPayload = z.object({
  to: z.email(),
  subject: z.string().min(1).max(300),
  body: z.string().max(100_000),
  kind: z.string().max(50),
  data: z.record(z.string(), z.string()).optional(),
})

/**
 * A recipient or sender refused for good (a 5xx answer to the envelope: no such mailbox) would be refused
 * again: the job is dead at once rather than after all its attempts. Other 5xx answers are about us, not
 * the address (bad credentials, a blocked IP, policy 5.7.x, quota 5.4.x): they are retried, since a fixed
 * configuration should still deliver.
 */
function permanent(err: unknown): unknown {
  if (!(err instanceof Error)) return err
  const { code, responseCode, response } = err as Error & { code?: unknown; responseCode?: unknown; response?: unknown }
  const refused = code === 'EENVELOPE' && typeof responseCode === 'number' && responseCode >= 500 && responseCode < 600
  const aboutUs = typeof response === 'string' && /\b5\.[47]\.\d+/.test(response)
  return refused && !aboutUs ? new PermanentJobError(err.message, { cause: err }) : err
}

/** Sending email, retried with backoff when the mail server is away or answers with a temporary (4xx) error. */
export function emailJob(transport: MailTransport) {
  return defineJob({
    name: 'email.send',
    queue: 'email',
    priority: 'high',
    schema: EmailPayload,
    maxAttempts: 8,
    backoffMs: 2_000,
    timeoutMs: 30_000,
    run: (email) =>
      transport.send(email).catch((err: unknown) => {
        throw permanent(err)
      }),
  })
}
