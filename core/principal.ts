/** Who is calling: authenticated by the transport, authorized by the actor that owns the data. */
export type Principal =
  | { type: 'user'; userId: string; sessionId: string }
  | { type: 'apiKey'; keyId: string; orgId: string }
  | { type: 'system'; name: string }
  | { type: 'anonymous' }

export const anonymous: Principal = { type: 'anonymous' }
export const system = (name: string): Principal => ({ type: 'system', name })
