import { defineKind, type ActorKind } from '../../actors/kind.js'

export const ECHO_KIND = 'echo'

/**
 * The cheapest possible actor, for benchmarks only: no database, no state change, a synchronous handler
 * that replies with the command's `n`. Whatever an ask to it costs beyond the handler is the runtime.
 */
export function echoKind(): ActorKind<unknown> {
  return defineKind<Record<string, never>>({
    name: ECHO_KIND,
    load: () => Promise.resolve({}),
    handle: (_state, command) => ({ reply: command.n }),
  })
}
