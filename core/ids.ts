import { v7 } from 'uuid'

/** Time-ordered ids for everything we store: they index well and sort by creation. */
export function newId(): string {
  return v7()
}

let counter = 0
const prefix = Math.floor(Math.random() * 36 ** 6).toString(36).padStart(6, '0')

/** Request ids are only correlation tokens, so they come from a counter: cheaper than a UUID per request. */
export function newRequestId(): string {
  counter = (counter + 1) % Number.MAX_SAFE_INTEGER
  return `${prefix}-${counter.toString(36)}`
}

const safeToken = /^[A-Za-z0-9._~:/+=-]{1,128}$/

/** A client-sent request id is echoed only when it is a safe token, so it cannot inject into logs or headers. */
export function isSafeRequestId(value: string): boolean {
  return safeToken.test(value)
}
