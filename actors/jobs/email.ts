import { z } from 'zod'
import type { MailTransport } from '../../storage/mailer.js'
import { defineJob } from './define.js'

export const EmailPayload = z.object({
  to: z.email(),
  subject: z.string().min(1).max(300),
  body: z.string().max(100_000),
  kind: z.string().max(50),
  data: z.record(z.string(), z.string()).optional(),
})

/** Sending email, retried with backoff when the mail server is away. */
export function emailJob(transport: MailTransport) {
  return defineJob({
    name: 'email.send',
    queue: 'email',
    priority: 'high',
    schema: EmailPayload,
    maxAttempts: 8,
    backoffMs: 2_000,
    timeoutMs: 30_000,
    run: (email) => transport.send(email),
  })
}
