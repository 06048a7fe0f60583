import { findApiKeyOwner } from './api-keys.js'
import type { Queryable } from './postgres.js'
import { hashToken } from './sessions.js'

export interface ApiKeyOwner {
  id: string
  orgId: string
}

/**
 * Which organization an API key belongs to. A key never changes organization, so gateways keep the answer in
 * memory; whether the key still works is for the org actor to say on every request (revocation is immediate).
 */
export function createApiKeyOwners(sql: Queryable, maxEntries = 10_000): (key: string) => Promise<ApiKeyOwner | undefined> {
  const known = new Map<string, ApiKeyOwner>()
  return async (key) => {
    const hit = known.get(key)
    if (hit) return hit
    const owner = await findApiKeyOwner(sql, hashToken(key))
    if (owner) {
      // Oldest first out: a Map iterates in insertion order.
      if (known.size >= maxEntries) known.delete(known.keys().next().value!)
      known.set(key, owner)
    }
    return owner
  }
}
