// keel's API from Node.js with the standard `http` client on a keep-alive agent, as a worker
// would call it (KEEL_URL, KEEL_TOKEN). `post(path, body)` resolves to the parsed answer (or
// null when empty) and rejects on a status of 300 or more.
import http from 'node:http';

export function keelClient(maxSockets = Infinity) {
  const base = new URL(process.env.KEEL_URL);
  const agent = new http.Agent({ keepAlive: true, maxSockets });
  const headers = { authorization: `Bearer ${process.env.KEEL_TOKEN}`, 'content-type': 'application/json' };
  return (path, body) =>
    new Promise((resolve, reject) => {
      const request = http.request(
        { host: base.hostname, port: base.port, path: `/api/v1${path}`, method: 'POST', headers, agent },
        (response) => {
          const chunks = [];
          response.on('data', (c) => chunks.push(c));
          response.on('end', () => {
            const text = Buffer.concat(chunks).toString();
            if (response.statusCode >= 300) reject(new Error(`${path}: ${response.statusCode} ${text}`));
            else resolve(text ? JSON.parse(text) : null);
          });
        },
      );
      request.on('error', reject);
      request.end(JSON.stringify(body));
    });
}
