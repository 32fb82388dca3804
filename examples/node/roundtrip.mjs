// Enqueue, read and commit through the phxq HTTP gateway with nothing but Node.js 20's
// built-in fetch (no npm packages).
//
//   PHXQ_GATEWAY=http://127.0.0.1:7301 node examples/node/roundtrip.mjs
//
// Optional: PHXQ_TOKEN (a bearer token, for a cluster with [security]; for its HTTPS also set
// NODE_EXTRA_CA_CERTS=phxq-data/certs/ca.pem), PHXQ_TOPIC (default "orders"), PHXQ_GROUP
// (default "node-example"). Prints one JSON line with what it did; exits 1 on any error.

const gateway = (process.env.PHXQ_GATEWAY ?? "http://127.0.0.1:7301").replace(/\/$/, "");
const topic = process.env.PHXQ_TOPIC ?? "orders";
const group = process.env.PHXQ_GROUP ?? "node-example";
const auth = process.env.PHXQ_TOKEN ? { Authorization: `Bearer ${process.env.PHXQ_TOKEN}` } : {};

// One call to the gateway: JSON in, JSON out; a problem answer becomes an Error with its code.
async function call(method, path, { body, headers = {} } = {}) {
  const response = await fetch(`${gateway}/v1${path}`, {
    method,
    headers: { ...auth, ...headers },
    body,
  });
  const answer = await response.json();
  if (!response.ok) {
    const error = new Error(`${method} ${path}: ${response.status} ${answer.code}: ${answer.detail}`);
    error.code = answer.code;
    error.retryAfter = response.headers.get("Retry-After");
    throw error;
  }
  return answer;
}

// Retry what is safe to retry (503 and 429 carry Retry-After; an enqueue keeps its dedup id).
async function withRetries(action, attempts = 5) {
  for (let attempt = 1; ; attempt++) {
    try {
      return await action();
    } catch (error) {
      if (attempt >= attempts || !error.retryAfter) throw error;
      await new Promise((resolve) => setTimeout(resolve, 1000 * Number(error.retryAfter)));
    }
  }
}

const key = `node-${process.pid}-${Date.now()}`;
const text = `hello from Node.js ${process.version}`;

// 1. Enqueue: the raw body is the payload; key, dedup id and headers ride in Phxq-* headers.
const ack = await withRetries(() =>
  call("POST", `/topics/${topic}/messages`, {
    body: text,
    headers: { "Phxq-Key": key, "Phxq-Dedup-Id": key, "Phxq-Header-Lang": "javascript" },
  }),
);
const queue = `/topics/${topic}/queues/${ack.queue}`;

// 2. Own the (group, topic, queue) pair, so no other reader commits it meanwhile.
const lock = await call("POST", `${queue}/lock/acquire`, {
  body: JSON.stringify({ group, owner: key, ttl: 30 }),
  headers: { "Content-Type": "application/json" },
});

try {
  // 3. Read from just before our message (long poll up to 2 s).
  const read = await call("GET", `${queue}/messages?after=${ack.offset - 1}&limit=1&wait=2`);
  const message = read.messages[0];
  const payload = Buffer.from(message.payload_base64, "base64").toString("utf8");
  if (message.offset !== ack.offset || payload !== text || message.headers.lang !== "javascript") {
    throw new Error(`read back something else: ${JSON.stringify(message)}`);
  }

  // 4. Commit the group's cursor with the lock's fencing token, and read it back.
  await call("POST", `${queue}/commit`, {
    body: JSON.stringify({ group, offset: message.offset, token: lock.token }),
    headers: { "Content-Type": "application/json" },
  });
  const cursor = await call("GET", `${queue}/cursor?group=${encodeURIComponent(group)}`);
  if (cursor.cursor !== ack.offset) throw new Error(`cursor is ${cursor.cursor}, not ${ack.offset}`);

  console.log(JSON.stringify({ enqueued: ack, read: { offset: message.offset, payload }, committed: cursor }));
} finally {
  // 5. Hand the pair over.
  await call("POST", `${queue}/lock/release`, {
    body: JSON.stringify({ group, owner: key, token: lock.token }),
    headers: { "Content-Type": "application/json" },
  });
}
