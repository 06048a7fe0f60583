import { readFileSync } from 'node:fs'
import { join } from 'node:path'
// The package's main entry evaluates the whole Swagger UI bundle; this one only tells where the files are.
import swaggerUiPath from 'swagger-ui-dist/absolute-path.js'
import { defineRoute, type RawReply, type Route } from './route.js'

// Swagger UI, served from the package rather than a CDN, so /docs works offline and under our CSP
// (`script-src 'self'`: the page has no inline script).
const page = `<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>API reference</title>
  <link rel="stylesheet" href="/docs/assets/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/assets/swagger-ui-bundle.js"></script>
  <script src="/docs/assets/init.js"></script>
</body>
</html>`

const init = `window.ui = SwaggerUIBundle({ url: '/openapi.json', dom_id: '#swagger-ui', deepLinking: true })\n`

export function docsRoutes(): Route[] {
  const assets = new Map<string, { type: string; data: string }>()
  const asset = (file: string, type: string): RawReply => {
    let found = assets.get(file)
    if (!found) {
      found = { type, data: readFileSync(join(swaggerUiPath(), file), 'utf8') }
      assets.set(file, found)
    }
    return { status: 200, contentType: found.type, data: found.data, headers: { 'cache-control': 'public, max-age=86400' } }
  }
  const hidden = (path: string, reply: () => RawReply) =>
    defineRoute({
      method: 'get',
      path,
      operationId: path,
      summary: path,
      tags: ['docs'],
      hidden: true,
      responses: { 200: { description: 'asset' } },
      handler: reply,
    })
  return [
    defineRoute({
      method: 'get',
      path: '/docs',
      operationId: 'docs',
      summary: 'Human-readable API reference rendered from /openapi.json',
      tags: ['docs'],
      responses: { 200: { description: 'HTML page', contentType: 'text/html' } },
      handler: () => ({ status: 200, contentType: 'text/html; charset=utf-8', data: page }),
    }),
    hidden('/docs/assets/swagger-ui.css', () => asset('swagger-ui.css', 'text/css; charset=utf-8')),
    hidden('/docs/assets/swagger-ui-bundle.js', () => asset('swagger-ui-bundle.js', 'text/javascript; charset=utf-8')),
    hidden('/docs/assets/init.js', () => ({ status: 200, contentType: 'text/javascript; charset=utf-8', data: init })),
  ]
}
