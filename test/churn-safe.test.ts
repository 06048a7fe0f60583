import { expect, test } from 'vitest'
import { LiveList, Tally } from '../core/churn-safe.js'

const members = <T>(list: LiveList<T>) => {
  const seen: T[] = []
  list.forEach((item) => seen.push(item))
  return seen.sort()
}

test('a LiveList keeps exactly the members not removed, whatever the order of removal', () => {
  const list = new LiveList<string>()
  const entries = ['a', 'b', 'c', 'd', 'e'].map((x) => list.add(x))
  list.remove(entries[1]!) // the last one moves into its place
  list.remove(entries[4]!) // which must still be removable where it moved to
  list.remove(entries[1]!) // twice is once
  expect(members(list)).toEqual(['a', 'c', 'd'])
  expect(list.size).toBe(3)
  for (const e of entries) list.remove(e)
  expect(list.size).toBe(0)
  list.add('f')
  expect(members(list)).toEqual(['f'])
})

test('a Tally is drained only once everything that entered has left', async () => {
  const tally = new Tally()
  let drained = false
  await tally.drained() // nothing in progress: at once
  tally.enter()
  tally.enter()
  const waiting = tally.drained().then(() => (drained = true))
  tally.leave()
  await Promise.resolve()
  expect(drained).toBe(false)
  expect(tally.size).toBe(1)
  tally.leave()
  await waiting
  expect(drained).toBe(true)
  expect(() => tally.leave()).toThrow() // a leave without its enter
  expect(tally.size).toBe(0)
  // It can fill and drain again.
  tally.enter()
  const again = tally.drained()
  tally.leave()
  await again
})

test('a LiveList member may remove itself while the list is visited', () => {
  const list = new LiveList<number>()
  const entries = new Map([1, 2, 3, 4, 5].map((n) => [n, list.add(n)]))
  const visited: number[] = []
  list.forEach((n) => {
    visited.push(n)
    if (n % 2 === 1) list.remove(entries.get(n)!)
  })
  expect(visited.sort()).toEqual([1, 2, 3, 4, 5])
  expect(members(list)).toEqual([2, 4])
})
