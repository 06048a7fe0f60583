import { createServer, connect, type Server, type Socket } from 'node:net'

/** A loopback TCP proxy a test can cut and restore, to take a dependency away without touching the real server. */
export interface TcpProxy {
  port: number
  /** Stops accepting and destroys every open connection: the dependency looks dead. */
  cut(): Promise<void>
  /**
   * Keeps every connection open but forwards nothing either way: a silent network partition. A connection
   * that loses bytes stays silent for good, even after `restore` (as behind a NAT or firewall that forgot
   * it): dropping part of a stream and forwarding the rest would garble the protocol, which TCP never does.
   */
  blackhole(): void
  restore(): Promise<void>
  close(): Promise<void>
}

export async function startTcpProxy(targetHost: string, targetPort: number): Promise<TcpProxy> {
  const sockets = new Set<Socket>()
  let dropping = false
  let server: Server
  const listen = (port: number) =>
    new Promise<number>((resolve, reject) => {
      server = createServer((client) => {
        const upstream = connect(targetPort, targetHost)
        sockets.add(client).add(upstream)
        const drop = () => {
          client.destroy()
          upstream.destroy()
          sockets.delete(client)
          sockets.delete(upstream)
        }
        client.on('error', drop).on('close', drop)
        upstream.on('error', drop).on('close', drop)
        let lost = false
        const forward = (to: Socket) => (chunk: Buffer) => {
          if (dropping) lost = true
          if (!lost) to.write(chunk)
        }
        client.on('data', forward(upstream))
        upstream.on('data', forward(client))
      })
      server.once('error', reject)
      server.listen(port, '127.0.0.1', () => {
        const address = server.address()
        resolve(typeof address === 'object' && address ? address.port : port)
      })
    })
  const stop = () =>
    new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy()
      sockets.clear()
      server.close(() => resolve())
    })
  const port = await listen(0)
  return {
    port,
    cut: stop,
    blackhole: () => {
      dropping = true
    },
    restore: async () => {
      dropping = false
      if (!server.listening) await listen(port)
    },
    close: async () => {
      dropping = false
      await stop()
    },
  }
}

/** A proxy in front of the service at `url`, and that URL pointed at the proxy (`defaultPort` when it names none). */
export async function proxyFor(url: string, defaultPort: number): Promise<{ proxy: TcpProxy; url: string }> {
  const target = new URL(url)
  const proxy = await startTcpProxy(target.hostname, Number(target.port || defaultPort))
  target.port = String(proxy.port)
  return { proxy, url: target.toString() }
}
