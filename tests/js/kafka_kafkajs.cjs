// Drives Sluice's Kafka port with kafkajs, unchanged: a topic created, keyed records with headers
// produced with acks=all, read by a consumer group to the end, and the group's committed offsets
// fetched by the admin client. Usage: node kafka_kafkajs.cjs <host:port> (NODE_PATH names the
// installed clients). Prints "ok" when every check holds.

const { Kafka, logLevel } = require("kafkajs");

function check(condition, what) {
  if (!condition) {
    throw new Error(`check failed: ${what}`);
  }
}

async function main(broker) {
  const kafka = new Kafka({ clientId: "kafkajs-check", brokers: [broker], logLevel: logLevel.ERROR });
  const topic = "js-events";
  const admin = kafka.admin();
  await admin.connect();
  check(await admin.createTopics({ topics: [{ topic, numPartitions: 2 }], waitForLeaders: true }),
    "topic created");
  check((await admin.listTopics()).includes(topic), "topic listed");

  const producer = kafka.producer();
  await producer.connect();
  const messages = [];
  for (let i = 0; i < 100; i++) {
    messages.push({ key: `k${i % 7}`, value: `v${i}`, headers: { i: String(i) } });
  }
  const sent = await producer.send({ topic, acks: -1, messages });
  check(sent.every((r) => r.errorCode === 0), "every partition stored its records");
  await producer.disconnect();

  const consumer = kafka.consumer({ groupId: "js-group" });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const got = [];
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`only ${got.length} records`)), 30000);
    consumer.run({
      eachMessage: async ({ message }) => {
        got.push(message);
        if (got.length === 100) {
          clearTimeout(timer);
          resolve();
        }
      },
    }).catch(reject);
  });
  check(got.length === 100, "100 records read");
  const values = new Set(got.map((m) => m.value.toString()));
  check(values.size === 100 && values.has("v0") && values.has("v99"), "each record once");
  check(got.every((m) => m.headers.i.toString() === m.value.toString().slice(1)), "headers kept");
  await consumer.disconnect();

  const offsets = await admin.fetchOffsets({ groupId: "js-group", topics: [topic] });
  const committed = offsets[0].partitions.reduce((sum, p) => sum + Number(p.offset), 0);
  check(committed === 100, `committed offsets add up to the records read (${committed})`);
  const groups = await admin.listGroups();
  check(groups.groups.some((g) => g.groupId === "js-group"), "group listed");
  await admin.disconnect();
  console.log("ok");
}

main(process.argv[2]).catch((e) => {
  console.error(e);
  process.exit(1);
});
