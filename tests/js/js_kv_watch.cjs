// Watches a JetStream key-value bucket with @nats-io/kv, unchanged: keys, history and a watcher
// that sees the current values and then every change (ordered push consumers). Usage: node
// js_kv_watch.cjs <host:port> (NODE_PATH names the installed clients). Prints "ok" when every check
// holds. The same script runs against nats-server, so it describes NATS's behaviour.

const { connect } = require("@nats-io/transport-node");
const { Kvm } = require("@nats-io/kv");

function check(condition, what) {
  if (!condition) {
    throw new Error(`check failed: ${what}`);
  }
}

async function main() {
  const [server] = process.argv.slice(2);
  const nc = await connect({ servers: server });
  const kv = await new Kvm(nc).create(`watch${Date.now() % 1000000}`, { history: 5 });
  await kv.put("a", "1");
  await kv.put("b", "2");
  await kv.put("a", "3");
  const keys = [];
  for await (const k of await kv.keys()) {
    keys.push(k);
  }
  check(keys.sort().join() === "a,b", `keys ${keys}`);
  const history = [];
  for await (const e of await kv.history({ key: "a" })) {
    history.push(e.string());
  }
  check(history.join() === "1,3", `history ${history}`);
  const watcher = await kv.watch();
  const seen = [];
  const done = (async () => {
    for await (const e of watcher) {
      seen.push(`${e.key}=${e.string()}`);
      if (e.key === "c") break;
    }
  })();
  await kv.put("c", "4");
  await Promise.race([done, new Promise((_, reject) => setTimeout(() => reject(new Error("watch timed out")), 5000))]);
  check(seen.join() === "b=2,a=3,c=4", `watched ${seen}`);
  await kv.destroy();
  await nc.close();
  console.log("ok");
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
