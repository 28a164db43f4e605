// Pushes many jobs through keel with the default retention and reports progress, so the
// calling script can sample keel's RSS and store size as it goes:
//
//   node soak.mjs <jobs> <report every>   (KEEL_URL, KEEL_TOKEN)
//
// Adds jobs in bulk chunks of 1,000 while two pull loops (batches of 50, reporting each batch
// in the call that takes the next) work them; prints "processed <n>" every <report every> jobs
// and "done <n>" at the end.
import { keelClient } from './keel-client.mjs';

const JOBS = Number(process.argv[2] ?? 1000000);
const EVERY = Number(process.argv[3] ?? 100000);
const QUEUE = 'soak';
const post = keelClient();

let added = 0;
let done = 0;
let next = EVERY;
const produce = async () => {
  while (added < JOBS) {
    // Keep at most ~20,000 jobs waiting, as a steady producer would.
    if (added - done > 20000) {
      await new Promise((r) => setTimeout(r, 5));
      continue;
    }
    const jobs = [];
    for (let i = 0; i < 1000 && added + i < JOBS; i++) {
      jobs.push({ name: 'noop', payload: { user: added + i, kind: 'welcome', locale: 'en' } });
    }
    await post(`/queues/${QUEUE}/jobs`, { jobs });
    added += jobs.length;
  }
};
const work = async () => {
  let finished = [];
  while (done < JOBS) {
    const complete = finished.map((j) => ({ id: j.id, token: j.token }));
    const reply = await post(`/queues/${QUEUE}/fetch`, { max: 50, lease: '30s', complete });
    done += (reply.completed ?? []).filter((r) => r.ok).length;
    while (done >= next) {
      console.log(`processed ${next}`);
      next += EVERY;
    }
    finished = reply.jobs;
    if (reply.jobs.length === 0 && finished.length === 0) await new Promise((r) => setTimeout(r, 2));
  }
};
await Promise.all([produce(), work(), work()]);
console.log(`done ${done}`);
process.exit(0);
