// Load generator for benchmarks/run.py: one Node.js process driving many
// connections, so that the client is not what limits the server under test.
//
//   node benchmarks/loadgen.js '<json config>'
//
// Talks to run.py over stdio, one JSON object per line: it connects everything,
// prints {"event":"ready"}, waits for the line "go" on stdin (run.py samples
// the server's CPU time and memory in between), runs the measured phase, then
// prints {"event":"result", ...} and exits. Every phase is bounded in time.
//
// Two clients: the `ws` package, and a lean one (openLean) for the scenarios in
// which one core of `ws` would be slower than the servers it measures; run.py
// says which in cfg.client.
"use strict";

const crypto = require("crypto");
const { EventEmitter } = require("events");
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

// -- the lean client: as much of RFC 6455 as the scenarios meet, and no more.
//
// In echo-large and the fan-outs one Node process is the bottleneck with `ws`:
// its Receiver copies every 1 MiB message together out of 64 KiB reads, and each
// of 1,000 deliveries of a broadcast pays for the Receiver and an EventEmitter.
// Here a message goes straight to a callback, as a view into the read when its
// frame lies within one, and a large echo's bytes can be counted instead of kept.
//
// Sockets read with `onread` into one buffer shared by all of them: a delivery
// then costs no 64 KiB allocation and no trip through the stream machinery,
// which is most of what is left per delivery once `ws` is gone. Anything kept
// beyond one read (a frame that spans reads, a cut header) is copied out of it.

const WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const MAX_MESSAGE = 64 * 1024 * 1024; // the `ws` clients' maxPayload
const MAX_HEAD = 16 * 1024;
const READ_BUFFER = Buffer.allocUnsafe(64 * 1024);

// Client frames must be masked. The masking key is all zeros, as for the `ws`
// clients above: the frame is still a valid masked frame (mask bit and key are
// there, and XOR with zero is the identity), so the payload goes out as it is,
// with no copy, and every server under test does the same unmasking work.
function clientHeader(first, len) {
  let header;
  if (len < 126) {
    header = Buffer.alloc(6);
    header[1] = 0x80 | len;
  } else if (len < 65536) {
    header = Buffer.alloc(8);
    header[1] = 0x80 | 126;
    header.writeUInt16BE(len, 2);
  } else {
    header = Buffer.alloc(14);
    header[1] = 0x80 | 127;
    header.writeUInt32BE(Math.floor(len / 2 ** 32), 2);
    header.writeUInt32BE(len >>> 0, 6);
  }
  header[0] = first;
  return header;
}

// Messages go to `onMessage(payload, isText)`; the payload may be a view into the
// shared read buffer, valid only until onMessage returns. Text is not checked for
// UTF-8: the scenarios' text is ASCII, and the servers' own tests check the rest. With `countSize`, every
// message must be a single binary frame of exactly that many bytes, and onMessage
// gets null once the last of them has arrived: the payload is never kept.
// Emits only "close" (once; never after terminate()), like `ws` does.
class LeanWs extends EventEmitter {
  constructor(sock, onMessage, countSize) {
    super();
    this.sock = sock;
    this.onMessage = onMessage || (() => {});
    this.countSize = countSize || 0;
    this.rest = null; // a frame header cut by the end of a read
    this.need = 0; // payload bytes of the current frame still to come
    this.frame = null; // the payload of a frame that spans reads (null when counting)
    this.opcode = 0;
    this.fin = true;
    this.parts = null; // the frames so far of a message sent in several
    this.partsLen = 0;
    this.text = false;
    this.done = false;
    sock.on("error", () => {}); // "close" follows
    sock.on("close", () => this.gone());
  }

  send(data) {
    if (typeof data === "string") {
      const len = Buffer.byteLength(data);
      const header = clientHeader(0x81, len);
      const frame = Buffer.allocUnsafe(header.length + len);
      header.copy(frame);
      frame.write(data, header.length);
      this.sock.write(frame);
    } else if (data.length <= 4096) {
      this.sock.write(Buffer.concat([clientHeader(0x82, data.length), data]));
    } else {
      this.sock.cork();
      this.sock.write(clientHeader(0x82, data.length));
      this.sock.write(data);
      this.sock.uncork();
    }
  }

  terminate() {
    this.done = true;
    this.sock.destroy();
  }

  gone() {
    if (this.done) return;
    this.done = true;
    this.emit("close");
  }

  protocolError(message) {
    this.sock.destroy();
    fail(`lean client: ${message}`);
  }

