// Drives a JetStream key-value bucket with @nats-io/kv, unchanged: create, put, get, update with a
// revision, create, delete, purge. Usage: node js_kv.cjs <host:port> (NODE_PATH names the installed
// clients). Prints "ok" when every check holds. The same script runs against nats-server, so it
// describes NATS's behaviour.

const { connect } = require("@nats-io/transport-node");
const { Kvm } = require("@nats-io/kv");

function check(condition, what) {
  if (!condition) {
    throw new Error(`check failed: ${what}`);
  }
}

async function refused(promise, what) {
  try {
    await promise;
  } catch (e) {
    return;
  }
  throw new Error(`${what}: accepted`);
}

async function main() {
  const [server] = process.argv.slice(2);
  const nc = await connect({ servers: server });
  const kvm = new Kvm(nc);
  const name = `models${Date.now() % 1000000}`;
  const kv = await kvm.create(name, { history: 3 });
  const first = await kv.put("llama", "v1");
  const entry = await kv.get("llama");
  check(entry.string() === "v1" && entry.revision === first, "get after put");
  const second = await kv.update("llama", "v2", first);
  check(second > first, "update with the current revision");
  await refused(kv.update("llama", "v3", first), "an update with a stale revision");
  await refused(kv.create("llama", "again"), "create of an existing key");
  await kv.create("mistral", "m1");
  await kv.delete("llama");
  const deleted = await kv.get("llama");
  check(deleted === null || deleted.operation === "DEL", "a deleted key reads as deleted");
  await kv.create("llama", "v4");
  check((await kv.get("llama")).string() === "v4", "create after delete");
  const old = await kv.get("llama", { revision: second });
  check(old !== null && old.string() === "v2", "an older revision within the history");
  await kv.purge("mistral");
  const purged = await kv.get("mistral");
  check(purged === null || purged.operation === "PURGE", "a purged key reads as purged");
  await kv.destroy();
  await nc.close();
  console.log("ok");
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
