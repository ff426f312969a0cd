// Drives JetStream pull consumers with @nats-io/jetstream, unchanged: add, get, fetch, ack, nak,
// consumer info and list. Usage: node js_consumers.cjs <host:port> <section>... (NODE_PATH names
// the installed clients). Prints "ok" when every check holds. The same script runs against
// nats-server, so it describes NATS's behaviour.

const { connect } = require("@nats-io/transport-node");
const { jetstream, jetstreamManager, AckPolicy } = require("@nats-io/jetstream");

function check(condition, what) {
  if (!condition) {
    throw new Error(`check failed: ${what}`);
  }
}

async function fetchAll(consumer, max) {
  const got = [];
  const messages = await consumer.fetch({ max_messages: max, expires: 2000 });
  for await (const m of messages) {
    got.push(m);
    if (got.length === max) break;
  }
  return got;
}

async function pull(js, jsm, tag) {
  const name = `JPL${tag}`;
  await jsm.streams.add({ name, subjects: [`jpl${tag}.>`] });
  for (let i = 0; i < 6; i++) {
    await js.publish(`jpl${tag}.x`, String(i));
  }
  const added = await jsm.consumers.add(name, { durable_name: "w", ack_policy: AckPolicy.Explicit });
  check(added.name === "w" && added.num_pending === 6, `added: ${JSON.stringify(added)}`);
  const consumer = await js.consumers.get(name, "w");
  const first = await fetchAll(consumer, 3);
  check(first.map((m) => m.string()).join() === "0,1,2", `first batch ${first.map((m) => m.string())}`);
  check(first[0].seq === 1 && first[0].info.deliveryCount === 1, "first message's metadata");
  check(first[0].subject === `jpl${tag}.x`, "stored subject");
  for (const m of first) {
    await m.ackAck();
  }
  const rest = await fetchAll(consumer, 3);
  check(rest.map((m) => m.string()).join() === "3,4,5", `second batch ${rest.map((m) => m.string())}`);
  for (const m of rest) {
    await m.ackAck();
  }
  // Nothing left: the fetch ends empty when it expires.
  const none = await fetchAll(consumer, 1);
  check(none.length === 0, "an empty consumer gives nothing");
  const info = await consumer.info();
  check(info.num_pending === 0 && info.num_ack_pending === 0, `info ${JSON.stringify(info)}`);
  const names = [];
  for await (const c of jsm.consumers.list(name)) {
    names.push(c.name);
  }
  check(names.includes("w"), `list ${names}`);
  await jsm.streams.delete(name);
}

// A fetch bounded by bytes: it ends when the next message would not fit, and what it left is
// delivered to the next fetch.
async function maxBytes(js, jsm, tag) {
  const name = `JMB${tag}`;
  await jsm.streams.add({ name, subjects: [`jmb${tag}.>`] });
  const body = "x".repeat(100);
  for (let i = 0; i < 6; i++) {
    await js.publish(`jmb${tag}.x`, `${i}${body}`);
  }
  await jsm.consumers.add(name, { durable_name: "w", ack_policy: AckPolicy.Explicit });
  const consumer = await js.consumers.get(name, "w");
  const got = [];
  let ended = null;
  try {
    const messages = await consumer.fetch({ max_bytes: 450, expires: 2000 });
    for await (const m of messages) {
      got.push(m.string()[0]);
      m.ack();
    }
  } catch (e) {
    ended = e;
  }
  check(got.join() === "0,1", `450 bytes hold two messages of about 200: ${got}`);
  // The client raises the server's 409 "Message Size Exceeds MaxBytes".
  check(ended && ended.code === 409 && /maxbytes/i.test(ended.message), `ended by ${ended}`);
  const rest = [];
  const more = await consumer.fetch({ max_bytes: 100000, expires: 1000 });
  for await (const m of more) {
    rest.push(m.string()[0]);
    m.ack();
  }
  check(rest.join() === "2,3,4,5", `the next fetch gets the rest: ${rest}`);
  await jsm.streams.delete(name);
}

// An ack-none consumer's message that a fetch could not take (it did not fit max_bytes) is not
// lost: the next fetch gets it.
async function ackNoneKept(js, jsm, tag) {
  const name = `JAN${tag}`;
  await jsm.streams.add({ name, subjects: [`jan${tag}.>`] });
  for (let i = 0; i < 4; i++) {
    await js.publish(`jan${tag}.x`, `${i}${"y".repeat(i === 2 ? 600 : 10)}`);
  }
  await jsm.consumers.add(name, { durable_name: "w", ack_policy: AckPolicy.None });
  const consumer = await js.consumers.get(name, "w");
  const first = [];
  try {
    for await (const m of await consumer.fetch({ max_bytes: 400, expires: 2000 })) {
      first.push(m.string()[0]);
    }
  } catch (e) {
    check(e.code === 409, `ended by ${e}`);
  }
  check(first.join() === "0,1", `the first fetch takes what fits: ${first}`);
  const rest = [];
  for await (const m of await consumer.fetch({ max_messages: 2, expires: 2000 })) {
    rest.push(m.string()[0]);
  }
  check(rest.join() === "2,3", `the message that did not fit comes next: ${rest}`);
  await jsm.streams.delete(name);
}

async function main() {
  const [server, ...sections] = process.argv.slice(2);
  const nc = await connect({ servers: server });
  const js = jetstream(nc);
  const jsm = await jetstreamManager(nc);
  const tag = String(Date.now() % 1000000);
  for (const section of sections) {
    if (section === "pull") await pull(js, jsm, tag);
    else if (section === "max_bytes") await maxBytes(js, jsm, tag);
    else if (section === "ack_none_kept") await ackNoneKept(js, jsm, tag);
    else throw new Error(`unknown section ${section}`);
  }
  await nc.close();
  console.log("ok");
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
