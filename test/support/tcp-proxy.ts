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
   * Its close is lost as well: the far side keeps its end open until the proxy closes.
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
        let lost = false
        // One side closing closes the other, unless the connection went silent: then its close is lost too,
        // and the other side stays open until the proxy closes (a peer that vanished behind a partition).
        const drop = (side: Socket) => () => {
          side.destroy()
          sockets.delete(side)
          if (lost) return
          for (const other of [client, upstream]) {
            other.destroy()
            sockets.delete(other)
          }
        }
        client.on('error', drop(client)).on('close', drop(client))
        upstream.on('error', drop(upstream)).on('close', drop(upstream))
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
