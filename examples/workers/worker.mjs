// A keel pull worker in Node.js with only the standard library (Node 18+).
//
//   KEEL_URL=http://127.0.0.1:7070 KEEL_TOKEN=… node examples/workers/worker.mjs mail
//
// It long-polls for up to 10 jobs, runs each, and reports the finished ones in the call that
// takes the next batch; a failed job is reported on its own so keel retries it.
import http from 'node:http';

const base = new URL(process.env.KEEL_URL ?? 'http://127.0.0.1:7070');
const token = process.env.KEEL_TOKEN;
const queue = process.argv[2] ?? 'default';
const agent = new http.Agent({ keepAlive: true });

function post(path, body) {
  return new Promise((resolve, reject) => {
    const request = http.request(
      {
        host: base.hostname, port: base.port, path: `/api/v1${path}`, method: 'POST', agent,
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      },
      (response) => {
        let text = '';
        response.on('data', (chunk) => { text += chunk; });
        response.on('end', () => {
          if (response.statusCode >= 400) reject(new Error(`${path}: ${response.statusCode} ${text}`));
          else resolve(text ? JSON.parse(text) : null);
        });
      },
    );
    request.on('error', reject);
    request.end(JSON.stringify(body));
  });
}

// The work itself: return a result, or throw to fail the attempt.
async function handle(job) {
  console.log(`${job.name} (attempt ${job.attempt}/${job.max_attempts})`, job.payload);
  return { handled: true };
}

let finished = [];
for (;;) {
  const reply = await post(`/queues/${queue}/fetch`, {
    max: 10, wait: '20s', lease: '60s', worker: `node-${process.pid}`, complete: finished,
  });
  finished = [];
  for (const job of reply.jobs) {
    try {
      finished.push({ id: job.id, token: job.token, result: await handle(job) });
    } catch (error) {
      await post(`/jobs/${job.id}/fail`, { token: job.token, error: String(error) });
    }
  }
}
