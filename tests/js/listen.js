// LISTEN on the channels named on the command line with node-postgres, print
// "ready" once listening, then each notification as one JSON line, and exit
// after the count given by NOTES_EXPECTED (or after 10 s with what arrived).
"use strict";
const { Client } = require("pg");

async function main() {
  const [port, ...channels] = process.argv.slice(2);
  const expected = Number(process.env.NOTES_EXPECTED || "1");
  const client = new Client({
    host: "127.0.0.1",
    port: Number(port),
    user: "nodedb",
    database: process.env.NOTES_DATABASE || "nodedb",
  });
  await client.connect();
  let seen = 0;
  const done = new Promise((resolve) => {
    client.on("notification", (msg) => {
      process.stdout.write(
        JSON.stringify({ channel: msg.channel, payload: msg.payload, pid: msg.processId }) + "\n",
      );
      seen += 1;
      if (seen >= expected) resolve();
    });
    setTimeout(resolve, 10000);
  });
  for (const ch of channels) await client.query(`LISTEN ${ch}`);
  process.stdout.write("ready\n");
  await done;
  await client.end();
}

main().catch((err) => {
  process.stderr.write(`${err.code || ""} ${err.message}\n`);
  process.exit(1);
});
