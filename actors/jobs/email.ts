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
 * A 5xx answer from the mail server (no such mailbox, relaying refused, message rejected) says that trying
 * again would get the same answer: the job is dead at once rather than after all its attempts.
 */
function permanent(err: unknown): unknown {
  const code = (err as { responseCode?: unknown } | null)?.responseCode
  return typeof code === 'number' && code >= 500 && code < 600 && err instanceof Error ? new PermanentJobError(err.message, { cause: err }) : err
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
