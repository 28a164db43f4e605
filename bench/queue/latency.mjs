// Add → start latency at a steady rate, one measurement per process:
//
//   node latency.mjs bullmq|keel <rate per second> <seconds>   (REDIS_PORT | KEEL_URL, KEEL_TOKEN)
//
// A producer adds one job at a time (each its own call: BullMQ's queue.add, keel's
// POST /queues/{q}/jobs) at <rate> jobs/s, stamping each with the time it was sent; workers in
// the same process (BullMQ: a Worker with concurrency 50; keel: 4 long-polling pull loops of up
// to 25 jobs) note when each job reaches them. Prints p50/p99/max of send → start in ms over
// all jobs after the first second (warm-up).
import { Queue, Worker } from 'bullmq';
import { keelClient } from './keel-client.mjs';

const [system, rateArg, secondsArg] = process.argv.slice(2);
const RATE = Number(rateArg ?? 1000);
const SECONDS = Number(secondsArg ?? 10);
const TOTAL = RATE * SECONDS;
const WARMUP = RATE;
const QUEUE = 'latency';
const now = () => performance.timeOrigin + performance.now();
const latencies = [];
let seen = 0;
let finish;
const allSeen = new Promise((resolve) => { finish = resolve; });

function started(job) {
  if (seen++ >= WARMUP) latencies.push(now() - job.sent);
  if (seen === TOTAL) finish();
}

// Sends <rate> jobs per second, in ticks of 5 ms, each job its own call.
async function produce(add) {
  const begin = now();
  for (let i = 0; i < TOTAL; ) {
    const due = Math.floor(((now() - begin) / 1000) * RATE) + 1;
    while (i < Math.min(due, TOTAL)) {
      add({ n: i, sent: now() }).catch((e) => { console.error(e); process.exit(1); });
      i += 1;
    }
    await new Promise((r) => setTimeout(r, 5));
  }
}

function summary() {
  latencies.sort((a, b) => a - b);
  const at = (q) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))];
  console.log(`${system} latency ${RATE}/s p50 ${at(0.5).toFixed(2)} ms p99 ${at(0.99).toFixed(2)} ms max ${latencies[latencies.length - 1].toFixed(2)} ms`);
}

if (system === 'bullmq') {
  const connection = { host: '127.0.0.1', port: Number(process.env.REDIS_PORT) };
  const queue = new Queue(QUEUE, { connection });
  await queue.obliterate({ force: true });
  const worker = new Worker(QUEUE, async (job) => started(job.data), {
    connection, concurrency: 50, removeOnComplete: { count: 1000 },
  });
  await worker.waitUntilReady();
  await produce((data) => queue.add('noop', data, { removeOnComplete: { count: 1000 } }));
  await allSeen;
  summary();
  process.exit(0);
}

const post = keelClient(64);
const work = async () => {
  for (;;) {
    const { jobs } = await post(`/queues/${QUEUE}/fetch`, { max: 25, wait: '5s', lease: '30s', worker: 'latency' });
    for (const job of jobs) started(job.payload);
    if (jobs.length > 0) {
      // Reported without holding up the next fetch.
      post('/jobs/complete', { jobs: jobs.map((j) => ({ id: j.id, token: j.token })) }).catch(() => {});
    }
  }
};
for (let i = 0; i < 4; i++) work().catch((e) => { console.error(e); process.exit(1); });
await produce((payload) => post(`/queues/${QUEUE}/jobs`, { name: 'noop', payload }));
await allSeen;
summary();
process.exit(0);
