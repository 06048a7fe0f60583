import type { HttpResponse } from 'uWebSockets.js'
import { AppError } from '../core/errors.js'

const jsonType = /^application\/(?:[\w.+-]+\+)?json\s*(?:;|$)/i

export function isJsonContentType(value: string | undefined): boolean {
  return value !== undefined && jsonType.test(value)
}

/**
 * Collects the request body up to `limit` bytes. uWS hands out chunks that are only valid during the
 * callback, so each one is copied.
 */
export function readBody(res: HttpResponse, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let size = 0
    let failed = false
    res.onData((chunk, isLast) => {
      if (failed) return
      size += chunk.byteLength
      if (size > limit) {
        failed = true
        reject(tooLarge(limit))
        return
      }
      chunks.push(Buffer.from(chunk.slice(0)))
      if (isLast) resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size))
    })
  })
}

export function tooLarge(limit: number): AppError {
  return new AppError('payload_too_large', `the request body is larger than ${limit} bytes`)
}

export function parseJson(body: Buffer): unknown {
  if (body.byteLength === 0) throw new AppError('validation.malformed_json', 'the request body is empty; a JSON document was expected')
  try {
    return JSON.parse(body.toString('utf8'))
  } catch (err) {
    throw new AppError('validation.malformed_json', `the request body is not valid JSON: ${err instanceof Error ? err.message : 'parse error'}`)
  }
}
