// kafkajs (2.2.4, from npm: its own pure-JavaScript protocol code) against sluice's Kafka
// listener. Run by tests/kafka_clients.rs with node; kafkajs is found under
// $SLUICE_KAFKA_NODE (default target/kafka-node in the workspace), where install.sh puts it.
//
//   node kafkajs_client.js SCENARIO --bootstrap HOST:PORT --topic T [--group G] [-n N]
//
// The contract of the Python scripts (README.md here): the last line of stdout is one JSON
// object, "ok": true with what was checked, or "ok": false with "error" and "step"; the exit
// status is 0 only with "ok": true; a watchdog (--timeout-s, 90 s) ends a run that hangs,
// naming the step it hung in. Progress ("-- step") goes to stderr.
//
// Scenarios:
// - tour: the admin client creates the topic (3 partitions) and reads it back; an
//   idempotent producer sends N keyed records with a header, in batches alternating
//   uncompressed and gzip; a consumer group reads them from the beginning, each once (no
//   duplicate within half a second after the last) and in offset order per partition,
//   and commits; the group's committed offsets are then each partition's end, the group
//   Empty, and the topic deleted.
// - transactions: a transactional producer commits N records and aborts N more; a
//   read_committed consumer sees exactly the committed ones, in order, and a
//   read_uncommitted one all 2N (the aborted ones are in the log, skipped).
'use strict';

const path = require('path');

const state = { scenario: null, step: 'start' };

function emit(summary, code) {
  process.stdout.write(JSON.stringify(summary) + '\n', () => process.exit(code));
}
function finish(fields) {
  emit({ ok: true, scenario: state.scenario, ...fields }, 0);
}
function fail(message, fields = {}) {
  process.stderr.write(`FAILED in step ${state.step}: ${message}\n`);
  emit({ ok: false, scenario: state.scenario, step: state.step, error: message, ...fields }, 1);
}
function step(name) {
  state.step = name;
  process.stderr.write(`-- ${name}\n`);
}
function check(holds, message) {
  if (!holds) throw new Error(message);
}

function parseArgs(argv) {
  const args = { scenario: argv[0], group: 'kafkajs-group', n: 300, timeoutS: 90 };
  for (let i = 1; i < argv.length; i += 2) {
    const [flag, value] = [argv[i], argv[i + 1]];
    if (flag === '--bootstrap') args.bootstrap = value;
    else if (flag === '--topic') args.topic = value;
    else if (flag === '--group') args.group = value;
    else if (flag === '-n') args.n = Number(value);
    else if (flag === '--timeout-s') args.timeoutS = Number(value);
    else throw new Error(`unknown flag ${flag}`);
  }
  if (!args.bootstrap || !args.topic) throw new Error('--bootstrap and --topic are required');
  return args;
}

function kafkajs() {
  const dir = process.env.SLUICE_KAFKA_NODE || path.join(__dirname, '..', '..', 'target', 'kafka-node');
  return require(path.join(dir, 'node_modules', 'kafkajs'));
}

