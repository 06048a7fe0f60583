import { createHash } from 'node:crypto'

/*
 * The ops pages: plain HTML, one stylesheet inline, one script served from /ops/assets/ops-jobs.js. The
 * script cannot be inline: the global helmet policy (`script-src 'self'`) is sent on every answer and a
 * browser enforces every policy it receives, so a nonce in a second policy would not let it run. The pages
 * add a second, stricter policy of their own (nothing from anywhere else, the inline style by its hash).
 */

const style = `
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #1d1d1f; background: #fafafa; }
h1 { font-size: 1.3rem; margin: 0 0 1rem; }
h2 { font-size: 1.05rem; margin: 1.5rem 0 .5rem; }
header { display: flex; gap: 1rem; align-items: baseline; }
header .spacer { flex: 1; }
table { border-collapse: collapse; background: #fff; }
th, td { border: 1px solid #ddd; padding: .3rem .6rem; text-align: left; vertical-align: top; }
th { background: #f0f0f0; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.error { max-width: 32rem; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; color: #a00; }
td.id { font-family: ui-monospace, monospace; font-size: 12px; color: #555; }
.status { display: inline-block; padding: 0 .4rem; border-radius: .6rem; font-size: 12px; background: #eee; }
.status.dead { background: #fdd; color: #900; }
.status.failed { background: #ffe6c7; color: #8a4b00; }
.status.running { background: #dbeafe; color: #1e40af; }
.status.succeeded { background: #dcfce7; color: #166534; }
.status.queued { background: #eef; color: #334; }
#live { color: #666; font-size: 12px; }
#live.stale { color: #a00; }
#notice { color: #a00; min-height: 1.2em; }
form.signin { display: flex; flex-direction: column; gap: .5rem; max-width: 22rem; }
form.signin input { font: inherit; padding: .3rem; }
button { font: inherit; cursor: pointer; }
.muted { color: #666; font-size: 12px; }
`

const styleHash = `'sha256-${createHash('sha256').update(style).digest('base64')}'`

