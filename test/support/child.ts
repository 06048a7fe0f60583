import { spawn, type ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'

const root = new URL('../..', import.meta.url).pathname

/** Runs `main.ts` as its own process, the way `npm start` does. */
export function spawnMain(env: Record<string, string>): ChildProcess {
  return spawnChild('main.ts', env)
}

/** Runs a TypeScript entry point of the repository in its own process. */
export function spawnChild(entry: string, env: Record<string, string>): ChildProcess {
  return spawn(process.execPath, ['--import', 'tsx', entry], {
    cwd: root,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
}

export interface Exit {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
}

export function exited(child: ChildProcess): Promise<Exit> {
  let stdout = ''
  let stderr = ''
  child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()))
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()))
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal, stdout, stderr })))
}

/** Resolves with the first JSON log line on stdout whose `msg` matches. */
export function logLine(child: ChildProcess, msg: string): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: child.stdout! })
    lines.on('line', (line) => {
      try {
        const entry = JSON.parse(line) as Record<string, unknown>
        if (entry.msg === msg) resolve(entry)
      } catch {
        // not a log line
      }
    })
    child.once('exit', (code) => reject(new Error(`process exited (${code}) before logging "${msg}"`)))
  })
}
