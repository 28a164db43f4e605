// Redis's time per job in each of the Redis job store's scripts, by SLOWLOG: adds <jobs> jobs
// with the store's own Lua (prelude + script, as keel loads them), then leases 50 at a time,
// completes them in the next call and prunes to 1,000 completed every 1,000 jobs — what a pull
// worker over HTTP makes keel do. Prints microseconds of Redis time per job for each script.
//   node scripts.mjs <jobs>     (REDIS_PORT; flushes that Redis)
// With CALLGRIND_PID (a redis-server run under `valgrind --tool=callgrind`), the loop's
// instructions are what that run's dump counts: the counters are zeroed before the loop and
// dumped after it, and nothing is logged (the times it prints are then zero).
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import Redis from 'ioredis';

const JOBS = Number(process.argv[2] ?? 50000);
const LUA = new URL('../../crates/keel-redis/src/queue/lua/', import.meta.url);
const redis = new Redis({ port: Number(process.env.REDIS_PORT) });
const prelude = readFileSync(new URL('prelude.lua', LUA), 'utf8');
const load = (name) => redis.script('LOAD', `${prelude}\n${readFileSync(new URL(`${name}.lua`, LUA), 'utf8')}`);
const [add, fetch, complete, prune] = await Promise.all(['add', 'fetch', 'complete', 'delete_finished'].map(load));
const META = 'keel:q:{bench}:m';
const hex = () => randomUUID().replaceAll('-', '');

await redis.flushall();
for (let i = 0; i < JOBS; i += 1000) {
  const args = [Date.now(), 1000];
  for (let j = 0; j < 1000; j++) {
    args.push(`${hex()}~bench`, 'noop', JSON.stringify({ i: i + j, data: 'x'.repeat(20) }), 0, 0, 1, '', '', '', '');
  }
  await redis.evalsha(add, 1, META, ...args);
}
// Every call logged, for the times; none under callgrind, where logging would be counted too.
await redis.config('SET', 'slowlog-log-slower-than', process.env.CALLGRIND_PID ? -1 : 0);
await redis.config('SET', 'slowlog-max-len', 1000000);
await redis.slowlog('RESET');
const callgrind = (command) => {
  if (!process.env.CALLGRIND_PID) return;
  execFileSync('callgrind_control', [command, process.env.CALLGRIND_PID], { stdio: 'ignore' });
};
callgrind('-z');
const COLUMNS = ['n', 'p', 'd', 'uk', 'g', 'to', 'ra', 'pg', 'pd', 'er', 'sl'];
let pending = [];
let done = 0;
for (;;) {
  const now = Date.now();
  if (pending.length > 0) {
    const args = [now];
    for (const [id, token] of pending) args.push(id, token, '');
    await redis.evalsha(complete, 1, META, ...args);
    done += pending.length;
    if (done % 1000 === 0) await redis.evalsha(prune, 1, META, 'prune', 1000, 1000, 1000, '');
  }
  const token = hex();
  const reply = await redis.evalsha(fetch, 1, META, now, 'bench', 50, now + 30000, token, ...COLUMNS);
  if (reply.length === 0 || reply[0].length === 0) break;
  pending = reply[0].map((id) => [id, token]);
}
callgrind('-d');
const log = await redis.slowlog('GET', 1000000);
await redis.config('SET', 'slowlog-log-slower-than', 10000);
const total = { fetch: 0, complete: 0, prune: 0 };
for (const [, , micros, args] of log) {
  if (String(args[0]).toUpperCase() !== 'EVALSHA') continue;
  const which = { [fetch]: 'fetch', [complete]: 'complete', [prune]: 'prune' }[args[1]];
  if (which) total[which] += micros;
}
const per = (us) => (us / done).toFixed(2);
console.log(`Redis us per job: fetch ${per(total.fetch)} complete ${per(total.complete)} prune ${per(total.prune)} total ${per(total.fetch + total.complete + total.prune)} (${done} jobs)`);
redis.disconnect();