  // `chunk` is only lent: it is the shared read buffer.
  feed(chunk) {
    if (this.rest !== null) {
      chunk = Buffer.concat([this.rest, chunk]);
      this.rest = null;
    }
    const end = chunk.length;
    let pos = 0;
    while (pos < end && !this.done) {
      if (this.need > 0) {
        const take = Math.min(this.need, end - pos);
        if (this.frame !== null) chunk.copy(this.frame, this.frame.length - this.need, pos, pos + take);
        this.need -= take;
        pos += take;
        if (this.need === 0) {
          const payload = this.frame;
          this.frame = null;
          this.frameEnd(payload, true);
        }
        continue;
      }
      if (end - pos < 2) break;
      const b0 = chunk[pos];
      const b1 = chunk[pos + 1];
      let len = b1 & 0x7f;
      const headLen = len === 126 ? 4 : len === 127 ? 10 : 2;
      if (end - pos < headLen) break;
      if (len === 126) len = chunk.readUInt16BE(pos + 2);
      else if (len === 127) {
        if (chunk.readUInt32BE(pos + 2) !== 0) return this.protocolError("a frame over 4 GiB");
        len = chunk.readUInt32BE(pos + 6);
      }
      pos += headLen;
      if (!this.frameHeader(b0, b1, len)) return;
      if (end - pos >= len) {
        // The whole payload is in this read: a view of it, no copy.
        const payload = chunk.subarray(pos, pos + len);
        pos += len;
        this.frameEnd(payload, false);
      } else {
        // One copy, into a buffer of the frame's size, however many reads it takes.
        this.need = len;
        this.frame = this.countSize && this.opcode < 8 ? null : Buffer.allocUnsafe(len);
      }
    }
    // Only a header can be left over (a payload is taken as it comes): a few bytes.
    if (pos < end && !this.done) this.rest = Buffer.from(chunk.subarray(pos));
  }

  // Checks a frame header; at a frame boundary, `parts` is set only inside a
  // message that came in several frames.
  frameHeader(b0, b1, len) {
    const fin = (b0 & 0x80) !== 0;
    const opcode = b0 & 0x0f;
    if (b1 & 0x80) return this.protocolError("a masked frame from the server");
    if (b0 & 0x70) return this.protocolError("a reserved bit set, and no extension was negotiated");
    if (opcode >= 8) {
      if (opcode > 10) return this.protocolError(`reserved opcode ${opcode}`);
      if (!fin || len > 125) return this.protocolError("a fragmented or over-long control frame");
    } else if (opcode === 0) {
      if (this.parts === null) return this.protocolError("a continuation frame outside a message");
    } else if (opcode <= 2) {
      if (this.parts !== null) return this.protocolError("a new message inside a fragmented one");
      this.text = opcode === 1;
    } else return this.protocolError(`reserved opcode ${opcode}`);
    if (opcode < 8) {
      if (this.countSize && (opcode !== 2 || !fin || len !== this.countSize)) {
        return this.protocolError(
          `expected one binary frame of ${this.countSize} bytes, got opcode ${opcode}, FIN ${fin}, ${len} bytes`,
        );
      }
      if (this.partsLen + len > MAX_MESSAGE) return this.protocolError(`a message over ${MAX_MESSAGE} bytes`);
    }
    this.opcode = opcode;
    if (opcode < 8) this.fin = fin;
    return true;
  }

  // `owned`: the payload is a buffer of its own, not a view into the read buffer.
  frameEnd(payload, owned) {
    if (this.opcode >= 8) return this.controlFrame(payload);
    if (this.countSize) return this.onMessage(null, false);
    if (this.parts === null && this.fin) return this.onMessage(payload, this.text);
    if (this.parts === null) this.parts = [];
    this.parts.push(owned ? payload : Buffer.from(payload));
    this.partsLen += payload.length;
    if (!this.fin) return; // more frames of this message to come
    const message = Buffer.concat(this.parts, this.partsLen);
    this.parts = null;
    this.partsLen = 0;
    this.onMessage(message, this.text);
  }

  controlFrame(payload) {
    const opcode = this.opcode;
    if (opcode === 9) {
      this.sock.write(Buffer.concat([clientHeader(0x8a, payload.length), payload]));
    } else if (opcode === 8) {
      // Answer with the server's status code, then end: the handshake is done
      // and the server's "close" comes as the socket's.
      const code = payload.subarray(0, 2);
      this.sock.end(Buffer.concat([clientHeader(0x88, code.length), code]));
      this.gone();
    } // a pong answers nothing we sent
  }
}

