import { Packr } from 'msgpackr'
import WebSocket from 'ws'

const packr = new Packr({ useRecords: false })

export type Frame = Record<string, unknown> & { type: string }

export interface ConnectOptions {
  protocol?: 'v1.json' | 'v1.msgpack'
  origin?: string
}

/**
 * A real WebSocket client for tests: every frame the server sends is kept in order, and tests wait for the
 * ones they expect (never sleeping for them).
 */
export class WsClient {
  readonly frames: Frame[] = []
  private consumed = 0
  private waiters: (() => void)[] = []
  readonly closed: Promise<{ code: number; reason: string }>
  private nextId = 1

  private constructor(
    readonly ws: WebSocket,
    readonly binary: boolean,
  ) {
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      this.frames.push((isBinary ? packr.unpack(data) : JSON.parse(data.toString('utf8'))) as Frame)
      this.wake()
    })
    this.closed = new Promise((resolve) =>
      ws.on('close', (code, reason) => {
        resolve({ code, reason: reason.toString() })
        this.wake()
      }),
    )
  }

  static connect(baseUrl: string, options: ConnectOptions = {}): Promise<WsClient> {
    const url = `${baseUrl.replace(/^http/, 'ws')}/v1/ws`
    const ws = new WebSocket(url, options.protocol ? [options.protocol] : [], options.origin ? { origin: options.origin } : {})
    return new Promise((resolve, reject) => {
      ws.once('open', () => resolve(new WsClient(ws, options.protocol === 'v1.msgpack')))
      ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade refused with ${res.statusCode}`)))
      ws.once('error', reject)
    })
  }

  private wake() {
    for (const w of this.waiters.splice(0)) w()
  }

  send(frame: Record<string, unknown>): void {
    this.ws.send(this.binary ? packr.pack(frame) : JSON.stringify(frame))
  }

  /** The next frame (after those already taken) that matches; frames before it stay for later waits. */
  async next(match: (f: Frame) => boolean = () => true, timeoutMs = 3_000): Promise<Frame> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const at = this.frames.findIndex((f, i) => i >= this.consumed && match(f))
      if (at >= 0) {
        const [frame] = this.frames.splice(at, 1)
        return frame!
      }
      if (this.ws.readyState === WebSocket.CLOSED) throw new Error(`socket closed while waiting; frames: ${JSON.stringify(this.frames.slice(-5))}`)
      const left = deadline - Date.now()
      if (left <= 0) throw new Error(`no matching frame within ${timeoutMs} ms; last frames: ${JSON.stringify(this.frames.slice(-5))}`)
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left)
        this.waiters.push(() => {
          clearTimeout(timer)
          resolve()
        })
      })
    }
  }

  /** Sends a frame with a fresh id and waits for the answer carrying that id. */
  async request(frame: Record<string, unknown>, timeoutMs = 3_000): Promise<Frame> {
    const id = this.nextId++
    this.send({ id, ...frame })
    return this.next((f) => f.id === id, timeoutMs)
  }

  async auth(token: string): Promise<Frame> {
    this.send({ type: 'auth', token })
    return this.next((f) => f.type === 'ready' || f.type === 'error')
  }

  subscribe(channel: string, since?: number): Promise<Frame> {
    return this.request({ type: 'subscribe', channel, ...(since !== undefined ? { since } : {}) })
  }

  /** Waits for `count` event frames of a channel and returns them (taken, in arrival order). */
  async events(channel: string, count: number, timeoutMs = 3_000): Promise<Frame[]> {
    const out: Frame[] = []
    while (out.length < count) out.push(await this.next((f) => f.type === 'event' && f.channel === channel, timeoutMs))
    return out
  }

  close(): void {
    this.ws.close()
  }
}

export async function connectAuthed(baseUrl: string, token: string, options: ConnectOptions = {}): Promise<WsClient> {
  const client = await WsClient.connect(baseUrl, options)
  const ready = await client.auth(token)
  if (ready.type !== 'ready') throw new Error(`auth failed: ${JSON.stringify(ready)}`)
  return client
}
