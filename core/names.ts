/**
 * Every NATS subject, stream, KV bucket and Redis prefix derives from the namespace, so several installs
 * or test runs can share one set of servers without seeing each other.
 */
export interface Names {
  namespace: string
  redisPrefix: string
  eventsStream: string
  eventsSubjects: string
  jobsStream: string
  jobsSubjects: string
  deadJobsStream: string
  deadJobsSubjects: string
  leasesBucket: string
  presenceBucket: string
  eventSubject(kind: 'org' | 'user', id: string): string
  jobSubject(queue: string): string
  deadJobSubject(queue: string): string
  actorSubject(partition: number, kind: string, id: string): string
}

export function namesFor(namespace: string): Names {
  return {
    namespace,
    redisPrefix: `${namespace}:`,
    eventsStream: `${namespace}_events`,
    eventsSubjects: `${namespace}.evt.>`,
    jobsStream: `${namespace}_jobs`,
    jobsSubjects: `${namespace}.job.>`,
    deadJobsStream: `${namespace}_jobs_dead`,
    deadJobsSubjects: `${namespace}.dlq.>`,
    leasesBucket: `${namespace}_leases`,
    presenceBucket: `${namespace}_presence`,
    eventSubject: (kind, id) => `${namespace}.evt.${kind}.${id}`,
    jobSubject: (queue) => `${namespace}.job.${queue}`,
    deadJobSubject: (queue) => `${namespace}.dlq.${queue}`,
    actorSubject: (partition, kind, id) => `${namespace}.act.${partition}.${kind}.${id}`,
  }
}
