import type { Logger } from '../core/log.js'
import { newId } from '../core/ids.js'
import type { Queryable } from './postgres.js'

export interface Email {
  to: string
  subject: string
  body: string
  /** What the email is for (`email_verify`, `password_reset`, ...), for the development mailbox's readers. */
  kind: string
  data?: Record<string, string>
}

export interface Mailer {
  send(email: Email): Promise<void>
}

/**
 * Development transport: every email is logged and kept in `dev_mailbox`, where developers and tests read
 * it. (Production sending over SMTP arrives with the durable jobs work.)
 */
export function createDevMailer(sql: Queryable, log: Logger): Mailer {
  return {
    async send(email) {
      await sql`insert into dev_mailbox (id, recipient, subject, body, kind, data)
                values (${newId()}, ${email.to}, ${email.subject}, ${email.body}, ${email.kind}, ${sql.json(email.data ?? {})})`
      log.info({ to: email.to, subject: email.subject, kind: email.kind }, 'email written to the development mailbox')
    },
  }
}
