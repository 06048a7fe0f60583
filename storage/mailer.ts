import nodemailer from 'nodemailer'
import { parseConnectionUrl } from 'nodemailer/lib/shared/index.js'
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

/** How long an SMTP attempt waits, in milliseconds, for each step before it gives up. */
export interface SmtpTimeouts {
  connectionTimeout: number
  greetingTimeout: number
  socketTimeout: number
  dnsTimeout: number
}

/**
 * nodemailer's defaults (2 min to connect, 10 min of socket silence) outlast the `email.send` job's 30 s
 * limit: a dead or silent server would fail each attempt only as a bare job timeout, leaving the connection
 * open behind it. These fail the attempt sooner, with the SMTP error, and close it: lookup, connect and
 * greeting take at most 15 s, and a conversation that stalls is given up after 10 s of silence.
 */
const smtpTimeouts: SmtpTimeouts = { connectionTimeout: 5_000, greetingTimeout: 5_000, socketTimeout: 10_000, dnsTimeout: 5_000 }

/**
 * SMTP through nodemailer: `smtp://user:pass@host:587` or `smtps://...`. The URL's query may set any nodemailer
 * option (`?greetingTimeout=2000`), and wins over `timeouts`. A failed send throws, so the job retries.
 */
export function createSmtpTransport(url: string, from: string, timeouts: Partial<SmtpTimeouts> = {}): MailTransport {
  // Parsed here because nodemailer, given `{ url, ...options }`, keeps the URL's options and drops the rest.
  const transport = nodemailer.createTransport({ ...smtpTimeouts, ...timeouts, ...parseConnectionUrl(url) })
  return {
    async send(email) {
      await transport.sendMail({ from, to: email.to, subject: email.subject, text: email.body })
    },
  }
}
