import { expect, test } from 'vitest'
import { newId } from '../core/ids.js'

test('ids are UUIDv7, unique, and sort in the order they were made, many to a millisecond', () => {
  const ids = Array.from({ length: 100_000 }, () => newId())
  expect(new Set(ids).size).toBe(ids.length)
  expect([...ids].sort()).toEqual(ids)
  for (const id of ids.slice(0, 100)) expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/)
  // The random tails (the last 42 bits are random in every id) differ: the randomness is wired in.
  const tails = ids.slice(0, 10_000).map((id) => id.slice(-11))
  expect(new Set(tails).size).toBe(tails.length)
  // The time field is the wall clock's milliseconds.
  const ms = parseInt(newId().replaceAll('-', '').slice(0, 12), 16)
  expect(Math.abs(ms - Date.now())).toBeLessThan(1_000)
})
