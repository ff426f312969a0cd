// Drives the JetStream stream API with @nats-io/jetstream, unchanged: streams, publish acks and
// message ids. Usage: node js_streams.cjs <host:port> <section>... (NODE_PATH names the installed
// clients). Prints "ok" when every check of every named section holds. The same script runs
// against nats-server, so it describes NATS's behaviour.

const { connect } = require("@nats-io/transport-node");
const { jetstream, jetstreamManager, JetStreamApiError } = require("@nats-io/jetstream");

function check(condition, what) {
  if (!condition) {
    throw new Error(`check failed: ${what}`);
  }
}

async function refused(promise, errCode, what) {
  try {
    await promise;
  } catch (e) {
    const code = e instanceof JetStreamApiError ? e.code : e?.api_error?.err_code;
    check(code === errCode, `${what}: err_code ${code} (${e}), wanted ${errCode}`);
    return;
  }
  throw new Error(`${what}: accepted`);
}

async function account(jsm) {
  const info = await jsm.getAccountInfo();
  check(info.limits !== undefined && info.api !== undefined, "account info has limits and api");
}

async function streams(js, jsm, tag) {
  const name = `ORD${tag}`;
  const created = await jsm.streams.add({ name, subjects: [`orders${tag}.>`] });
  check(created.config.name === name, "created stream's name");
  check(created.state.messages === 0 && created.state.last_seq === 0, "new stream is empty");
  const again = await jsm.streams.add({ name, subjects: [`orders${tag}.>`] });
  check(again.config.name === name, "the same config again answers with the stream");
  await refused(
    jsm.streams.add({ name, subjects: [`other${tag}.>`] }),
    10058,
    "another config for an existing stream",
  );

  for (let i = 1; i <= 3; i++) {
    const ack = await js.publish(`orders${tag}.new`, `order ${i}`);
    check(ack.stream === name && ack.seq === i && !ack.duplicate, `ack ${i}: ${JSON.stringify(ack)}`);
  }
  const info = await jsm.streams.info(name);
  check(info.state.messages === 3, `3 messages, not ${info.state.messages}`);
  check(info.state.first_seq === 1 && info.state.last_seq === 3, "sequences 1 to 3");

  const names = [];
  for await (const n of jsm.streams.names()) {
    names.push(n);
  }
  check(names.includes(name), `names ${names} hold ${name}`);
  const listed = [];
  for await (const s of jsm.streams.list()) {
    listed.push(s.config.name);
  }
  check(listed.includes(name), `list ${listed} holds ${name}`);
  check((await jsm.streams.find(`orders${tag}.new`)) === name, "found by subject");

  await refused(jsm.streams.info(`MISSING${tag}`), 10059, "info of a missing stream");
  check(await jsm.streams.delete(name), "deleted");
  await refused(jsm.streams.info(name), 10059, "info of a deleted stream");
}

async function dedup(js, jsm, tag) {
  const name = `DED${tag}`;
  await jsm.streams.add({ name, subjects: [`ded${tag}.>`] });
  const first = await js.publish(`ded${tag}.a`, "1", { msgID: "m1" });
  const second = await js.publish(`ded${tag}.a`, "1", { msgID: "m1" });
  check(first.seq === 1 && !first.duplicate, "first publish stored");
  check(second.seq === 1 && second.duplicate, "second publish is a duplicate of seq 1");
  await jsm.streams.delete(name);
}

async function messages(js, jsm, tag) {
  const name = `MSG${tag}`;
  await jsm.streams.add({ name, subjects: [`msg${tag}.>`], allow_direct: true });
  await js.publish(`msg${tag}.a`, "first");
  const h = require("@nats-io/transport-node").headers();
  h.set("Trace", "7");
  await js.publish(`msg${tag}.b`, "second", { headers: h });
  const first = await jsm.streams.getMessage(name, { seq: 1 });
  check(first.subject === `msg${tag}.a` && first.seq === 1, "message 1 by sequence");
  check(first.string() === "first", "message 1's data");
  const second = await jsm.streams.getMessage(name, { seq: 2 });
  check(second.header.get("Trace") === "7", "message 2's header");
  const direct = await jsm.direct.getMessage(name, { seq: 2 });
  check(direct !== null && direct.subject === `msg${tag}.b` && direct.seq === 2, "direct get");
  check(direct.string() === "second" && direct.header.get("Trace") === "7", "direct get body");
  const missing = await jsm.direct.getMessage(name, { seq: 9 });
  check(missing === null, "direct get past the end is null");
  const none = await jsm.streams.getMessage(name, { seq: 9 });
  check(none === null, "get past the end is null");
  await js.publish(`msg${tag}.a`, "again");
  const last = await jsm.streams.getMessage(name, { last_by_subj: `msg${tag}.a` });
  check(last.seq === 3 && last.string() === "again", "last message on a subject");
  const lastDirect = await jsm.direct.getMessage(name, { last_by_subj: `msg${tag}.a` });
  check(lastDirect.seq === 3 && lastDirect.string() === "again", "direct last on a subject");
  const nothing = await jsm.direct.getMessage(name, { last_by_subj: `msg${tag}.none` });
  check(nothing === null, "direct last on a subject with nothing is null");
  await jsm.streams.delete(name);
}

async function main() {
  const [server, ...sections] = process.argv.slice(2);
  const nc = await connect({ servers: server });
  const js = jetstream(nc);
  const jsm = await jetstreamManager(nc);
  const tag = String(Date.now() % 1000000);
  for (const section of sections) {
    if (section === "account") await account(jsm);
    else if (section === "streams") await streams(js, jsm, tag);
    else if (section === "dedup") await dedup(js, jsm, tag);
    else if (section === "messages") await messages(js, jsm, tag);
    else throw new Error(`unknown section ${section}`);
  }
  await nc.close();
  console.log("ok");
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
