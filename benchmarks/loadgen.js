// Load generator for benchmarks/run.py: one Node.js process driving many
// connections, so that the client is not what limits the server under test.
//
//   node benchmarks/loadgen.js '<json config>'
//
// Talks to run.py over stdio, one JSON object per line: it connects everything,
// prints {"event":"ready"}, waits for the line "go" on stdin (run.py samples
// the server's CPU time and memory in between), runs the measured phase, then
// prints {"event":"result", ...} and exits. Every phase is bounded in time.
"use strict";

const net = require("net");
const readline = require("readline");
const WebSocket = require("ws");

const cfg = JSON.parse(process.argv[2]);
const now = () => Number(process.hrtime.bigint()) / 1e6; // milliseconds

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

function fail(message) {
  emit({ event: "error", message });
  process.exit(2);
}

function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

function summary(latencies) {
  const sorted = Float64Array.from(latencies).sort();
  return { p50_ms: percentile(sorted, 50), p99_ms: percentile(sorted, 99), max_ms: sorted.length ? sorted[sorted.length - 1] : null };
}

let goResolve;
const go = new Promise((resolve) => (goResolve = resolve));
readline.createInterface({ input: process.stdin }).on("line", (line) => {
  if (line.trim() === "go") goResolve();
});

setTimeout(() => fail(`loadgen gave up after ${cfg.timeout_s} s`), cfg.timeout_s * 1000).unref();

// Opens `count` connections with at most `parallel` handshakes in flight, so
// that no server's accept backlog overflows (a dropped SYN costs a 1 s retry).
function openMany(count, parallel, open) {
  return new Promise((resolve, reject) => {
    const conns = new Array(count);
    let started = 0;
    let done = 0;
    const next = () => {
      if (started >= count) return;
      const i = started++;
      open(i).then(
        (conn) => {
          conns[i] = conn;
          done++;
          if (done === count) resolve(conns);
          else next();
        },
        (err) => reject(new Error(`connection ${i}: ${err && err.message}`)),
      );
    };
    for (let k = 0; k < Math.min(parallel, count); k++) next();
  });
}

// `onMessage`, if given, is attached at once: a message the server sends right
// after the handshake must not be missed.
function openWs(path, onMessage) {
  return new Promise((resolve, reject) => {
    // An all-zero masking key (still a masked frame to the server) spares the load
    // generator the masking of what it sends, the same for every server under test.
    const ws = new WebSocket(cfg.url + path, {
      perMessageDeflate: false,
      maxPayload: 64 * 1024 * 1024,
      generateMask: (mask) => mask.fill(0),
    });
    ws.binaryType = "nodebuffer";
    if (onMessage) ws.on("message", onMessage);
    ws.once("open", () => resolve(ws));
    ws.once("error", reject);
    ws.once("unexpected-response", (req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
  });
}

function openTcp() {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: cfg.host, port: cfg.port });
    sock.setNoDelay(true);
    sock.once("connect", () => resolve(sock));
    sock.once("error", reject);
  });
}

// -- echo: each connection sends, waits for the echo, sends again, until the deadline.
async function echo() {
  const payload = cfg.binary ? Buffer.alloc(cfg.size, 0x61) : "x".repeat(cfg.size);
  const raw = cfg.protocol === "tcp";
  const conns = await openMany(cfg.conns, 50, () => (raw ? openTcp() : openWs("/echo")));
  emit({ event: "ready", conns: conns.length });
  await go;
  const latencies = [];
  let count = 0;
  const start = now();
  const deadline = start + cfg.duration_s * 1000;
  let finished = 0;
  let last = start;
  await new Promise((resolve, reject) => {
    conns.forEach((conn) => {
      let sentAt = 0;
      const send = () => {
        sentAt = now();
        if (raw) conn.write(payload);
        else conn.send(payload);
      };
      const received = () => {
        const t = now();
        latencies.push(t - sentAt);
        count++;
        if (t < deadline) send();
        else {
          last = Math.max(last, t);
          if (++finished === conns.length) resolve();
        }
      };
      if (raw) {
        let got = 0;
        conn.on("data", (chunk) => {
          got += chunk.length;
          while (got >= cfg.size) {
            got -= cfg.size;
            received();
          }
        });
      } else {
        conn.on("message", (data) => {
          if (data.length !== cfg.size) reject(new Error(`echo of ${data.length} bytes, sent ${cfg.size}`));
          received();
        });
      }
      conn.on("close", () => reject(new Error("server closed a connection during echo")));
      send();
    });
  }).catch((err) => fail(err.message));
  const elapsed = (last - start) / 1000;
  conns.forEach((c) => (raw ? c.destroy() : c.terminate()));
  emit({
    event: "result",
    round_trips: count,
    elapsed_s: elapsed,
    rate: count / elapsed,
    mib_s: (count * cfg.size) / elapsed / 2 ** 20,
    ...summary(latencies),
  });
  process.exit(0);
}

