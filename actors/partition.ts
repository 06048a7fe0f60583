/**
 * Maps an actor address to one of a fixed number of partitions (FNV-1a, 32 bit): stable across processes
 * and versions, so every node routes the same actor to the same partition. The count must be the same on
 * every node of a cluster.
 */
export function partitionOf(kind: string, id: string, count: number): number {
  let hash = 0x811c9dc5
  for (let i = 0; i < kind.length; i++) hash = Math.imul(hash ^ kind.charCodeAt(i), 0x01000193)
  hash = Math.imul(hash ^ 0x2f, 0x01000193)
  for (let i = 0; i < id.length; i++) hash = Math.imul(hash ^ id.charCodeAt(i), 0x01000193)
  return (hash >>> 0) % count
}