// Consumes from the beginning in `group` until `count` records arrived (or the deadline),
// then disconnects (which commits). Returns the records in arrival order.
async function consumeAll(kafka, topic, group, count, options = {}) {
  const consumer = kafka.consumer({ groupId: group, sessionTimeout: 10000, heartbeatInterval: 1000, ...options });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const seen = [];
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${seen.length} of ${count} records arrived in 30 s`)), 30000);
    consumer
      .run({
        eachMessage: async ({ partition, message }) => {
          seen.push({ partition, offset: Number(message.offset), key: message.key && message.key.toString(), value: message.value.toString(), headers: message.headers });
          if (seen.length >= count) {
            clearTimeout(timer);
            resolve();
          }
        },
      })
      .catch(reject);
  });
  // Anything beyond `count` would arrive now: a duplicate shows up as one too many.
  await new Promise((r) => setTimeout(r, 500));
  await consumer.disconnect();
  return seen;
}

// Each partition's records in offset order, no offset twice.
function checkOrder(seen) {
  const last = new Map();
  for (const r of seen) {
    const before = last.get(r.partition);
    check(before === undefined || r.offset > before, `partition ${r.partition}: offset ${r.offset} after ${before}`);
    last.set(r.partition, r.offset);
  }
}

async function tour(kafka, { topic, group, n }) {
  const { CompressionTypes } = kafkajs();
  const admin = kafka.admin();
  await admin.connect();
  step('create the topic');
  check(await admin.createTopics({ topics: [{ topic, numPartitions: 3 }], waitForLeaders: true }), 'createTopics said the topic existed');
  const metadata = await admin.fetchTopicMetadata({ topics: [topic] });
  const partitions = metadata.topics[0].partitions.map((p) => p.partitionId).sort();
  check(JSON.stringify(partitions) === '[0,1,2]', `partitions ${partitions}`);
  check((await admin.listTopics()).includes(topic), 'listTopics lacks the topic');

  step('produce, idempotent');
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  const batch = 100;
  for (let from = 0; from < n; from += batch) {
    const messages = [];
    for (let i = from; i < Math.min(n, from + batch); i++) messages.push({ key: `k${i}`, value: `v${i}`, headers: { origin: 'kafkajs' } });
    const compression = (from / batch) % 2 ? CompressionTypes.GZIP : CompressionTypes.None;
    await producer.send({ topic, messages, compression, acks: -1 });
  }
  await producer.disconnect();
  const ends = await admin.fetchTopicOffsets(topic);
  const total = ends.reduce((sum, p) => sum + Number(p.high), 0);
  check(total === n, `the partitions' end offsets add up to ${total}, not ${n}`);

  step('consume in a group');
  const seen = await consumeAll(kafka, topic, group, n);
  check(seen.length === n, `${seen.length} records, not ${n}`);
  const values = new Set(seen.map((r) => r.value));
  check(values.size === n, `${values.size} distinct values in ${n} records`);
  for (const r of seen) {
    check(r.value === `v${r.key.slice(1)}`, `key ${r.key} came with value ${r.value}`);
    check(r.headers.origin && r.headers.origin.toString() === 'kafkajs', `record ${r.key} lost its header`);
  }
  checkOrder(seen);

  step('committed offsets');
  const committed = await admin.fetchOffsets({ groupId: group, topics: [topic] });
  const offsets = committed[0].partitions.map((p) => [p.partition, Number(p.offset)]).sort((a, b) => a[0] - b[0]);
  const highs = ends.map((p) => [p.partition, Number(p.high)]).sort((a, b) => a[0] - b[0]);
  check(JSON.stringify(offsets) === JSON.stringify(highs), `committed ${JSON.stringify(offsets)}, ends ${JSON.stringify(highs)}`);
  const described = await admin.describeGroups([group]);
  const groupState = described.groups[0].state;
  check(groupState === 'Empty', `the group is ${groupState} after its member left`);

  step('delete the topic');
  await admin.deleteTopics({ topics: [topic] });
  check(!(await admin.listTopics()).includes(topic), 'the topic is still listed');
  await admin.disconnect();
  finish({ records: seen.length, partitions: [...new Set(seen.map((r) => r.partition))].sort(), committed: offsets.reduce((s, o) => s + o[1], 0), group_state: groupState });
}

async function transactions(kafka, { topic, group, n }) {
  step('commit one transaction, abort another');
  const producer = kafka.producer({ transactionalId: `${topic}-txn`, idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  for (const [outcome, prefix] of [['commit', 'committed'], ['abort', 'aborted']]) {
    const txn = await producer.transaction();
    const messages = [];
    for (let i = 0; i < n; i++) messages.push({ key: `${prefix}-${i % 7}`, value: `${prefix}-${i}` });
    await txn.send({ topic, messages });
    await txn[outcome]();
  }
  await producer.disconnect();

  step('read committed');
  const seen = await consumeAll(kafka, topic, group, n, { readUncommitted: false });
  const committed = seen.filter((r) => r.value.startsWith('committed-')).length;
  const aborted = seen.filter((r) => r.value.startsWith('aborted-')).length;
  check(committed === n && aborted === 0, `read_committed saw ${committed} committed and ${aborted} aborted records`);
  checkOrder(seen);

  step('read uncommitted');
  const everything = await consumeAll(kafka, topic, `${group}-all`, 2 * n, { readUncommitted: true });
  check(everything.length === 2 * n, `read_uncommitted saw ${everything.length} records, not ${2 * n}`);
  finish({ committed, aborted, everything: everything.length });
}

async function main() {
  let args;
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (e) {
    state.scenario = process.argv[2] || null;
    return fail(`bad arguments: ${e.message}`);
  }
  state.scenario = args.scenario;
  // Not unref'd: a scenario stuck on a promise with nothing else pending still ends here.
  setTimeout(() => fail(`no result after ${args.timeoutS} s`), args.timeoutS * 1000);
  const { Kafka, logLevel } = kafkajs();
  const level = process.env.SLUICE_KAFKA_CLIENT_LOG ? logLevel.INFO : logLevel.ERROR;
  const kafka = new Kafka({ clientId: 'sluice-kafkajs', brokers: [args.bootstrap], logLevel: level });
  const scenarios = { tour, transactions };
  const run = scenarios[args.scenario];
  if (!run) return fail(`unknown scenario ${args.scenario}; one of ${Object.keys(scenarios).join(', ')}`);
  try {
    await run(kafka, args);
  } catch (e) {
    fail(e && e.stack ? `${e.message} (${e.stack.split('\n')[1].trim()})` : String(e));
  }
}

// finish and fail exit; reaching the end of the event loop means neither ran.
process.on('beforeExit', () => fail('the scenario ended without a summary'));
process.env.KAFKAJS_NO_PARTITIONER_WARNING = '1';
main();