/** Sent with the pages beside the global policy; both apply, so this one can only narrow what the page may do. */
export const opsPageCsp = [
  "default-src 'none'",
  "script-src 'self'",
  "connect-src 'self'",
  "img-src 'self'",
  `style-src ${styleHash}`,
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ')

const layout = (title: string, body: string) => `<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>${title}</title>
  <style>${style}</style>
</head>
<body>
${body}
  <script src="/ops/assets/ops-jobs.js"></script>
</body>
</html>
`

export const signInPage = layout(
  'Ops: sign in',
  `  <h1>Ops: sign in</h1>
  <form class="signin" id="signin" method="post" action="/ops/session">
    <label for="token">Operator token (OPS_TOKEN)</label>
    <input id="token" name="token" type="password" autocomplete="current-password" required>
    <button type="submit">Sign in</button>
    <div id="error" role="alert"></div>
  </form>`,
)

export const jobsPage = layout(
  'Ops: jobs',
  `  <header>
    <h1>Jobs</h1>
    <span id="live">connecting…</span>
    <span class="spacer"></span>
    <button type="button" id="signout">Sign out</button>
  </header>
  <div id="notice" role="alert"></div>
  <h2>Queues</h2>
  <table id="queues">
    <thead><tr>
      <th>queue</th>
      <th title="jobs recorded as queued in Postgres, due or delayed (not read from JetStream)">depth (queued)</th>
      <th>running</th><th>succeeded</th><th>failed (retrying)</th><th>dead</th>
    </tr></thead>
    <tbody></tbody>
  </table>
  <h2>Recent jobs</h2>
  <p class="muted">
    <label for="filter">status</label>
    <select id="filter">
      <option value="">any</option><option>dead</option><option>failed</option><option>running</option>
      <option>queued</option><option>succeeded</option>
    </select>
    · the 50 most recently changed, refreshed every second
  </p>
  <table id="jobs">
    <thead><tr>
      <th>updated</th><th>name</th><th>queue</th><th>status</th><th>attempts</th><th>error</th><th>id</th><th></th>
    </tr></thead>
    <tbody></tbody>
  </table>`,
)

/**
 * The pages' script (ES2017, no framework). Rows are keyed by job id and updated in place, so a Retry button
 * under the pointer is not replaced by the next refresh between press and release.
 */
export const opsScript = `'use strict';
(function () {
  var $ = function (id) { return document.getElementById(id) }

  var signin = $('signin')
  if (signin) {
    signin.addEventListener('submit', function (event) {
      event.preventDefault()
      var error = $('error')
      error.textContent = ''
      fetch('/ops/session', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ token: $('token').value }),
        credentials: 'same-origin',
        redirect: 'manual'
      }).then(function (res) {
        if (res.type === 'opaqueredirect' || res.ok) return location.assign('/ops/jobs')
        return res.json().then(function (p) { error.textContent = (p && p.detail) || 'sign-in failed (' + res.status + ')' })
      }).catch(function (err) { error.textContent = 'sign-in failed: ' + err })
    })
    return
  }

  var queuesBody = document.querySelector('#queues tbody')
  var jobsBody = document.querySelector('#jobs tbody')
  var rows = new Map()
  var notice = $('notice')
  var live = $('live')

  function cell(tr, className) {
    var td = document.createElement('td')
    if (className) td.className = className
    tr.appendChild(td)
    return td
  }
  function setText(el, text) { if (el.textContent !== text) el.textContent = text }

  function renderQueues(queues) {
    var keys = ['queue', 'depth', 'running', 'succeeded', 'failed', 'dead']
    while (queuesBody.rows.length > queues.length) queuesBody.deleteRow(-1)
    queues.forEach(function (q, i) {
      var tr = queuesBody.rows[i]
      if (!tr) {
        tr = queuesBody.insertRow(-1)
        keys.forEach(function (k) { cell(tr, k === 'queue' ? 'queue' : 'num ' + k) })
      }
      tr.dataset.queue = q.queue
      keys.forEach(function (k, j) { setText(tr.cells[j], String(q[k])) })
    })
  }

  function rowFor(job) {
    var tr = rows.get(job.id)
    if (tr) return tr
    tr = document.createElement('tr')
    tr.dataset.id = job.id
    cell(tr, 'updated'); cell(tr, 'name'); cell(tr, 'queue')
    var status = document.createElement('span')
    status.className = 'status'
    cell(tr, 'status-cell').appendChild(status)
    cell(tr, 'num attempts'); cell(tr, 'error'); cell(tr, 'id')
    var button = document.createElement('button')
    button.type = 'button'
    button.className = 'retry'
    button.textContent = 'Retry'
    button.addEventListener('click', function () { retry(job.id, button) })
    cell(tr, 'action').appendChild(button)
    rows.set(job.id, tr)
    return tr
  }

  function renderJob(job) {
    var tr = rowFor(job)
    var c = tr.cells
    tr.dataset.status = job.status
    var when = new Date(job.updatedAt)
    setText(c[0], when.toLocaleTimeString())
    c[0].title = job.updatedAt
    setText(c[1], job.name)
    setText(c[2], job.queue)
    var badge = c[3].firstChild
    badge.className = 'status ' + job.status
    setText(badge, job.status)
    setText(c[4], job.attempts + ' / ' + job.maxAttempts)
    setText(c[5], job.error || '')
    c[5].title = job.error || ''
    setText(c[6], job.id)
    var button = c[7].firstChild
    button.hidden = job.status !== 'dead'
    if (job.status !== 'dead') button.disabled = false
    return tr
  }

  function renderJobs(jobs) {
    var seen = new Set()
    jobs.forEach(function (job, i) {
      var tr = renderJob(job)
      seen.add(job.id)
      if (jobsBody.children[i] !== tr) jobsBody.insertBefore(tr, jobsBody.children[i] || null)
    })
    rows.forEach(function (tr, id) {
      if (!seen.has(id)) { tr.remove(); rows.delete(id) }
    })
  }

  function problemText(res) {
    return res.json().then(function (p) { return (p && p.detail) || res.status + ' ' + res.statusText }, function () { return res.status + ' ' + res.statusText })
  }

  function retry(id, button) {
    button.disabled = true
    notice.textContent = ''
    fetch('/ops/api/jobs/' + encodeURIComponent(id) + '/retry', { method: 'POST', credentials: 'same-origin' }).then(function (res) {
      if (res.status === 401) return location.reload()
      if (!res.ok) return problemText(res).then(function (text) { notice.textContent = 'retry failed: ' + text; button.disabled = false })
      return res.json().then(function (job) { renderJob(job); refresh() })
    }).catch(function (err) { notice.textContent = 'retry failed: ' + err; button.disabled = false })
  }

  var timer = 0
  var inFlight = false
  function refresh() {
    if (inFlight) return
    inFlight = true
    clearTimeout(timer)
    var filter = $('filter').value
    fetch('/ops/api/jobs' + (filter ? '?status=' + encodeURIComponent(filter) : ''), { credentials: 'same-origin', cache: 'no-store' }).then(function (res) {
      if (res.status === 401) return location.reload()
      if (!res.ok) return problemText(res).then(function (text) { throw new Error(text) })
      return res.json().then(function (data) {
        renderQueues(data.queues)
        renderJobs(data.recent)
        live.className = ''
        live.textContent = 'live · updated ' + new Date().toLocaleTimeString()
      })
    }).catch(function (err) {
      live.className = 'stale'
      live.textContent = 'not updating: ' + (err && err.message ? err.message : err)
    }).then(function () {
      inFlight = false
      timer = setTimeout(refresh, 1000)
    })
  }

  $('filter').addEventListener('change', refresh)
  $('signout').addEventListener('click', function () {
    fetch('/ops/session/logout', { method: 'POST', credentials: 'same-origin', redirect: 'manual' }).then(function () { location.assign('/ops/jobs') })
  })
  refresh()
})()
`
