// kafkajs 2.2.4 driven from compat/test_groups_kafkajs.py. One mode per run; the result is one JSON line on stdout.
//
//   node client.js produce BOOTSTRAP TOPIC PREFIX COUNT PARTITIONS
//       produces PREFIX0..PREFIX{COUNT-1} (key k<i>, header h=<i>) round-robin over the partitions (acks=all)
//   node client.js group BOOTSTRAP TOPIC GROUP
//       joins GROUP (autoCommit off) and consumes, committing after every batch, until SIGTERM; prints one JSON line
//       per event as it happens ({"assigned": [partitions]}, {"records": [...]} once the batch is committed), then
//       leaves the group and prints {"committed": {partition: offset}} read back with the admin client
'use strict'

const { Kafka, logLevel } = require('kafkajs')

const [mode, bootstrap, ...args] = process.argv.slice(2)
const kafka = new Kafka({
  clientId: 'strom-compat-kafkajs',
  brokers: [bootstrap],
  logLevel: logLevel[process.env.KAFKAJS_LOG_LEVEL || "ERROR"],
  retry: { retries: 8, initialRetryTime: 100, maxRetryTime: 2000 },
})

async function produce(topic, prefix, count, partitions) {
  const producer = kafka.producer({ allowAutoTopicCreation: false })
  await producer.connect()
  const messages = []
  for (let i = 0; i < count; i++) {
    messages.push({ key: `k${i}`, value: `${prefix}${i}`, partition: i % partitions, headers: { h: `${i}` } })
  }
  const result = await producer.send({ topic, messages, acks: -1 })
  await producer.disconnect()
  return { produced: count, result }
}

function emit(event) {
  process.stdout.write(JSON.stringify(event) + '\n')
}

async function group(topic, groupId) {
  const consumer = kafka.consumer({
    groupId, sessionTimeout: 10000, heartbeatInterval: 1000, rebalanceTimeout: 10000,
    maxWaitTimeInMs: 500, // short fetch waits: heartbeats, rebalances and the leave on SIGTERM happen between fetches
  })
  let stopping = false
  process.on('SIGTERM', () => { stopping = true })
  consumer.on(consumer.events.GROUP_JOIN, (e) => {
    emit({ assigned: e.payload.memberAssignment[topic] || [] })
  })
  await consumer.connect()
  await consumer.subscribe({ topics: [topic], fromBeginning: true })
  await consumer.run({
    autoCommit: false,
    eachBatch: async ({ batch, resolveOffset, heartbeat }) => {
      const records = []
      for (const m of batch.messages) {
        records.push({
          partition: batch.partition,
          offset: Number(m.offset),
          key: m.key && m.key.toString(),
          value: m.value && m.value.toString(),
          headers: Object.fromEntries(Object.entries(m.headers || {}).map(([k, v]) => [k, v.toString()])),
        })
        resolveOffset(m.offset)
      }
      if (batch.messages.length > 0) {
        const last = batch.messages[batch.messages.length - 1]
        // Commit what was processed: the next offset to read, as every Kafka client does.
        await consumer.commitOffsets([{ topic, partition: batch.partition, offset: (BigInt(last.offset) + 1n).toString() }])
        emit({ records })
      }
      await heartbeat()
    },
  })
  while (!stopping) {
    await new Promise((r) => setTimeout(r, 50))
  }
  await consumer.disconnect()

  const admin = kafka.admin()
  await admin.connect()
  const fetched = await admin.fetchOffsets({ groupId, topics: [topic] })
  await admin.disconnect()
  const committed = {}
  for (const p of fetched[0].partitions) committed[p.partition] = Number(p.offset)
  return { committed }
}

async function main() {
  switch (mode) {
    case 'produce':
      return produce(args[0], args[1], Number(args[2]), Number(args[3]))
    case 'group':
      return group(args[0], args[1])
    default:
      throw new Error(`unknown mode ${mode}`)
  }
}

main().then(
  (result) => { process.stdout.write(JSON.stringify(result) + '\n'); process.exit(0) },
  (err) => { process.stderr.write(`${err.stack || err}\n`); process.exit(1) },
)
