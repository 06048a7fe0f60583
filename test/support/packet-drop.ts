import { execFile } from 'node:child_process'
import { promisify } from 'node:util'

const run = promisify(execFile)

/**
 * Drops every TCP packet between two loopback ports, both ways: a partition, in which nothing is refused or
 * closed and each side simply hears nothing (the test proxy cannot do that: its own kernel would still answer
 * the other side's keepalives). Needs root and iptables (deploy/services.sh installs it). The rules carry
 * `tag` as a comment, so the run's teardown can remove any a failed test left. Resolves to the undo.
 */
export async function dropBetween(portA: number, portB: number, tag: string): Promise<() => Promise<void>> {
  const rules = [
    [portA, portB],
    [portB, portA],
  ].map(([from, to]) => ['OUTPUT', '-o', 'lo', '-p', 'tcp', '--sport', String(from), '--dport', String(to), '-m', 'comment', '--comment', tag, '-j', 'DROP'])
  const added: string[][] = []
  // Every rule is tried, so one that fails to go does not keep the other in place.
  const undo = async () => {
    const failures: unknown[] = []
    for (const rule of added.splice(0)) await run('iptables', ['-D', ...rule]).catch((err: unknown) => failures.push(err))
    if (failures.length) throw new Error(`iptables could not remove ${failures.length} rule(s): ${String(failures[0])}`)
  }
  try {
    for (const rule of rules) {
      await run('iptables', ['-I', ...rule])
      added.push(rule)
    }
  } catch (err) {
    await undo()
    throw new Error(`could not drop packets with iptables (root and deploy/services.sh needed): ${err instanceof Error ? err.message : String(err)}`)
  }
  return undo
}

/** Removes the OUTPUT rules whose comment starts with `tag` (those of a test that died before its undo). */
export async function removeDropsTagged(tag: string): Promise<void> {
  let listing: string
  try {
    listing = (await run('iptables', ['-S', 'OUTPUT'])).stdout
  } catch {
    return // no iptables: no test of this run could have added a rule
  }
  for (const line of listing.split('\n')) {
    if (!line.startsWith('-A OUTPUT') || !line.includes(`--comment ${tag}`)) continue
    await run('iptables', ['-D', ...line.slice(3).split(' ')]).catch(() => undefined)
  }
}
