import nodemailer from 'nodemailer'
import type { Logger } from '../core/log.js'
import { newId } from '../core/ids.js'
import type { Queryable } from './postgres.js'

export interface Email {
  to: string
  subject: string
  body: string
  /** What the email is for (`email_verify`, `password_reset`, `invitation`), for the development mailbox's readers. */
  kind: string
  data?: Record<string, string>
}

/** Where the `email.send` job delivers: SMTP in production, the development mailbox otherwise. */
export interface MailTransport {
  send(email: Email): Promise<void>
}

/** Development transport: every email is logged and kept in `dev_mailbox`, where developers and tests read it. */
export function createDevTransport(sql: Queryable, log: Logger): MailTransport {
  return {
    async send(email) {
      await sql`insert into dev_mailbox (id, recipient, subject, body, kind, data)
                values (${newId()}, ${email.to}, ${email.subject}, ${email.body}, ${email.kind}, ${sql.json(email.data ?? {})})`
      log.info({ to: email.to, subject: email.subject, kind: email.kind }, 'email written to the development mailbox')
    },
  }
}

/** SMTP through nodemailer: `smtp://user:pass@host:587` or `smtps://...`. */
export function createSmtpTransport(url: string, from: string): MailTransport {
  const transport = nodemailer.createTransport(url)
  return {
    async send(email) {
      await transport.sendMail({ from, to: email.to, subject: email.subject, text: email.body })
    },
  }
}