function handshakeProblem(head, key) {
  const lines = head.split("\r\n");
  const status = /^HTTP\/1\.1 (\d{3})/.exec(lines[0]);
  if (!status) return `not an HTTP/1.1 response: ${JSON.stringify(lines[0].slice(0, 80))}`;
  if (status[1] !== "101") return `HTTP ${status[1]}`;
  const headers = {};
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(":");
    if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  const accept = crypto.createHash("sha1").update(key + WS_GUID).digest("base64");
  if (headers["sec-websocket-accept"] !== accept) return "wrong Sec-WebSocket-Accept";
  if ((headers.upgrade || "").toLowerCase() !== "websocket") return "no Upgrade: websocket";
  if (!/(^|,)\s*upgrade\s*(,|$)/i.test(headers.connection || "")) return "no Connection: Upgrade";
  if (headers["sec-websocket-extensions"] || headers["sec-websocket-protocol"]) {
    return "the server chose an extension or subprotocol that was not offered";
  }
  return null;
}

// `onMessage` is attached before the handshake ends, as for openWs: frames that
// arrive with the 101 response go to it. It can be replaced later (conn.onMessage).
function openLean(path, onMessage, countSize) {
  return new Promise((resolve, reject) => {
    const key = crypto.randomBytes(16).toString("base64");
    let receive = null;
    const sock = net.connect({
      host: cfg.host,
      port: cfg.port,
      // `void`: a callback that returns false pauses the socket.
      onread: { buffer: READ_BUFFER, callback: (n, buf) => void receive(buf.subarray(0, n)) },
    });
    sock.setNoDelay(true);
    let head = null;
    const onError = (err) => reject(err);
    const onClose = () => reject(new Error("closed during the handshake"));
    receive = (chunk) => {
      head = head === null ? Buffer.from(chunk) : Buffer.concat([head, chunk]);
      const at = head.indexOf("\r\n\r\n");
      if (at < 0) {
        if (head.length > MAX_HEAD) {
          sock.destroy();
          reject(new Error("no end to the response head"));
        }
        return;
      }
      sock.removeListener("error", onError);
      sock.removeListener("close", onClose);
      const problem = handshakeProblem(head.toString("latin1", 0, at), key);
      if (problem) {
        sock.destroy();
        return reject(new Error(problem));
      }
      const conn = new LeanWs(sock, onMessage, countSize);
      receive = (data) => conn.feed(data);
      resolve(conn);
      if (at + 4 < head.length) conn.feed(head.subarray(at + 4));
    };
    sock.on("error", onError);
    sock.on("close", onClose);
    sock.once("connect", () =>
      sock.write(
        `GET ${path} HTTP/1.1\r\nHost: ${cfg.host}:${cfg.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
      ),
    );
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
  const lean = !raw && cfg.client === "lean";
  // A large binary echo only needs counting: its bytes are what the server sent back
  // if its frame is binary, final and of the right length.
  const countSize = cfg.binary ? cfg.size : 0;
  const conns = await openMany(cfg.conns, 50, () =>
    raw ? openTcp() : lean ? openLean("/echo", null, countSize) : openWs("/echo"),
  );
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
      // data is null where the lean client only counted (and checked) the echo.
      const check = (data) => {
        if (data !== null && data.length !== cfg.size) {
          reject(new Error(`echo of ${data.length} bytes, sent ${cfg.size}`));
        }
        received();
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
      } else if (lean) {
        conn.onMessage = check;
      } else {
        conn.on("message", check);
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
  // Both clients hand over a Buffer. The sequence number is read off its ASCII
  // digits: a string and parseInt per delivery would cost as much as the rest.
  const onMessage = (data) => {
    if (data[0] === 0x70 && data.toString("latin1", 0, 4) === "pid ") {
      const text = data.toString();
      workers[text] = (workers[text] || 0) + 1;
      return;
    }
    if (!started) return;
    const t = now();
    let seq = 0;
    let i = 0;
    for (; i < data.length; i++) {
      const digit = data[i] - 48;
      if (digit < 0 || digit > 9) break;
      seq = seq * 10 + digit;
    }
    if (i === 0 || seq >= cfg.messages) fail(`unexpected broadcast ${JSON.stringify(data.toString().slice(0, 40))}`);
    latencies[delivered++] = t - sentAt[seq];
    last = t;
    if (delivered === total) doneResolve();
  };
  const path = cfg.path || "/broadcast";
  const subs = await openMany(cfg.subscribers, 100, () =>
    cfg.client === "lean" ? openLean(path, onMessage) : openWs(path, onMessage),
  );
  const publisher = await openWs(path);
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
  const open = raw ? openTcp : cfg.client === "lean" ? () => openLean("/echo") : () => openWs("/echo");
  const conns = await openMany(cfg.conns, 100, open);
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