// -- fanout: subscribers on /broadcast, one publisher; paced if cfg.rate is set.
async function fanout() {
  const workers = {};
  // Servers that tell which process holds a connection (cross-worker) send "pid N" first.
  const total = cfg.subscribers * cfg.messages;
  const latencies = new Float64Array(total);
  const sentAt = new Float64Array(cfg.messages);
  let delivered = 0;
  let last = 0;
  let doneResolve;
  const done = new Promise((resolve) => (doneResolve = resolve));
  let started = false;
  const onMessage = (data) => {
    const text = data.toString();
    if (text.startsWith("pid ")) {
      workers[text] = (workers[text] || 0) + 1;
      return;
    }
    if (!started) return;
    const t = now();
    const seq = parseInt(text, 10);
    latencies[delivered++] = t - sentAt[seq];
    last = t;
    if (delivered === total) doneResolve();
  };
  const subs = await openMany(cfg.subscribers, 100, () => openWs(cfg.path || "/broadcast", onMessage));
  const publisher = await openWs(cfg.path || "/broadcast");
  subs.forEach((ws) => ws.on("close", () => fail("server closed a subscriber")));
  publisher.on("close", () => fail("server closed the publisher"));
  if (cfg.expect_pids) {
    const until = now() + 10000;
    while (Object.values(workers).reduce((a, b) => a + b, 0) < cfg.subscribers && now() < until) {
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  // Let the server settle every handshake (and its subscriptions) before measuring.
  await new Promise((r) => setTimeout(r, cfg.settle_ms || 300));
  emit({ event: "ready", conns: subs.length + 1, workers });
  await go;
  started = true;
  const pad = " ".repeat(32);
  const start = now();
  if (cfg.rate) {
    for (let seq = 0; seq < cfg.messages; seq++) {
      const due = start + (seq * 1000) / cfg.rate;
      const wait = due - now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      sentAt[seq] = now();
      publisher.send((seq + pad).slice(0, 32));
    }
  } else {
    for (let seq = 0; seq < cfg.messages; seq++) {
      sentAt[seq] = now();
      publisher.send((seq + pad).slice(0, 32));
    }
  }
  const limit = new Promise((r) => setTimeout(r, cfg.phase_timeout_s * 1000));
  await Promise.race([done, limit]);
  const end = delivered === total ? last : now();
  const elapsed = (end - start) / 1000;
  subs.forEach((ws) => ws.terminate());
  publisher.terminate();
  emit({
    event: "result",
    delivered,
    expected: total,
    elapsed_s: elapsed,
    rate: delivered / elapsed,
    workers,
    ...summary(latencies.subarray(0, delivered)),
  });
  process.exit(0);
}

// -- idle: hold many open connections while run.py reads the server's memory.
async function idle() {
  const raw = cfg.protocol === "tcp";
  const conns = await openMany(cfg.conns, 100, () => (raw ? openTcp() : openWs("/echo")));
  let closed = 0;
  conns.forEach((c) => c.on("close", () => closed++));
  await new Promise((r) => setTimeout(r, cfg.settle_ms || 500));
  emit({ event: "ready", conns: conns.length });
  await go;
  emit({ event: "result", held: conns.length - closed, closed_by_server: closed });
  conns.forEach((c) => (raw ? c.destroy() : c.terminate()));
  process.exit(0);
}

const modes = { echo, fanout, idle };
if (!modes[cfg.mode]) fail(`unknown mode ${cfg.mode}`);
modes[cfg.mode]().catch((err) => fail(err.stack || String(err)));
