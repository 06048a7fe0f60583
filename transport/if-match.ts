import { AppError } from '../core/errors.js'

/** `if-match: <version>` (quoted or not) as a number; undefined when the header is absent. */
export function ifMatchVersion(headers: Readonly<Record<string, string>>): number | undefined {
  const value = headers['if-match']
  if (value === undefined) return undefined
  if (!/^"?\d{1,9}"?$/.test(value)) throw new AppError('validation.failed', 'if-match must be a version number', { errors: [{ path: 'if-match', message: 'must be an integer version' }] })
  return Number(value.replaceAll('"', ''))
}
