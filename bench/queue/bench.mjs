// One measurement per process, so runs do not disturb each other:
//
//   node bench.mjs bullmq enqueue|process <jobs> <concurrency>   (REDIS_PORT)
//   node bench.mjs keel   enqueue|process <jobs> <concurrency>   (KEEL_URL, KEEL_TOKEN)
//
// enqueue: adds <jobs> no-op jobs with a small JSON payload in bulk (chunks of 1,000; BullMQ's
// addBulk, keel's {"jobs": [...]}) and prints jobs/s.
// process: with <jobs> already waiting, works them all with <concurrency> jobs in flight
// (BullMQ: one Worker with that concurrency, which takes each next job in the call that
// completes the last; keel: pull loops over HTTP, each reporting its finished batch of 50 and
// taking the next one in one call) and prints jobs/s. keel is driven with Node's standard
// `http` client on a keep-alive agent, as a worker would be.
import { keelClient } from './keel-client.mjs';

const [system, mode, jobsArg, concurrencyArg] = process.argv.slice(2);
const JOBS = Number(jobsArg ?? 50000);
const CONCURRENCY = Number(concurrencyArg ?? 100);
const CHUNK = 1000;
const BATCH = Number(process.env.BATCH ?? 50);
const QUEUE = 'bench';
const payload = (i) => ({ user: i, kind: 'welcome', locale: 'en' });

function report(started, n) {
  const seconds = (performance.now() - started) / 1000;
  console.log(`${system} ${mode} ${n} jobs in ${seconds.toFixed(3)} s: ${Math.round(n / seconds)} jobs/s`);
}

async function bullmq() {
  // Loaded here, so a keel run does not spend its CPU on loading BullMQ and ioredis.
  const { Queue, Worker } = await import('bullmq');
  const connection = { host: '127.0.0.1', port: Number(process.env.REDIS_PORT) };
  if (mode === 'enqueue') {
    const queue = new Queue(QUEUE, { connection });
    await queue.obliterate({ force: true });
    const started = performance.now();
    for (let i = 0; i < JOBS; i += CHUNK) {
      const jobs = [];
      for (let j = i; j < Math.min(i + CHUNK, JOBS); j++) {
        jobs.push({ name: 'noop', data: payload(j) });
      }
      await queue.addBulk(jobs);
    }
    report(started, JOBS);
    await queue.close();
    return;
  }
  let done = 0;
  let started;
  await new Promise((resolve) => {
    const worker = new Worker(QUEUE, async () => {}, {
      connection,
      concurrency: CONCURRENCY,
      removeOnComplete: { count: 1000 },
    });
    worker.on('completed', () => {
      done += 1;
      if (done === JOBS) {
        report(started, JOBS);
        worker.close().then(resolve);
      }
    });
    started = performance.now();
  });
}

async function keel() {
  const post = keelClient();
  if (mode === 'enqueue') {
    const started = performance.now();
    for (let i = 0; i < JOBS; i += CHUNK) {
      const jobs = [];
      for (let j = i; j < Math.min(i + CHUNK, JOBS); j++) {
        jobs.push({ name: 'noop', payload: payload(j) });
      }
      await post(`/queues/${QUEUE}/jobs`, { jobs });
    }
    report(started, JOBS);
    return;
  }
  let done = 0;
  const started = performance.now();
  // The run ends when the last job is reported done; a loop then still waiting on an empty
  // queue is not waited for.
  let finish;
  const allDone = new Promise((resolve) => { finish = resolve; });
  const loop = async () => {
    let finished = [];
    for (;;) {
      const complete = finished.map((j) => ({ id: j.id, token: j.token }));
      const reply = await post(`/queues/${QUEUE}/fetch`, { max: BATCH, lease: '30s', wait: '1s', worker: 'bench', complete });
      done += (reply.completed ?? []).filter((r) => r.ok).length;
      if (done >= JOBS) finish();
      finished = reply.jobs;
    }
  };
  for (let i = 0; i < Math.max(1, CONCURRENCY / BATCH); i++) loop().catch((e) => { console.error(e); process.exit(1); });
  await allDone;
  report(started, JOBS);
}

await (system === 'bullmq' ? bullmq() : keel());
process.exit(0);
