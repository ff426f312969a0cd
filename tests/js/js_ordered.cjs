// Reads a stream with @nats-io/jetstream's ordered consumers, unchanged: ephemeral pull
// consumers the client makes, checks for gaps and remakes. Usage: node js_ordered.cjs <host:port>
// (NODE_PATH names the installed clients). Prints "ok" when every check holds. The same script runs
// against nats-server, so it describes NATS's behaviour.

const { connect } = require("@nats-io/transport-node");
const { jetstream, jetstreamManager } = require("@nats-io/jetstream");

function check(condition, what) {
  if (!condition) {
    throw new Error(`check failed: ${what}`);
  }
}

async function main() {
  const nc = await connect({ servers: process.argv[2] });
  const js = jetstream(nc);
  const jsm = await jetstreamManager(nc);
  const name = `ORD${Date.now() % 1000000}`;
  await jsm.streams.add({ name, subjects: [`ord${name}.>`] });
  for (let i = 0; i < 5; i++) {
    await js.publish(`ord${name}.x`, String(i));
  }
  // A fetch through an ordered consumer.
  const fetcher = await js.consumers.get(name);
  const fetched = [];
  for await (const m of await fetcher.fetch({ max_messages: 5, expires: 2000 })) {
    fetched.push(m.string());
    if (fetched.length === 5) break;
  }
  check(fetched.join() === "0,1,2,3,4", `fetched ${fetched}`);
  // A consume that sees what is there and then what comes.
  const consumer = await js.consumers.get(name, { opt_start_seq: 4, deliver_policy: "by_start_sequence" });
  const seen = [];
  const messages = await consumer.consume();
  const publishing = (async () => {
    await js.publish(`ord${name}.x`, "5");
  })();
  for await (const m of messages) {
    seen.push(m.string());
    if (seen.length === 3) break;
  }
  await publishing;
  check(seen.join() === "3,4,5", `consumed ${seen}`);
  await jsm.streams.delete(name);
  await nc.close();
  console.log("ok");
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
