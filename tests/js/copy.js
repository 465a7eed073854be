// COPY with node-postgres and pg-copy-streams: node copy.js PORT COPY_IN COPY_OUT.
// Streams stdin into COPY_IN (a COPY .. FROM STDIN) with pg-copy-streams' from,
// written in pieces of COPY_CHUNK bytes (default 7) so that rows, and UTF-8
// characters, are cut across CopyData messages; then reads COPY_OUT (a COPY ..
// TO STDOUT) with its to, and prints one JSON line:
// {"copiedIn": rows, "copiedOut": rows, "data": what COPY_OUT sent}.
"use strict";
const { Readable } = require("node:stream");
const { pipeline } = require("node:stream/promises");
const { Client } = require("pg");
const { from: copyFrom, to: copyTo } = require("pg-copy-streams");

async function readAll(stream) {
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  return Buffer.concat(chunks);
}

function* pieces(buf, size) {
  for (let i = 0; i < buf.length; i += size) yield buf.subarray(i, i + size);
}

async function main() {
  const [port, copyIn, copyOut] = process.argv.slice(2);
  const chunk = Number(process.env.COPY_CHUNK || "7");
  const input = await readAll(process.stdin);
  const client = new Client({
    host: "127.0.0.1",
    port: Number(port),
    user: "nodedb",
    database: "nodedb",
  });
  await client.connect();
  try {
    const sink = client.query(copyFrom(copyIn));
    await pipeline(Readable.from(pieces(input, chunk)), sink);
    const source = client.query(copyTo(copyOut));
    const data = await readAll(source);
    process.stdout.write(
      JSON.stringify({
        copiedIn: sink.rowCount,
        copiedOut: source.rowCount,
        data: data.toString("utf8"),
      }) + "\n",
    );
  } finally {
    await client.end();
  }
}

main().catch((err) => {
  process.stderr.write(`${err.code || ""} ${err.message}\n`);
  process.exit(1);
});
